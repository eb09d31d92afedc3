#include "strata/key_chain.h"

#include <cstring>

#include <algorithm>
#include <string>

#include "byte_order.h"
#include "engine_link.h"
#include "xxh3.h"

namespace strata {
namespace {

// Writes `key` in canonical form (high then low, each big-endian) at `p`. Kept inline here rather
// than calling BlockKey::ToBytes: it sits on the chain's critical path.
inline void PutKey(std::byte* p, const BlockKey& key) {
  internal::StoreBE<uint64_t>(p, key.high);
  internal::StoreBE<uint64_t>(p + 8, key.low);
}

// Hashes the frame  prev || LE32(tokens) || extra  laid out in `frame` (scratch, reused); the key
// keeps prev's namespace tag (block_key.h: prev is the namespace id or a key of it).
inline BlockKey HashLink(std::vector<std::byte>& frame, const BlockKey& prev,
                         const uint32_t* tokens, size_t n, std::span<const std::byte> extra) {
  const size_t size = BlockKey::kSize + n * sizeof(uint32_t) + extra.size();
  if (frame.size() < size) frame.resize(size);
  std::byte* p = frame.data();
  PutKey(p, prev);
  internal::StoreTokensLE(p + BlockKey::kSize, tokens, n);
  if (!extra.empty())
    std::copy(extra.begin(), extra.end(), p + BlockKey::kSize + n * sizeof(uint32_t));
  return WithNamespaceTag(internal::Xxh3_128(p, size), prev);
}

// The chain is latency-bound: each link waits for the previous key. With the block size a
// compile-time constant the frame lives in registers/stack, the token copy is a fixed-size move
// and XXH3's length dispatch folds away, so only the hash's own dependency chain remains.
template <size_t B>
void KeyBlocksFixed(const uint32_t* tokens, size_t n_blocks, uint32_t /*block_size*/,
                    BlockKey prev, BlockKey* out) {
  alignas(64) std::byte frame[BlockKey::kSize + B * sizeof(uint32_t)];
  const BlockKey tag = prev;  // every key of the chain carries prev's namespace tag
  for (size_t b = 0; b < n_blocks; ++b) {
    PutKey(frame, prev);
    internal::StoreTokensLE(frame + BlockKey::kSize, tokens + b * B, B);
    prev = WithNamespaceTag(internal::Xxh3_128(frame, sizeof(frame)), tag);
    out[b] = prev;
  }
}

void KeyBlocksAnySize(const uint32_t* tokens, size_t n_blocks, uint32_t block_size,
                      BlockKey prev, BlockKey* out) {
  std::vector<std::byte> frame(BlockKey::kSize + size_t{block_size} * sizeof(uint32_t));
  for (size_t b = 0; b < n_blocks; ++b) {
    prev = HashLink(frame, prev, tokens + b * block_size, block_size, {});
    out[b] = prev;
  }
}

using KeyBlocksFn = void (*)(const uint32_t* tokens, size_t n_blocks, uint32_t block_size,
                             BlockKey prev, BlockKey* out);

// Chosen once per chain (at construction), not per block.
KeyBlocksFn SelectKeyBlocks(uint32_t block_size) {
  switch (block_size) {
    case 16: return &KeyBlocksFixed<16>;
    case 32: return &KeyBlocksFixed<32>;
    case 64: return &KeyBlocksFixed<64>;
    case 128: return &KeyBlocksFixed<128>;
    case 256: return &KeyBlocksFixed<256>;
    case 512: return &KeyBlocksFixed<512>;
    default: return &KeyBlocksAnySize;
  }
}

}  // namespace

BlockKey ChainBlockKey(const BlockKey& prev, std::span<const uint32_t> block_tokens,
                       std::span<const std::byte> extra) {
  std::vector<std::byte> frame;
  return HashLink(frame, prev, block_tokens.data(), block_tokens.size(), extra);
}

std::vector<BlockKey> ComputeBlockKeys(const Namespace& ns, std::span<const uint32_t> tokens) {
  if (ns.spec().key_scheme != KeyScheme::kStrata) {
    // Without multimodal items ComputeSchemeKeys cannot fail.
    return std::move(ComputeSchemeKeys(ns, tokens).value().keys);
  }
  const uint32_t block_size = ns.block_size();
  std::vector<BlockKey> keys(tokens.size() / block_size);
  if (!keys.empty())
    SelectKeyBlocks(block_size)(tokens.data(), keys.size(), block_size, ns.id(), keys.data());
  return keys;
}

KeyChain::KeyChain(const Namespace& ns) : KeyChain(ns.id(), ns.block_size()) {
  if (ns.spec().key_scheme != KeyScheme::kStrata) engine_ns_ = ns;
}

void KeyChain::KeyEngineBlocks(std::span<const uint32_t> tokens) {
  internal::EngineLinker linker(*engine_ns_);
  for (size_t at = 0; at + block_size_ <= tokens.size(); at += block_size_) {
    const bool first = engine_hashes_.empty();
    const EngineHash& parent = first ? linker.root() : engine_hashes_.back();
    EngineHash h = linker.Link(parent, tokens.subspan(at, block_size_), first);
    keys_.push_back(linker.Key(h));
    engine_hashes_.push_back(h);
  }
}

KeyChain::KeyChain(const NamespaceId& ns_id, uint32_t block_size)
    : ns_id_(ns_id), block_size_(block_size), key_blocks_(SelectKeyBlocks(block_size)) {}

void KeyChain::KeyFullBlocks(std::span<const uint32_t> tokens) {
  const size_t n_blocks = tokens.size() / block_size_;
  if (n_blocks == 0) return;
  if (engine_ns_) return KeyEngineBlocks(tokens);
  const BlockKey prev = Tip();
  const size_t first = keys_.size();
  keys_.resize(first + n_blocks);
  key_blocks_(tokens.data(), n_blocks, block_size_, prev, keys_.data() + first);
}

void KeyChain::Append(std::span<const uint32_t> tokens) {
  if (!pending_.empty()) {
    size_t take = std::min(tokens.size(), block_size_ - pending_.size());
    pending_.insert(pending_.end(), tokens.begin(), tokens.begin() + take);
    tokens = tokens.subspan(take);
    if (pending_.size() < block_size_) return;
    KeyFullBlocks(pending_);
    pending_.clear();
  }
  const size_t full = tokens.size() / block_size_ * block_size_;
  KeyFullBlocks(tokens.first(full));
  pending_.assign(tokens.begin() + full, tokens.end());
}

Status KeyChain::AppendBlock(std::span<const uint32_t> block_tokens,
                             std::span<const std::byte> extra) {
  if (!pending_.empty())
    return Status::InvalidArgument("AppendBlock: " + std::to_string(pending_.size()) +
                                   " tokens of a partial block are pending");
  if (block_tokens.size() != block_size_)
    return Status::InvalidArgument("AppendBlock: got " + std::to_string(block_tokens.size()) +
                                   " tokens, block size is " + std::to_string(block_size_));
  if (engine_ns_) {
    if (!extra.empty())
      return Status::InvalidArgument(
          "AppendBlock: extra bytes have no place in key scheme " +
          std::string(KeySchemeName(engine_ns_->spec().key_scheme)) +
          " (give vLLM multimodal items to ComputeSchemeKeys)");
    KeyEngineBlocks(block_tokens);
    return Status::OK();
  }
  keys_.push_back(HashLink(frame_, Tip(), block_tokens.data(), block_tokens.size(), extra));
  return Status::OK();
}

Status CheckKeysInNamespace(std::span<const BlockKey> keys, const NamespaceId& ns,
                            std::string_view context) {
  for (size_t i = 0; i < keys.size(); ++i) {
    if (KeyInNamespace(keys[i], ns)) continue;
    // The tag is the key's first kNamespaceTagBits / 4 hex digits.
    const size_t digits = kNamespaceTagBits / 4;
    const std::string key = keys[i].ToHex(), id = ns.ToHex();
    return Status::InvalidArgument(
        std::string(context) + ": block " + std::to_string(i) + "'s key " + key +
        " was not computed in namespace " + id + ": its namespace tag is " +
        key.substr(0, digits) + ", the namespace's is " + id.substr(0, digits) +
        " (docs/keys.md, \"Namespace tag\"); nothing was stored");
  }
  return Status::OK();
}

BlockKey HeadShardKey(const BlockKey& block, uint32_t kv_head) {
  // Layout drawn in docs/keys.md, "Head shards".
  unsigned char frame[16 + 6 + 4];
  auto key = block.ToBytes();
  std::memcpy(frame, key.data(), 16);
  std::memcpy(frame + 16, "kvhead", 6);
  for (int i = 0; i < 4; ++i) frame[22 + i] = static_cast<unsigned char>(kv_head >> (8 * i));
  return WithNamespaceTag(internal::Xxh3_128(frame, sizeof(frame)), block);
}

}  // namespace strata
