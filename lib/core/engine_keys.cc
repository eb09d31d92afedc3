#include "strata/engine_keys.h"

#include <cstring>

#include "strata/key_chain.h"

#include "byte_order.h"
#include "cbor.h"
#include "engine_link.h"
#include "sha256.h"
#include "xxh3.h"

namespace strata {
namespace internal {

EngineLinker::EngineLinker(const Namespace& ns)
    : scheme_(ns.spec().key_scheme),
      ns_id_(ns.id()),
      lora_(ns.spec().lora_id),
      salt_(ns.spec().tenant_salt) {
  if (scheme_ == KeyScheme::kVllmSha256Cbor || scheme_ == KeyScheme::kVllmXxhashCbor) {
    // vLLM: NONE_HASH = hash_fn(seed), the seed a Python str, i.e. CBOR text.
    CborWriter w(scratch_);
    w.Text(ns.spec().hash_seed);
    root_ = Digest(scratch_);
  }
}

EngineHash EngineLinker::Digest(std::span<const std::byte> bytes) const {
  EngineHash h;
  if (scheme_ == KeyScheme::kVllmXxhashCbor) {
    // vLLM's xxhash.xxh3_128_digest: XXH3-128, seed 0, canonical (big-endian) bytes.
    Xxh3_128(bytes.data(), bytes.size()).ToBytes(std::span<std::byte, 16>(h.bytes.data(), 16));
    h.size = 16;
  } else {
    const Sha256Digest d = Sha256(bytes);
    std::memcpy(h.bytes.data(), d.data(), d.size());
    h.size = 32;
  }
  return h;
}

EngineHash EngineLinker::Link(const EngineHash& parent, std::span<const uint32_t> tokens,
                              bool first_block, std::span<const MmBlockKey> mm) {
  scratch_.clear();
  if (scheme_ == KeyScheme::kSglang) {
    // get_hash_str: sha256(bytes.fromhex(prior_hash) if prior_hash) || LE32 tokens).
    scratch_.resize(parent.size + tokens.size() * sizeof(uint32_t));
    std::memcpy(scratch_.data(), parent.bytes.data(), parent.size);
    StoreTokensLE(scratch_.data() + parent.size, tokens.data(), tokens.size());
    return Digest(scratch_);
  }
  // hash_block_tokens: hash_fn((parent_block_hash, tuple(token_ids), extra_keys)).
  CborWriter w(scratch_);
  w.ArrayHeader(3);
  w.Bytes(parent.view());
  w.ArrayHeader(tokens.size());
  for (uint32_t t : tokens) w.Uint(t);
  // generate_block_hash_extra_keys: lora + mm + cache_salt (first block) [+ prompt embeds].
  const bool salt = first_block && !salt_.empty();
  const size_t n_extra = (lora_.empty() ? 0 : 1) + mm.size() + (salt ? 1 : 0);
  if (n_extra == 0) {
    w.Null();
  } else {
    w.ArrayHeader(n_extra);
    if (!lora_.empty()) w.Text(lora_);
    for (const MmBlockKey& m : mm) {
      w.ArrayHeader(2);
      w.Text(m.identifier);
      w.Int(m.offset_in_block);
    }
    if (salt) w.Text(salt_);
  }
  return Digest(scratch_);
}

BlockKey EngineLinker::Key(const EngineHash& hash) const { return KeyOfEngineHash(ns_id_, hash); }

}  // namespace internal

namespace {

// vLLM's _gen_mm_extra_hash_keys for the block [start, end), items sorted by offset; `next` is
// the index to resume from (vLLM's curr_mm_idx), advanced as items are passed.
void VllmMmKeys(std::span<const MultimodalItem> mm, uint64_t start, uint64_t end, size_t& next,
                std::vector<internal::MmBlockKey>& out) {
  out.clear();
  if (mm.empty() || mm.back().offset + mm.back().length <= start) return;
  while (next < mm.size()) {
    const MultimodalItem& item = mm[next];
    if (end <= item.offset) break;  // the block has not reached this item
    if (start >= item.offset + item.length) {  // the block has passed this item
      ++next;
      continue;
    }
    out.push_back({item.identifier, static_cast<int64_t>(item.offset) - static_cast<int64_t>(start)});
    if (end >= item.offset + item.length)
      ++next;  // the item ends in this block; the next item may start in it too
    else
      break;
  }
}

}  // namespace

std::string EngineHash::ToHex() const {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(size_t{size} * 2, '0');
  for (size_t i = 0; i < size; ++i) {
    const auto b = static_cast<uint8_t>(bytes[i]);
    out[2 * i] = kDigits[b >> 4];
    out[2 * i + 1] = kDigits[b & 15];
  }
  return out;
}

std::optional<EngineHash> EngineHash::FromHex(std::string_view hex) {
  if (hex.size() != 32 && hex.size() != 64) return std::nullopt;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  EngineHash h;
  h.size = static_cast<uint8_t>(hex.size() / 2);
  for (size_t i = 0; i < h.size; ++i) {
    const int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    h.bytes[i] = static_cast<std::byte>(hi << 4 | lo);
  }
  return h;
}

BlockKey KeyOfEngineHash(const NamespaceId& ns_id, const EngineHash& hash) {
  std::byte frame[BlockKey::kSize + 32];
  ns_id.ToBytes(std::span<std::byte, BlockKey::kSize>(frame, BlockKey::kSize));
  std::memcpy(frame + BlockKey::kSize, hash.bytes.data(), hash.size);
  return WithNamespaceTag(internal::Xxh3_128(frame, BlockKey::kSize + hash.size), ns_id);
}

EngineHash EngineRootHash(const Namespace& ns) {
  if (ns.spec().key_scheme == KeyScheme::kStrata) return EngineHash{};
  return internal::EngineLinker(ns).root();
}

Result<SchemeKeys> ComputeSchemeKeys(const Namespace& ns, std::span<const uint32_t> tokens,
                                     std::span<const MultimodalItem> mm) {
  const KeyScheme scheme = ns.spec().key_scheme;
  const bool vllm = scheme == KeyScheme::kVllmSha256Cbor || scheme == KeyScheme::kVllmXxhashCbor;
  if (!mm.empty() && !vllm)
    return Status::InvalidArgument("multimodal items need a vLLM key scheme; namespace has " +
                                   std::string(KeySchemeName(scheme)));
  for (size_t i = 1; i < mm.size(); ++i)
    if (mm[i].offset < mm[i - 1].offset)
      return Status::InvalidArgument("multimodal items must be sorted by offset (item " +
                                     std::to_string(i) + ")");
  const uint32_t block_size = ns.block_size();
  const size_t n_blocks = tokens.size() / block_size;
  SchemeKeys out;
  out.keys.reserve(n_blocks);
  out.hashes.reserve(n_blocks);
  if (scheme == KeyScheme::kStrata) {
    out.keys = ComputeBlockKeys(ns, tokens);
    for (const BlockKey& k : out.keys) {
      EngineHash h;
      k.ToBytes(std::span<std::byte, 16>(h.bytes.data(), 16));
      h.size = 16;
      out.hashes.push_back(h);
    }
    return out;
  }
  internal::EngineLinker linker(ns);
  std::vector<internal::MmBlockKey> mm_keys;
  size_t next_mm = 0;
  EngineHash parent = linker.root();
  for (size_t b = 0; b < n_blocks; ++b) {
    const uint64_t start = uint64_t{b} * block_size;
    VllmMmKeys(mm, start, start + block_size, next_mm, mm_keys);
    parent = linker.Link(parent, tokens.subspan(start, block_size), b == 0, mm_keys);
    out.hashes.push_back(parent);
    out.keys.push_back(linker.Key(parent));
  }
  return out;
}

Result<std::vector<EngineBlock>> ComputeEngineBlocks(const Namespace& ns,
                                                     std::span<const uint32_t> tokens,
                                                     std::span<const MultimodalItem> mm) {
  if (ns.spec().key_scheme == KeyScheme::kStrata)
    return Status::InvalidArgument(
        "engine blocks need an engine key scheme; the strata scheme's events name its keys");
  STRATA_ASSIGN_OR_RETURN(SchemeKeys keys, ComputeSchemeKeys(ns, tokens, mm));
  const uint32_t block_size = ns.block_size();
  std::vector<EngineBlock> out(keys.hashes.size());
  for (size_t i = 0; i < out.size(); ++i) {
    out[i].hash = keys.hashes[i];
    if (i > 0) out[i].parent = keys.hashes[i - 1];
    const auto block = tokens.subspan(i * block_size, block_size);
    out[i].token_ids.assign(block.begin(), block.end());
  }
  return out;
}

}  // namespace strata
