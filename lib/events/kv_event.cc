#include "events/kv_event.h"

#include <msgpack.h>

#include <cstring>
#include <string_view>

namespace strata::events {
namespace {

constexpr std::string_view kStored = "BlockStored";
constexpr std::string_view kRemoved = "BlockRemoved";
constexpr std::string_view kCleared = "AllBlocksCleared";

// ---- encoding ----

class Packer {
 public:
  Packer() {
    msgpack_sbuffer_init(&buf_);
    msgpack_packer_init(&pk_, &buf_, msgpack_sbuffer_write);
  }
  ~Packer() { msgpack_sbuffer_destroy(&buf_); }
  Packer(const Packer&) = delete;
  Packer& operator=(const Packer&) = delete;

  void Array(size_t n) { msgpack_pack_array(&pk_, n); }
  void Map(size_t n) { msgpack_pack_map(&pk_, n); }
  void Nil() { msgpack_pack_nil(&pk_); }
  void Double(double v) { msgpack_pack_double(&pk_, v); }
  void Int(int64_t v) { msgpack_pack_int64(&pk_, v); }
  void Str(std::string_view s) {
    msgpack_pack_str(&pk_, s.size());
    msgpack_pack_str_body(&pk_, s.data(), s.size());
  }
  void Hash(const ExternalBlockHash& h) {
    if (const uint64_t* u = std::get_if<uint64_t>(&h)) {
      msgpack_pack_uint64(&pk_, *u);
    } else {
      const std::string& b = std::get<std::string>(h);
      msgpack_pack_bin(&pk_, b.size());
      msgpack_pack_bin_body(&pk_, b.data(), b.size());
    }
  }
  void Hashes(const std::vector<ExternalBlockHash>& hs) {
    Array(hs.size());
    for (const auto& h : hs) Hash(h);
  }
  void OptHash(const std::optional<ExternalBlockHash>& h) { h ? Hash(*h) : Nil(); }
  void OptInt(const std::optional<int64_t>& v) { v ? Int(*v) : Nil(); }
  void OptStr(const std::optional<std::string>& s) { s ? Str(*s) : Nil(); }
  std::string Take() const { return std::string(buf_.data, buf_.size); }

