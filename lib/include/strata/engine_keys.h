// Engine-compatible keys (docs/keys.md, "Key schemes"): a namespace whose key scheme is not
// `strata` computes each block's hash exactly as a serving engine does, so that Strata, the engine,
// the engine's KV events and the routers above them name a prefix with the same bytes.
//
//   vllm-sha256-cbor / vllm-xxhash-cbor  (vLLM's hash_block_tokens with sha256_cbor / xxhash_cbor)
//     root     = H( CBOR text(hash_seed) )                            (vLLM's NONE_HASH)
//     hash[i]  = H( CBOR [ parent bytes, [tokens of block i...], extra_keys_i or null ] )
//     parent   = root for block 0, else hash[i-1] (the full 32 or 16 bytes)
//     extra_keys_i, in vLLM's order: lora_id (every block, if set), one [identifier, offset]
//     per multimodal item that overlaps block i (offset relative to the block start), tenant_salt
//     as cache_salt (block 0 only, if set); null when there are none.
//     H = SHA-256 (32 bytes) or XXH3-128 in canonical big-endian form (16 bytes).
//   sglang  (SGLang HiCache's get_hash_str)
//     hash[0] = SHA-256( LE32(tokens of block 0) );  hash[i] = SHA-256( hash[i-1] || LE32(...) )
//
// The Strata key of such a block (the BlockKey every tier, the wire and the client use) is
//   key[i] = XXH3-128( ns_id (16 bytes) || hash[i] )
// Engine hashes name token prefixes only; the namespace id keeps models, dtypes, layouts and
// codecs apart in a store that holds many.
//
// Thread-safety: free functions; plain value types.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "strata/block_key.h"
#include "strata/namespace.h"
#include "strata/result.h"

namespace strata {

// A block hash in the engine's own form: 32 bytes for the SHA-256 schemes, 16 for XXH3-128 ones
// (vLLM's BlockHash bytes; SGLang's hex digest is ToHex()). For the strata scheme, the key itself.
struct EngineHash {
  std::array<std::byte, 32> bytes{};
  uint8_t size = 0;  // 16 or 32

  std::span<const std::byte> view() const { return {bytes.data(), size}; }
  // Lower-case hex of view(): 64 or 32 digits.
  std::string ToHex() const;
  // Parses 32 or 64 hex digits; nullopt otherwise.
  static std::optional<EngineHash> FromHex(std::string_view hex);

  friend bool operator==(const EngineHash& a, const EngineHash& b) {
    return a.size == b.size && a.bytes == b.bytes;
  }
};

// What an engine announces for one block in its own KV events (vLLM's BlockStored: the block's
// hash, its parent's, its tokens). A store that carries it (Client::Store's StoreOptions) makes
// Strata's KV events name the block as the engine does (docs/kv-events.md, "Engine hashes").
struct EngineBlock {
  EngineHash hash;                  // the engine's hash of the block (16 or 32 bytes)
  EngineHash parent;                // the previous block's; size 0: the first block of its prompt
  std::vector<uint32_t> token_ids;  // the block's tokens; empty: not known
};

// One multimodal input of a vLLM request (vLLM's mm_features): its identifier (mm_hash) and the
// token positions its placeholder occupies. Items are given sorted by offset, as vLLM keeps them.
struct MultimodalItem {
  std::string identifier;
  uint64_t offset = 0;
  uint64_t length = 0;
};

struct SchemeKeys {
  std::vector<BlockKey> keys;       // Strata keys, one per full block
  std::vector<EngineHash> hashes;   // the engine's hashes of the same blocks
};

// Keys every full block of `tokens` under `ns`'s key scheme. `mm` is honoured by the vLLM schemes
// only; InvalidArgument for multimodal items under another scheme or items not sorted by offset.
Result<SchemeKeys> ComputeSchemeKeys(const Namespace& ns, std::span<const uint32_t> tokens,
                                     std::span<const MultimodalItem> mm = {});

// The EngineBlocks of every full block of `tokens` under `ns`'s key scheme (ComputeSchemeKeys'
// hashes, each block's parent the hash before it), for a store of those blocks.
// InvalidArgument for the strata scheme (its events name the keys themselves).
Result<std::vector<EngineBlock>> ComputeEngineBlocks(const Namespace& ns,
                                                     std::span<const uint32_t> tokens,
                                                     std::span<const MultimodalItem> mm = {});

// The Strata key of a block whose engine hash is `hash`: XXH3-128(ns_id || hash) with the
// namespace's tag in its first 32 bits (block_key.h). Lets an adapter turn the hashes an engine
// already computed (vLLM's request.block_hashes) into keys.
BlockKey KeyOfEngineHash(const NamespaceId& ns_id, const EngineHash& hash);

// The root of `ns`'s engine chain: vLLM's NONE_HASH for the vLLM schemes; size 0 for sglang
// (its first block has no parent) and strata (the chain starts at ns_id).
EngineHash EngineRootHash(const Namespace& ns);

}  // namespace strata
