#include "ipc/ipc_protocol.h"

#include <cmath>
#include <cstring>
#include <string>

#include "ipc/strata_ipc.pb.h"

namespace strata::ipc {
namespace {

Status Malformed(const std::string& what) {
  return Status::InvalidArgument("malformed message: " + what);
}

std::string PackKeys(const std::vector<BlockKey>& keys) {
  std::string out(keys.size() * BlockKey::kSize, '\0');
  for (size_t i = 0; i < keys.size(); ++i)
    keys[i].ToBytes(std::span<std::byte, BlockKey::kSize>(
        reinterpret_cast<std::byte*>(out.data()) + i * BlockKey::kSize, BlockKey::kSize));
  return out;
}

Status UnpackKeys(const std::string& packed, std::vector<BlockKey>* keys) {
  if (packed.size() % BlockKey::kSize != 0)
    return Malformed("keys field is " + std::to_string(packed.size()) +
                     " bytes, not a multiple of 16");
  const size_t n = packed.size() / BlockKey::kSize;
  if (n > kMaxKeysPerRequest)
    return Malformed(std::to_string(n) + " keys exceed the limit of " +
                     std::to_string(kMaxKeysPerRequest));
  keys->resize(n);
  for (size_t i = 0; i < n; ++i)
    (*keys)[i] = BlockKey::FromBytes(std::span<const std::byte, BlockKey::kSize>(
        reinterpret_cast<const std::byte*>(packed.data()) + i * BlockKey::kSize, BlockKey::kSize));
  return Status::OK();
}

std::string PackId(const NamespaceId& id) {
  auto b = id.ToBytes();
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

Status UnpackId(const std::string& bytes, NamespaceId* id) {
  if (bytes.size() != BlockKey::kSize)
    return Malformed("namespace id is " + std::to_string(bytes.size()) + " bytes, not 16");
  *id = BlockKey::FromBytes(std::span<const std::byte, BlockKey::kSize>(
      reinterpret_cast<const std::byte*>(bytes.data()), BlockKey::kSize));
  return Status::OK();
}

Status CheckCodec(uint32_t value, Codec* codec) {
  *codec = static_cast<Codec>(value);
  if (value > 0xFFFF || CodecName(*codec) == "unknown")
    return Malformed("unknown codec " + std::to_string(value));
  return Status::OK();
}

void PackSpec(const NamespaceSpec& s, pb::NamespaceSpec* m) {
  m->set_model_id(s.model_id);
  m->set_model_revision(s.model_revision);
  m->set_kv_dtype(static_cast<uint32_t>(s.kv_dtype));
  m->set_attention(static_cast<uint32_t>(s.attention));
  m->set_num_layers(s.num_layers);
  m->set_num_kv_heads(s.num_kv_heads);
  m->set_head_dim(s.head_dim);
  m->set_block_size(s.block_size);
  m->set_codec(static_cast<uint32_t>(s.codec));
  m->set_lora_id(s.lora_id);
  m->set_tenant_salt(s.tenant_salt);
  m->set_key_scheme(static_cast<uint32_t>(s.key_scheme));
  m->set_hash_seed(s.hash_seed);
}

// The enum fields are range-checked only as far as their C++ types go; Namespace::Create
// validates the rest where a spec is used.
Status UnpackSpec(const pb::NamespaceSpec& m, NamespaceSpec* s) {
  if (m.kv_dtype() > 0xFF || m.attention() > 0xFF || m.codec() > 0xFFFF ||
      m.key_scheme() > 0xFFFF)
    return Malformed("namespace spec has an out-of-range enum value");
  s->model_id = m.model_id();
  s->model_revision = m.model_revision();
  s->kv_dtype = static_cast<KvDtype>(m.kv_dtype());
  s->attention = static_cast<AttentionKind>(m.attention());
  s->num_layers = m.num_layers();
  s->num_kv_heads = m.num_kv_heads();
  s->head_dim = m.head_dim();
  s->block_size = m.block_size();
  s->codec = static_cast<Codec>(m.codec());
  s->lora_id = m.lora_id();
  s->tenant_salt = m.tenant_salt();
  s->key_scheme = static_cast<KeyScheme>(m.key_scheme());
  s->hash_seed = m.hash_seed();
  return Status::OK();
}

void PackEngineBlock(const CommitEngineBlock& e, pb::EngineBlock* m) {
  if (e.secondary_shard) {
    m->set_secondary_shard(true);
    return;
  }
  const auto bytes = [](const EngineHash& h) {
    return std::string(reinterpret_cast<const char*>(h.bytes.data()), h.size);
  };
  m->set_hash(bytes(e.block.hash));
  m->set_parent_hash(bytes(e.block.parent));
  for (uint32_t t : e.block.token_ids) m->add_token_ids(t);
  m->set_block_size(e.block_size);
  m->set_lora_name(e.lora_name);
}

// Longest token list of one engine block, and longest LoRA name (block_tag.h keeps 255 bytes).
constexpr int kMaxEngineBlockTokens = 4096;
constexpr size_t kMaxLoraName = 255;

Status UnpackEngineBlock(const pb::EngineBlock& m, CommitEngineBlock* e) {
  if (m.secondary_shard()) {
    e->secondary_shard = true;
    return Status::OK();
  }
  const auto hash = [](const std::string& b, EngineHash* h) {
    h->size = static_cast<uint8_t>(b.size());
    std::memcpy(h->bytes.data(), b.data(), b.size());
  };
  if (m.hash().size() != 16 && m.hash().size() != 32)
    return Malformed("an engine block hash has " + std::to_string(m.hash().size()) +
                     " bytes, not 16 or 32");
  if (!m.parent_hash().empty() && m.parent_hash().size() != m.hash().size())
    return Malformed("an engine block's parent hash differs in length from its hash");
  if (m.token_ids_size() > kMaxEngineBlockTokens || m.lora_name().size() > kMaxLoraName)
    return Malformed("an engine block has more than " + std::to_string(kMaxEngineBlockTokens) +
                     " tokens or a LoRA name over " + std::to_string(kMaxLoraName) + " bytes");
  hash(m.hash(), &e->block.hash);
  hash(m.parent_hash(), &e->block.parent);
  e->block.token_ids.assign(m.token_ids().begin(), m.token_ids().end());
  e->block_size = m.block_size();
  e->lora_name = m.lora_name();
  return Status::OK();
}

// Largest token list an InspectRequest carries (a 1M-token prompt).
constexpr int kMaxInspectTokens = 1 << 20;

template <typename... Ts>
struct Overloaded : Ts... {
  using Ts::operator()...;
};
template <typename... Ts>
Overloaded(Ts...) -> Overloaded<Ts...>;

}  // namespace

std::string EncodeRequest(const Request& request) {
  pb::Request m;
  m.set_id(request.id);
  std::visit(Overloaded{
                 [&](const Hello& r) {
                   auto* b = m.mutable_hello();
                   b->set_protocol_version(r.protocol_version);
                   b->set_client_name(r.client_name);
                   b->set_staging_bytes(r.staging_bytes);
                   b->set_cross_memory_probe(r.cross_memory_probe);
                 },
                 [&](const LookupRequest& r) {
                   m.mutable_lookup()->set_keys(PackKeys(r.keys));
                   if (r.ns) m.mutable_lookup()->set_namespace_id(PackId(*r.ns));
                 },
                 [&](const StoreBeginRequest& r) {
                   auto* b = m.mutable_store_begin();
                   b->set_namespace_id(PackId(r.ns));
                   b->set_keys(PackKeys(r.keys));
                   for (uint64_t n : r.sizes) b->add_sizes(n);
                 },
                 [&](const StoreCommitRequest& r) {
                   auto* b = m.mutable_store_commit();
                   b->set_namespace_id(PackId(r.ns));
                   b->set_codec(static_cast<uint32_t>(r.codec));
                   b->set_keys(PackKeys(r.keys));
                   b->set_parents(PackKeys(r.parents));
                   for (uint64_t o : r.staging_offsets) b->add_staging_offsets(o);
                   for (uint64_t n : r.lengths) b->add_lengths(n);
                   if (r.spec) PackSpec(*r.spec, b->mutable_spec());
                   for (const CommitEngineBlock& e : r.engine_blocks)
                     PackEngineBlock(e, b->add_engine_blocks());
                   for (uint64_t a : r.source_addresses) b->add_source_addresses(a);
                   if (r.gather) {
                     auto* g = b->mutable_gather();
                     g->set_chunks_per_block(r.gather->chunks_per_block);
                     g->set_rows_per_chunk(r.gather->rows_per_chunk);
                     g->set_heads(r.gather->heads);
                     g->set_row_bytes(r.gather->row_bytes);
                     for (uint64_t a : r.gather->chunk_addresses) g->add_chunk_addresses(a);
                     for (uint32_t x : r.gather->blocks) g->add_blocks(x);
                     for (uint32_t h : r.gather->key_heads) g->add_key_heads(h);
                   }
                 },
                 [&](const LoadRequest& r) {
                   auto* b = m.mutable_load();
                   b->set_namespace_id(PackId(r.ns));
                   b->set_keys(PackKeys(r.keys));
                   b->set_pin_ms(r.pin_ms);
                   b->set_recompute_tokens_per_second(r.recompute_tokens_per_second);
                 },
                 [&](const UnpinRequest& r) { m.mutable_unpin()->set_keys(PackKeys(r.keys)); },
                 [&](const PrefetchRequest& r) {
                   m.mutable_prefetch()->set_keys(PackKeys(r.keys));
                 },
                 [&](const StatsRequest&) { m.mutable_stats(); },
                 [&](const ClearRequest& r) {
                   auto* b = m.mutable_clear();
                   if (r.ns) b->set_namespace_id(PackId(*r.ns));
                 },
                 [&](const OpenNamespaceRequest& r) {
                   m.mutable_open_namespace()->set_encoding(
                       reinterpret_cast<const char*>(r.encoding.data()), r.encoding.size());
                 },
                 [&](const MapSlabRequest& r) { m.mutable_map_slab()->set_slab(r.slab); },
                 [&](const ShareKvRequest& r) {
                   auto* b = m.mutable_share_kv();
                   b->set_bytes(r.bytes);
                   for (uint64_t a : r.client_addresses) b->add_client_addresses(a);
                   for (uint64_t n : r.lengths) b->add_lengths(n);
                   for (uint64_t o : r.offsets) b->add_offsets(o);
                 },
                 [&](const UnshareKvRequest& r) { m.mutable_unshare_kv()->set_id(r.id); },
                 [&](const MapLoadIndexRequest& r) {
                   m.mutable_map_load_index()->set_namespace_id(PackId(r.ns));
                 },
                 [&](const AccessNotice& r) {
                   auto* b = m.mutable_access_notice();
                   b->set_namespace_id(PackId(r.ns));
                   b->set_keys(PackKeys(r.keys));
                   for (uint32_t n : r.load_blocks) b->add_load_blocks(n);
                   for (double t : r.load_seconds) b->add_load_seconds(t);
                   b->set_bytes(r.bytes);
                   b->set_recompute_tokens_per_second(r.recompute_tokens_per_second);
                 },
                 [&](const InspectRequest& r) {
                   auto* b = m.mutable_inspect();
                   b->set_command(r.command);
                   if (r.ns) b->set_namespace_id(PackId(*r.ns));
                   b->set_keys(PackKeys(r.keys));
                   if (r.spec) PackSpec(*r.spec, b->mutable_spec());
                   for (uint32_t t : r.tokens) b->add_tokens(t);
                   b->set_tier(r.tier);
                   b->set_limit(r.limit);
                   b->set_verify(r.verify);
                   b->set_sort(r.sort);
                   b->set_window_s(r.window_s);
                   b->set_deadline_ms(r.deadline_ms);
                   b->set_recompute_tokens_per_second(r.recompute_tokens_per_second);
                 },
             },
             request.body);
  return m.SerializeAsString();
}

Result<Request> DecodeRequest(std::span<const std::byte> body) {
  pb::Request m;
  if (body.size() > kMaxMessageBytes) return Malformed("body exceeds the size limit");
  if (!m.ParseFromArray(body.data(), static_cast<int>(body.size())))
    return Malformed("not a Request");
  Request out;
  out.id = m.id();
  switch (m.body_case()) {
    case pb::Request::kHello: {
      Hello h;
      h.protocol_version = m.hello().protocol_version();
      h.client_name = m.hello().client_name();
      h.staging_bytes = m.hello().staging_bytes();
      h.cross_memory_probe = m.hello().cross_memory_probe();
      out.body = std::move(h);
      break;
    }
    case pb::Request::kLookup: {
      LookupRequest r;
      STRATA_RETURN_IF_ERROR(UnpackKeys(m.lookup().keys(), &r.keys));
      if (!m.lookup().namespace_id().empty()) {
        NamespaceId id;
        STRATA_RETURN_IF_ERROR(UnpackId(m.lookup().namespace_id(), &id));
        r.ns = id;
      }
      out.body = std::move(r);
      break;
    }
    case pb::Request::kStoreBegin: {
      const auto& b = m.store_begin();
      StoreBeginRequest r;
      STRATA_RETURN_IF_ERROR(UnpackId(b.namespace_id(), &r.ns));
      STRATA_RETURN_IF_ERROR(UnpackKeys(b.keys(), &r.keys));
      if (b.sizes_size() != 0 && static_cast<size_t>(b.sizes_size()) != r.keys.size())
        return Malformed("store_begin has " + std::to_string(r.keys.size()) + " keys but " +
                         std::to_string(b.sizes_size()) + " sizes");
      r.sizes.assign(b.sizes().begin(), b.sizes().end());
      out.body = std::move(r);
      break;
    }
    case pb::Request::kStoreCommit: {
      const auto& b = m.store_commit();
      StoreCommitRequest r;
      STRATA_RETURN_IF_ERROR(UnpackId(b.namespace_id(), &r.ns));
      STRATA_RETURN_IF_ERROR(CheckCodec(b.codec(), &r.codec));
      STRATA_RETURN_IF_ERROR(UnpackKeys(b.keys(), &r.keys));
      STRATA_RETURN_IF_ERROR(UnpackKeys(b.parents(), &r.parents));
      const size_t n = r.keys.size();
      // Payloads in staging (offsets), in the client's memory (addresses) or gathered out of
      // its paged cache, one of the three.
      const auto& g = b.gather();
      if (b.has_gather() &&
          (b.staging_offsets_size() != 0 || b.source_addresses_size() != 0 ||
           static_cast<size_t>(g.blocks_size()) != n ||
           static_cast<size_t>(g.key_heads_size()) != n))
        return Malformed("store_commit gathers " + std::to_string(g.blocks_size()) +
                         " shards for " + std::to_string(n) + " keys, or names staging too");
      const size_t places = b.has_gather() ? n
                                           : static_cast<size_t>(b.staging_offsets_size()) +
                                                 static_cast<size_t>(b.source_addresses_size());
      if (r.parents.size() != n || places != n || static_cast<size_t>(b.lengths_size()) != n ||
          (b.staging_offsets_size() != 0 && b.source_addresses_size() != 0))
        return Malformed("store_commit has " + std::to_string(n) + " keys but " +
                         std::to_string(r.parents.size()) + " parents, " +
                         std::to_string(b.staging_offsets_size()) + " offsets, " +
                         std::to_string(b.source_addresses_size()) + " addresses and " +
                         std::to_string(b.lengths_size()) + " lengths");
      r.staging_offsets.assign(b.staging_offsets().begin(), b.staging_offsets().end());
      r.source_addresses.assign(b.source_addresses().begin(), b.source_addresses().end());
      if (b.has_gather()) {
        CrossMemoryGather x;
        x.chunks_per_block = g.chunks_per_block();
        x.rows_per_chunk = g.rows_per_chunk();
        x.heads = g.heads();
        x.row_bytes = g.row_bytes();
        x.chunk_addresses.assign(g.chunk_addresses().begin(), g.chunk_addresses().end());
        x.blocks.assign(g.blocks().begin(), g.blocks().end());
        x.key_heads.assign(g.key_heads().begin(), g.key_heads().end());
        r.gather = std::move(x);
      }
      r.lengths.assign(b.lengths().begin(), b.lengths().end());
      if (b.has_spec()) {
        NamespaceSpec spec;
        STRATA_RETURN_IF_ERROR(UnpackSpec(b.spec(), &spec));
        r.spec = std::move(spec);
      }
      if (b.engine_blocks_size() != 0 && static_cast<size_t>(b.engine_blocks_size()) != n)
        return Malformed("store_commit has " + std::to_string(n) + " keys but " +
                         std::to_string(b.engine_blocks_size()) + " engine blocks");
      r.engine_blocks.resize(b.engine_blocks_size());
      for (int i = 0; i < b.engine_blocks_size(); ++i)
        STRATA_RETURN_IF_ERROR(UnpackEngineBlock(b.engine_blocks(i), &r.engine_blocks[i]));
      out.body = std::move(r);
      break;
    }
    case pb::Request::kLoad: {
      LoadRequest r;
      STRATA_RETURN_IF_ERROR(UnpackId(m.load().namespace_id(), &r.ns));
      STRATA_RETURN_IF_ERROR(UnpackKeys(m.load().keys(), &r.keys));
      r.pin_ms = m.load().pin_ms();
      r.recompute_tokens_per_second = m.load().recompute_tokens_per_second();
      if (!(r.recompute_tokens_per_second >= 0) || !std::isfinite(r.recompute_tokens_per_second))
        return Status::InvalidArgument("LoadRequest: recompute_tokens_per_second is not a "
                                       "finite non-negative number");
      out.body = std::move(r);
      break;
    }
    case pb::Request::kUnpin: {
      UnpinRequest r;
      STRATA_RETURN_IF_ERROR(UnpackKeys(m.unpin().keys(), &r.keys));
      out.body = std::move(r);
      break;
    }
    case pb::Request::kPrefetch: {
      PrefetchRequest r;
      STRATA_RETURN_IF_ERROR(UnpackKeys(m.prefetch().keys(), &r.keys));
      out.body = std::move(r);
      break;
    }
    case pb::Request::kStats:
      out.body = StatsRequest{};
      break;
    case pb::Request::kClear: {
      ClearRequest r;
      if (!m.clear().namespace_id().empty()) {
        NamespaceId id;
        STRATA_RETURN_IF_ERROR(UnpackId(m.clear().namespace_id(), &id));
        r.ns = id;
      }
      out.body = std::move(r);
      break;
    }
    case pb::Request::kInspect: {
      const auto& b = m.inspect();
      InspectRequest r;
      r.command = b.command();
      if (!b.namespace_id().empty()) {
        NamespaceId id;
        STRATA_RETURN_IF_ERROR(UnpackId(b.namespace_id(), &id));
        r.ns = id;
      }
      STRATA_RETURN_IF_ERROR(UnpackKeys(b.keys(), &r.keys));
      if (b.has_spec()) {
        NamespaceSpec spec;
        STRATA_RETURN_IF_ERROR(UnpackSpec(b.spec(), &spec));
        r.spec = std::move(spec);
      }
      if (b.tokens_size() > kMaxInspectTokens)
        return Malformed("inspect carries " + std::to_string(b.tokens_size()) +
                         " tokens, more than " + std::to_string(kMaxInspectTokens));
      r.tokens.assign(b.tokens().begin(), b.tokens().end());
      r.tier = b.tier();
      r.limit = b.limit();
      r.verify = b.verify();
      r.sort = b.sort();
      r.window_s = b.window_s();
      r.deadline_ms = b.deadline_ms();
      r.recompute_tokens_per_second = b.recompute_tokens_per_second();
      if (!(r.window_s >= 0) || !(r.recompute_tokens_per_second >= 0))  // NaN included
        return Malformed("inspect window_s and recompute_tokens_per_second must be >= 0");
      out.body = std::move(r);
      break;
    }
    case pb::Request::kOpenNamespace: {
      const std::string& e = m.open_namespace().encoding();
      const auto* p = reinterpret_cast<const std::byte*>(e.data());
      out.body = OpenNamespaceRequest{{p, p + e.size()}};
      break;
    }
    case pb::Request::kMapSlab:
      out.body = MapSlabRequest{m.map_slab().slab()};
      break;
    case pb::Request::kShareKv: {
      const auto& b = m.share_kv();
      if (b.client_addresses_size() != b.lengths_size() ||
          b.client_addresses_size() != b.offsets_size())
        return Malformed("share_kv has " + std::to_string(b.client_addresses_size()) +
                         " addresses, " + std::to_string(b.lengths_size()) + " lengths and " +
                         std::to_string(b.offsets_size()) + " offsets");
      ShareKvRequest r;
      r.bytes = b.bytes();
      r.client_addresses.assign(b.client_addresses().begin(), b.client_addresses().end());
      r.lengths.assign(b.lengths().begin(), b.lengths().end());
      r.offsets.assign(b.offsets().begin(), b.offsets().end());
      out.body = std::move(r);
      break;
    }
    case pb::Request::kUnshareKv:
      out.body = UnshareKvRequest{m.unshare_kv().id()};
      break;
    case pb::Request::kMapLoadIndex: {
      MapLoadIndexRequest r;
      STRATA_RETURN_IF_ERROR(UnpackId(m.map_load_index().namespace_id(), &r.ns));
      out.body = r;
      break;
    }
    case pb::Request::kAccessNotice: {
      AccessNotice r;
      STRATA_RETURN_IF_ERROR(UnpackId(m.access_notice().namespace_id(), &r.ns));
      STRATA_RETURN_IF_ERROR(UnpackKeys(m.access_notice().keys(), &r.keys));
      // Not checked here: a notice gets no reply, so the daemon drops what does not add up
      // (RequestHandler) rather than answer a decoding error nobody reads.
      r.load_blocks.assign(m.access_notice().load_blocks().begin(),
                           m.access_notice().load_blocks().end());
      r.load_seconds.assign(m.access_notice().load_seconds().begin(),
                            m.access_notice().load_seconds().end());
      r.bytes = m.access_notice().bytes();
      r.recompute_tokens_per_second = m.access_notice().recompute_tokens_per_second();
      out.body = std::move(r);
      break;
    }
    case pb::Request::BODY_NOT_SET:
      return Malformed("request has no body (unknown or missing request type)");
  }
  return out;
}

std::string EncodeResponse(const Response& response) {
  pb::Response m;
  m.set_id(response.id);
  m.set_code(static_cast<uint32_t>(response.status.code()));
  m.set_message(std::string(response.status.message()));
  std::visit(Overloaded{
                 [&](const std::monostate&) {},
                 [&](const HelloReply& r) {
                   auto* b = m.mutable_hello();
                   b->set_protocol_version(r.protocol_version);
                   b->set_pool_bytes(r.pool_bytes);
                   b->set_daemon_version(r.daemon_version);
                   b->set_slab_bytes(r.slab_bytes);
                   b->set_cross_memory(r.cross_memory);
                   b->set_loads_unverified(!r.verify_loads);
                 },
                 [&](const LookupReply& r) {
                   auto* b = m.mutable_lookup();
                   b->set_matched(r.matched);
                   for (Tier t : r.tiers) b->add_tiers(static_cast<pb::Tier>(t));
                 },
                 [&](const StoreBeginReply& r) {
                   m.mutable_store_begin()->set_exists(
                       std::string(r.exists.begin(), r.exists.end()));
                 },
                 [&](const StoreCommitReply& r) {
                   auto* b = m.mutable_store_commit();
                   b->set_committed(r.committed);
                   b->set_existed(r.existed);
                 },
                 [&](const LoadReply& r) {
                   auto* b = m.mutable_load();
                   for (const Location& l : r.locations) {
                     auto* loc = b->add_locations();
                     loc->set_offset(l.offset);
                     loc->set_length(l.length);
                     loc->set_checksum(l.checksum);
                     loc->set_codec(static_cast<uint32_t>(l.codec));
                     loc->set_generation(l.generation);
                   }
                 },
                 [&](const UnpinReply&) { m.mutable_unpin(); },
                 [&](const PrefetchReply& r) { m.mutable_prefetch()->set_queued(r.queued); },
                 [&](const StatsReply& r) { m.mutable_stats()->set_json(r.json); },
                 [&](const ClearReply& r) { m.mutable_clear()->set_erased(r.erased); },
                 [&](const InspectReply& r) { m.mutable_inspect()->set_json(r.json); },
                 [&](const OpenNamespaceReply& r) {
                   m.mutable_open_namespace()->set_namespace_id(PackId(r.ns));
                 },
                 [&](const MapSlabReply& r) { m.mutable_map_slab()->set_generation(r.generation); },
                 [&](const ShareKvReply& r) { m.mutable_share_kv()->set_id(r.id); },
                 [&](const UnshareKvReply&) { m.mutable_unshare_kv(); },
                 [&](const MapLoadIndexReply& r) {
                   auto* b = m.mutable_map_load_index();
                   b->set_tenant(r.tenant);
                   b->set_bytes(r.bytes);
                 },
             },
             response.body);
  return m.SerializeAsString();
}

Result<Response> DecodeResponse(std::span<const std::byte> body) {
  pb::Response m;
  if (body.size() > kMaxMessageBytes) return Malformed("body exceeds the size limit");
  if (!m.ParseFromArray(body.data(), static_cast<int>(body.size())))
    return Malformed("not a Response");
  Response out;
  out.id = m.id();
  if (m.code() > static_cast<uint32_t>(StatusCode::kInternal))
    return Malformed("unknown status code " + std::to_string(m.code()));
  if (m.code() != 0) {
    out.status = Status(static_cast<StatusCode>(m.code()), m.message());
    return out;
  }
  switch (m.body_case()) {
    case pb::Response::kHello:
      out.body = HelloReply{m.hello().protocol_version(), m.hello().pool_bytes(),
                            m.hello().daemon_version(), m.hello().slab_bytes(),
                            m.hello().cross_memory(), !m.hello().loads_unverified()};
      break;
    case pb::Response::kLookup: {
      LookupReply r;
      r.matched = m.lookup().matched();
      for (int t : m.lookup().tiers()) {
        if (t < 0 || t > static_cast<int>(Tier::kRemote)) return Malformed("unknown tier");
        r.tiers.push_back(static_cast<Tier>(t));
      }
      if (r.tiers.size() != r.matched) return Malformed("lookup tiers do not match 'matched'");
      out.body = std::move(r);
      break;
    }
    case pb::Response::kStoreBegin: {
      StoreBeginReply r;
      const std::string& e = m.store_begin().exists();
      if (e.size() > kMaxKeysPerRequest) return Malformed("store_begin reply is too long");
      r.exists.assign(e.begin(), e.end());
      out.body = std::move(r);
      break;
    }
    case pb::Response::kStoreCommit:
      out.body = StoreCommitReply{m.store_commit().committed(), m.store_commit().existed()};
      break;
    case pb::Response::kLoad: {
      LoadReply r;
      for (const auto& l : m.load().locations()) {
        Location loc{l.offset(), l.length(), l.checksum(), Codec::kNone, l.generation()};
        STRATA_RETURN_IF_ERROR(CheckCodec(l.codec(), &loc.codec));
        r.locations.push_back(loc);
      }
      out.body = std::move(r);
      break;
    }
    case pb::Response::kUnpin:
      out.body = UnpinReply{};
      break;
    case pb::Response::kPrefetch:
      out.body = PrefetchReply{m.prefetch().queued()};
      break;
    case pb::Response::kStats:
      out.body = StatsReply{m.stats().json()};
      break;
    case pb::Response::kClear:
      out.body = ClearReply{m.clear().erased()};
      break;
    case pb::Response::kInspect:
      out.body = InspectReply{m.inspect().json()};
      break;
    case pb::Response::kOpenNamespace: {
      OpenNamespaceReply r;
      STRATA_RETURN_IF_ERROR(UnpackId(m.open_namespace().namespace_id(), &r.ns));
      out.body = r;
      break;
    }
    case pb::Response::kMapSlab:
      out.body = MapSlabReply{m.map_slab().generation()};
      break;
    case pb::Response::kShareKv:
      out.body = ShareKvReply{m.share_kv().id()};
      break;
    case pb::Response::kUnshareKv:
      out.body = UnshareKvReply{};
      break;
    case pb::Response::kMapLoadIndex:
      out.body = MapLoadIndexReply{m.map_load_index().tenant(), m.map_load_index().bytes()};
      break;
    case pb::Response::BODY_NOT_SET:
      return Malformed("OK response without a body");
  }
  return out;
}

}  // namespace strata::ipc