 private:
  msgpack_sbuffer buf_;
  msgpack_packer pk_;
};

// Field order is vLLM's declaration order; the tag comes first in both encodings.
void PackEvent(Packer& p, const KvEvent& e, EventEncoding enc) {
  const bool map = enc == EventEncoding::kTaggedMap;
  auto field = [&](std::string_view name) {
    if (map) p.Str(name);
  };
  switch (e.kind) {
    case KvEventKind::kBlockStored: {
      const size_t n = 8 + (e.group_idx ? 1 : 0);
      map ? p.Map(n) : p.Array(n);
      field("type");
      p.Str(kStored);
      field("block_hashes");
      p.Hashes(e.block_hashes);
      field("parent_block_hash");
      p.OptHash(e.parent_block_hash);
      field("token_ids");
      p.Array(e.token_ids.size());
      for (int64_t t : e.token_ids) p.Int(t);
      field("block_size");
      p.Int(e.block_size);
      field("lora_id");
      p.OptInt(e.lora_id);
      field("medium");
      p.OptStr(e.medium);
      field("lora_name");
      p.OptStr(e.lora_name);
      if (e.group_idx) {
        // The array form cannot skip extra_keys (position 8) to reach group_idx.
        if (map) {
          field("group_idx");
        } else {
          p.Nil();
        }
        p.Int(*e.group_idx);
      }
      break;
    }
    case KvEventKind::kBlockRemoved: {
      const size_t n = 3 + (e.group_idx ? 1 : 0);
      map ? p.Map(n) : p.Array(n);
      field("type");
      p.Str(kRemoved);
      field("block_hashes");
      p.Hashes(e.block_hashes);
      field("medium");
      p.OptStr(e.medium);
      if (e.group_idx) {
        field("group_idx");
        p.Int(*e.group_idx);
      }
      break;
    }
    case KvEventKind::kAllBlocksCleared:
      map ? p.Map(1) : p.Array(1);
      field("type");
      p.Str(kCleared);
      break;
  }
}

// ---- decoding ----

std::string_view StrOf(const msgpack_object& o) { return {o.via.str.ptr, o.via.str.size}; }

Status Bad(const std::string& what) { return Status::Corruption("KV event batch: " + what); }

Result<int64_t> IntOf(const msgpack_object& o, const char* what) {
  if (o.type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
    if (o.via.u64 > uint64_t(INT64_MAX)) return Bad(std::string(what) + " out of range");
    return static_cast<int64_t>(o.via.u64);
  }
  if (o.type == MSGPACK_OBJECT_NEGATIVE_INTEGER) return o.via.i64;
  return Bad(std::string(what) + " is not an integer");
}

Result<std::optional<int64_t>> OptIntOf(const msgpack_object& o, const char* what) {
  if (o.type == MSGPACK_OBJECT_NIL) return std::optional<int64_t>();
  STRATA_ASSIGN_OR_RETURN(int64_t v, IntOf(o, what));
  return std::optional<int64_t>(v);
}

Result<std::optional<std::string>> OptStrOf(const msgpack_object& o, const char* what) {
  if (o.type == MSGPACK_OBJECT_NIL) return std::optional<std::string>();
  if (o.type != MSGPACK_OBJECT_STR) return Bad(std::string(what) + " is not a string");
  return std::optional<std::string>(std::string(StrOf(o)));
}

Result<ExternalBlockHash> HashOf(const msgpack_object& o) {
  if (o.type == MSGPACK_OBJECT_POSITIVE_INTEGER) return ExternalBlockHash(o.via.u64);
  // Python ints may be negative (hashes some producers compute with hash()); keep the bits.
  if (o.type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
    return ExternalBlockHash(static_cast<uint64_t>(o.via.i64));
  if (o.type == MSGPACK_OBJECT_BIN)
    return ExternalBlockHash(std::string(o.via.bin.ptr, o.via.bin.size));
  return Bad("a block hash is neither an integer nor bytes");
}

Result<std::vector<ExternalBlockHash>> HashesOf(const msgpack_object& o) {
  if (o.type != MSGPACK_OBJECT_ARRAY) return Bad("block_hashes is not an array");
  std::vector<ExternalBlockHash> out;
  out.reserve(o.via.array.size);
  for (uint32_t i = 0; i < o.via.array.size; ++i) {
    STRATA_ASSIGN_OR_RETURN(ExternalBlockHash h, HashOf(o.via.array.ptr[i]));
    out.push_back(std::move(h));
  }
  return out;
}

// Sets the field `name` of `e` from `v`; unknown names are ignored (newer vLLM fields).
Status SetField(KvEvent& e, std::string_view name, const msgpack_object& v) {
  if (name == "block_hashes") {
    STRATA_ASSIGN_OR_RETURN(e.block_hashes, HashesOf(v));
  } else if (name == "parent_block_hash") {
    if (v.type != MSGPACK_OBJECT_NIL) {
      STRATA_ASSIGN_OR_RETURN(ExternalBlockHash h, HashOf(v));
      e.parent_block_hash = std::move(h);
    }
  } else if (name == "token_ids") {
    if (v.type != MSGPACK_OBJECT_ARRAY) return Bad("token_ids is not an array");
    e.token_ids.clear();
    for (uint32_t i = 0; i < v.via.array.size; ++i) {
      STRATA_ASSIGN_OR_RETURN(int64_t t, IntOf(v.via.array.ptr[i], "a token id"));
      e.token_ids.push_back(t);
    }
  } else if (name == "block_size") {
    STRATA_ASSIGN_OR_RETURN(e.block_size, IntOf(v, "block_size"));
  } else if (name == "lora_id") {
    STRATA_ASSIGN_OR_RETURN(e.lora_id, OptIntOf(v, "lora_id"));
  } else if (name == "medium") {
    STRATA_ASSIGN_OR_RETURN(e.medium, OptStrOf(v, "medium"));
  } else if (name == "lora_name") {
    STRATA_ASSIGN_OR_RETURN(e.lora_name, OptStrOf(v, "lora_name"));
  } else if (name == "group_idx") {
    STRATA_ASSIGN_OR_RETURN(e.group_idx, OptIntOf(v, "group_idx"));
  }
  return Status::OK();
}

Result<KvEventKind> KindOf(const msgpack_object& tag) {
  if (tag.type != MSGPACK_OBJECT_STR) return Bad("event tag is not a string");
  const std::string_view t = StrOf(tag);
  if (t == kStored) return KvEventKind::kBlockStored;
  if (t == kRemoved) return KvEventKind::kBlockRemoved;
  if (t == kCleared) return KvEventKind::kAllBlocksCleared;
  return Bad("unknown event tag '" + std::string(t) + "'");
}

Result<KvEvent> EventOf(const msgpack_object& o) {
  KvEvent e;
  if (o.type == MSGPACK_OBJECT_MAP) {
    const msgpack_object* tag = nullptr;
    for (uint32_t i = 0; i < o.via.map.size; ++i) {
      const msgpack_object_kv& kv = o.via.map.ptr[i];
      if (kv.key.type == MSGPACK_OBJECT_STR && StrOf(kv.key) == "type") tag = &kv.val;
    }
    if (tag == nullptr) return Bad("event map without a 'type' tag");
    STRATA_ASSIGN_OR_RETURN(e.kind, KindOf(*tag));
    for (uint32_t i = 0; i < o.via.map.size; ++i) {
      const msgpack_object_kv& kv = o.via.map.ptr[i];
      if (kv.key.type != MSGPACK_OBJECT_STR) return Bad("event map key is not a string");
      STRATA_RETURN_IF_ERROR(SetField(e, StrOf(kv.key), kv.val));
    }
  } else if (o.type == MSGPACK_OBJECT_ARRAY && o.via.array.size >= 1) {
    STRATA_ASSIGN_OR_RETURN(e.kind, KindOf(o.via.array.ptr[0]));
    static constexpr std::string_view kStoredFields[] = {
        "block_hashes", "parent_block_hash", "token_ids", "block_size", "lora_id",
        "medium",       "lora_name",         "extra_keys", "group_idx"};
    static constexpr std::string_view kRemovedFields[] = {"block_hashes", "medium", "group_idx"};
    std::span<const std::string_view> fields;
    if (e.kind == KvEventKind::kBlockStored) fields = kStoredFields;
    if (e.kind == KvEventKind::kBlockRemoved) fields = kRemovedFields;
    for (uint32_t i = 1; i < o.via.array.size && i - 1 < fields.size(); ++i)
      STRATA_RETURN_IF_ERROR(SetField(e, fields[i - 1], o.via.array.ptr[i]));
    const size_t required = e.kind == KvEventKind::kBlockStored    ? 7
                            : e.kind == KvEventKind::kBlockRemoved ? 1
                                                                   : 0;
    if (o.via.array.size - 1 < required) return Bad("event array too short");
  } else {
    return Bad("an event is neither a map nor a tagged array");
  }
  return e;
}

Status EventsOf(const msgpack_object& o, KvEventBatch& out) {
  if (o.type != MSGPACK_OBJECT_ARRAY) return Bad("events is not an array");
  out.events.reserve(o.via.array.size);
  for (uint32_t i = 0; i < o.via.array.size; ++i) {
    STRATA_ASSIGN_OR_RETURN(KvEvent e, EventOf(o.via.array.ptr[i]));
    out.events.push_back(std::move(e));
  }
  return Status::OK();
}

Result<double> TsOf(const msgpack_object& o) {
  if (o.type == MSGPACK_OBJECT_FLOAT64 || o.type == MSGPACK_OBJECT_FLOAT32) return o.via.f64;
  if (o.type == MSGPACK_OBJECT_POSITIVE_INTEGER) return double(o.via.u64);
  return Bad("ts is not a number");
}

Result<KvEventBatch> BatchOf(const msgpack_object& o) {
  KvEventBatch out;
  if (o.type == MSGPACK_OBJECT_ARRAY) {
    if (o.via.array.size < 2) return Bad("batch array shorter than [ts, events]");
    STRATA_ASSIGN_OR_RETURN(out.ts, TsOf(o.via.array.ptr[0]));
    STRATA_RETURN_IF_ERROR(EventsOf(o.via.array.ptr[1], out));
    if (o.via.array.size >= 3) {
      STRATA_ASSIGN_OR_RETURN(out.data_parallel_rank,
                              OptIntOf(o.via.array.ptr[2], "data_parallel_rank"));
    }
    return out;
  }
  if (o.type == MSGPACK_OBJECT_MAP) {
    bool have_events = false;
    for (uint32_t i = 0; i < o.via.map.size; ++i) {
      const msgpack_object_kv& kv = o.via.map.ptr[i];
      if (kv.key.type != MSGPACK_OBJECT_STR) continue;
      const std::string_view k = StrOf(kv.key);
      if (k == "ts") {
        STRATA_ASSIGN_OR_RETURN(out.ts, TsOf(kv.val));
      } else if (k == "events") {
        STRATA_RETURN_IF_ERROR(EventsOf(kv.val, out));
        have_events = true;
      } else if (k == "data_parallel_rank") {
        STRATA_ASSIGN_OR_RETURN(out.data_parallel_rank, OptIntOf(kv.val, "data_parallel_rank"));
      }
    }
    if (!have_events) return Bad("batch map without 'events'");
    return out;
  }
  return Bad("batch is neither an array nor a map");
}

}  // namespace

std::string HashToString(const ExternalBlockHash& h) {
  if (const uint64_t* u = std::get_if<uint64_t>(&h)) return "i:" + std::to_string(*u);
  static constexpr char kDigits[] = "0123456789abcdef";
  const std::string& b = std::get<std::string>(h);
  std::string out = "b:";
  for (unsigned char c : b) {
    out += kDigits[c >> 4];
    out += kDigits[c & 15];
  }
  return out;
}

std::string EncodeEventBatch(const KvEventBatch& batch, EventEncoding encoding) {
  Packer p;
  // EventBatch is array_like with omit_defaults: a nil data_parallel_rank is left off the end.
  p.Array(batch.data_parallel_rank ? 3 : 2);
  p.Double(batch.ts);
  p.Array(batch.events.size());
  for (const KvEvent& e : batch.events) PackEvent(p, e, encoding);
  if (batch.data_parallel_rank) p.Int(*batch.data_parallel_rank);
  return p.Take();
}

Result<KvEventBatch> DecodeEventBatch(std::span<const std::byte> bytes) {
  msgpack_unpacked msg;
  msgpack_unpacked_init(&msg);
  size_t off = 0;
  const msgpack_unpack_return r = msgpack_unpack_next(
      &msg, reinterpret_cast<const char*>(bytes.data()), bytes.size(), &off);
  Result<KvEventBatch> out =
      r != MSGPACK_UNPACK_SUCCESS
          ? Result<KvEventBatch>(Bad("not a msgpack object (" + std::to_string(bytes.size()) +
                                     " bytes)"))
      : off != bytes.size() ? Result<KvEventBatch>(Bad("trailing bytes after the batch"))
                            : BatchOf(msg.data);
  msgpack_unpacked_destroy(&msg);
  return out;
}

}  // namespace strata::events
