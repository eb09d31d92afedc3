// Private to lib/core: one link of an engine-scheme chain (strata/engine_keys.h), shared by
// ComputeSchemeKeys and KeyChain. Holds the namespace's scheme, its vLLM extra keys (LoRA name,
// cache salt) and a scratch buffer reused for every link, so a chain allocates once.
//
// Thread-safety: not thread-safe (the scratch buffer); one per chain.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "strata/engine_keys.h"

namespace strata::internal {

// A multimodal item's extra key on one block: vLLM's (identifier, offset - block start).
struct MmBlockKey {
  std::string_view identifier;
  int64_t offset_in_block;
};

class EngineLinker {
 public:
  // REQUIRES: ns.spec().key_scheme != KeyScheme::kStrata.
  explicit EngineLinker(const Namespace& ns);

  // The hash of the block `tokens` following `parent` (root() for block 0). `first_block`
  // selects vLLM's cache_salt extra key.
  EngineHash Link(const EngineHash& parent, std::span<const uint32_t> tokens, bool first_block,
                  std::span<const MmBlockKey> mm = {});
  // XXH3-128(ns_id || hash), tagged with ns_id (block_key.h).
  BlockKey Key(const EngineHash& hash) const;
  const EngineHash& root() const { return root_; }
  KeyScheme scheme() const { return scheme_; }

 private:
  EngineHash Digest(std::span<const std::byte> bytes) const;

  KeyScheme scheme_;
  NamespaceId ns_id_;
  std::string lora_;
  std::string salt_;
  EngineHash root_;
  std::vector<std::byte> scratch_;
};

}  // namespace strata::internal
