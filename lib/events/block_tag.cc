#include "events/block_tag.h"

#include <algorithm>
#include <cstring>

namespace strata::events {
namespace {

void PutU32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
}

Status Bad(const std::string& what) { return Status::Corruption("block tag: " + what); }

class Reader {
 public:
  explicit Reader(std::string_view b) : b_(b) {}
  bool Take(size_t n, std::string_view* out) {
    if (b_.size() - at_ < n) return false;
    *out = b_.substr(at_, n);
    at_ += n;
    return true;
  }
  bool U8(uint8_t* v) {
    std::string_view s;
    if (!Take(1, &s)) return false;
    *v = static_cast<uint8_t>(s[0]);
    return true;
  }
  bool U32(uint32_t* v) {
    std::string_view s;
    if (!Take(4, &s)) return false;
    *v = 0;
    for (int i = 0; i < 4; ++i) *v |= uint32_t{static_cast<uint8_t>(s[i])} << (8 * i);
    return true;
  }
  bool Hash(uint8_t n, EngineHash* h) {
    std::string_view s;
    if (!Take(n, &s)) return false;
    h->size = n;
    std::memcpy(h->bytes.data(), s.data(), n);
    return true;
  }
  bool done() const { return at_ == b_.size(); }
  size_t left() const { return b_.size() - at_; }

 private:
  std::string_view b_;
  size_t at_ = 0;
};

}  // namespace

std::string EncodeBlockTag(const BlockTag& tag) {
  if (tag.kind == BlockTagKind::kSecondaryShard) return SecondaryShardTag();
  std::string out;
  out.reserve(16 + 2 * tag.hash.size + 4 * tag.token_ids.size() + tag.lora_name.size());
  out.push_back(static_cast<char>(BlockTagKind::kEngineBlock));
  out.push_back(static_cast<char>(tag.hash.size));
  out.append(reinterpret_cast<const char*>(tag.hash.bytes.data()), tag.hash.size);
  out.push_back(static_cast<char>(tag.parent.size));
  out.append(reinterpret_cast<const char*>(tag.parent.bytes.data()), tag.parent.size);
  PutU32(out, tag.block_size);
  PutU32(out, static_cast<uint32_t>(tag.token_ids.size()));
  for (uint32_t t : tag.token_ids) PutU32(out, t);
  const size_t lora = std::min<size_t>(tag.lora_name.size(), 255);
  out.push_back(static_cast<char>(lora));
  out.append(tag.lora_name.data(), lora);
  return out;
}

std::string SecondaryShardTag() {
  return std::string(1, static_cast<char>(BlockTagKind::kSecondaryShard));
}

Result<BlockTag> DecodeBlockTag(std::string_view bytes) {
  Reader r(bytes);
  uint8_t kind = 0;
  if (!r.U8(&kind)) return Bad("empty");
  BlockTag tag;
  if (kind == static_cast<uint8_t>(BlockTagKind::kSecondaryShard)) {
    if (!r.done()) return Bad("trailing bytes after a secondary-shard tag");
    tag.kind = BlockTagKind::kSecondaryShard;
    return tag;
  }
  if (kind != static_cast<uint8_t>(BlockTagKind::kEngineBlock))
    return Bad("unknown kind " + std::to_string(kind));
  uint8_t n = 0, m = 0, l = 0;
  uint32_t count = 0;
  if (!r.U8(&n) || (n != 16 && n != 32)) return Bad("hash length is not 16 or 32");
  if (!r.Hash(n, &tag.hash)) return Bad("short hash");
  if (!r.U8(&m) || (m != 0 && m != n)) return Bad("parent hash length is not 0 or the hash's");
  if (m && !r.Hash(m, &tag.parent)) return Bad("short parent hash");
  if (!r.U32(&tag.block_size) || !r.U32(&count)) return Bad("short block size or token count");
  if (count > r.left() / 4) return Bad("token count past the end");
  tag.token_ids.resize(count);
  for (uint32_t& t : tag.token_ids) (void)r.U32(&t);
  std::string_view lora;
  if (!r.U8(&l) || !r.Take(l, &lora)) return Bad("short LoRA name");
  tag.lora_name.assign(lora);
  if (!r.done()) return Bad("trailing bytes");
  return tag;
}

ExternalBlockHash PublishedEngineHash(const EngineHash& hash, bool int_hashes) {
  if (!int_hashes)
    return ExternalBlockHash(std::string(reinterpret_cast<const char*>(hash.bytes.data()),
                                         hash.size));
  uint64_t v = 0;
  const size_t from = hash.size >= 8 ? hash.size - 8 : 0;
  for (size_t i = from; i < hash.size; ++i) v = (v << 8) | std::to_integer<uint8_t>(hash.bytes[i]);
  return ExternalBlockHash(v);
}

}  // namespace strata::events
