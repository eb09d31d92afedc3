// Hash-chained block keys (docs/keys.md):
//
//   key[0] = XXH3-128( ns_id           || LE32(tokens[0 .. B))      || extra[0] )
//   key[i] = XXH3-128( key[i-1] bytes  || LE32(tokens[iB .. (i+1)B)) || extra[i] )
//
// where B is the namespace's block size, keys and the namespace id are in canonical byte form, and
// extra[i] is optional per-block bytes (e.g. a multimodal content hash). A key therefore names the
// whole prefix up to the end of its block. Only full blocks are keyed.
//
// That is the `strata` key scheme. A namespace of an engine key scheme (vllm-sha256-cbor,
// vllm-xxhash-cbor, sglang; strata/engine_keys.h) keys its blocks by the engine's own hash chain;
// ComputeBlockKeys and KeyChain(const Namespace&) follow the namespace's scheme.
//
// Thread-safety: KeyChain is not thread-safe; the free functions are.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include <optional>

#include "strata/block_key.h"
#include "strata/engine_keys.h"
#include "strata/namespace.h"
#include "strata/status.h"

namespace strata {

// One link of the strata chain: hashes `prev` (the namespace id for the first block) with one
// block of tokens and its extra bytes.
BlockKey ChainBlockKey(const BlockKey& prev, std::span<const uint32_t> block_tokens,
                       std::span<const std::byte> extra = {});

// Keys every full block of `tokens` (no per-block extras) under the namespace's key scheme.
// Equivalent to a KeyChain fed all tokens at once.
std::vector<BlockKey> ComputeBlockKeys(const Namespace& ns, std::span<const uint32_t> tokens);

// The key of the shard of block `block` that holds KV head `kv_head` (of the namespace's
// num_kv_heads; 0 for MLA): H(block (16 canonical bytes) || "kvhead" || LE32(kv_head)). The paged
// API stores each block as one shard per KV head, so that a rank of any tensor-parallel degree
// loads exactly its heads (docs/keys.md, "Head shards").
BlockKey HeadShardKey(const BlockKey& block, uint32_t kv_head);

// OK when every key of `keys` carries the namespace tag of `ns` (block_key.h: KeyInNamespace);
// else InvalidArgument naming `context`, the first key that does not and both tags. A daemon
// refuses a store with it: a key computed in another namespace cannot be stored under this one.
Status CheckKeysInNamespace(std::span<const BlockKey> keys, const NamespaceId& ns,
                            std::string_view context);

// An incrementally extended chain: Append() more tokens later without rehashing earlier blocks
// (a conversation's next turn, a decode step). Tokens of an unfinished last block wait in a
// buffer until the block fills.
class KeyChain {
 public:
  // A chain under `ns`'s key scheme.
  explicit KeyChain(const Namespace& ns);
  // A strata-scheme chain from a namespace id.
  KeyChain(const NamespaceId& ns_id, uint32_t block_size);

  // Appends tokens; every block that becomes full gets its key.
  void Append(std::span<const uint32_t> tokens);

  // Appends exactly one block of tokens with per-block extra bytes.
  // REQUIRES: block_tokens.size() == block_size(), and no partial block pending; extra empty
  // unless the scheme is strata (engine schemes take multimodal items: ComputeSchemeKeys);
  // InvalidArgument otherwise (and the chain is unchanged).
  Status AppendBlock(std::span<const uint32_t> block_tokens, std::span<const std::byte> extra);

  const std::vector<BlockKey>& keys() const { return keys_; }
  // The engine's hash of each keyed block (engine schemes); empty for the strata scheme.
  const std::vector<EngineHash>& engine_hashes() const { return engine_hashes_; }
  uint32_t block_size() const { return block_size_; }
  size_t num_tokens() const { return keys_.size() * block_size_ + pending_.size(); }
  // Tokens after the last full block, not yet keyed.
  size_t pending_tokens() const { return pending_.size(); }

 private:
  const BlockKey& Tip() const { return keys_.empty() ? ns_id_ : keys_.back(); }
  void KeyFullBlocks(std::span<const uint32_t> tokens);

  NamespaceId ns_id_;
  uint32_t block_size_;
  std::vector<BlockKey> keys_;
  std::vector<uint32_t> pending_;
  std::vector<std::byte> frame_;  // scratch for AppendBlock: prev || LE32 tokens || extra
  // Engine schemes only: the namespace (its scheme, seed, LoRA and salt) and the hashes so far.
  std::optional<Namespace> engine_ns_;
  std::vector<EngineHash> engine_hashes_;
  void KeyEngineBlocks(std::span<const uint32_t> tokens);
  // Keys n_blocks consecutive blocks of tokens after prev into out[0, n_blocks); specialised for
  // the block size at construction (key_chain.cc).
  void (*key_blocks_)(const uint32_t* tokens, size_t n_blocks, uint32_t block_size, BlockKey prev,
                      BlockKey* out);
};

}  // namespace strata
