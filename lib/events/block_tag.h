// A block's event tag: what the engine itself publishes for a block that Strata stores under an
// engine key scheme (docs/kv-events.md, "Engine hashes"), kept with the block as its store tag
// (store::PutOptions::tag: across host, disk and restarts), so that Strata's BlockStored and
// BlockRemoved name the block exactly as the engine's own events do.
//
// Layout (all integers little-endian):
//
//   offset  size  field
//   ------  ----  -----------------------------------------------------------------
//        0     1  kind: 1 = engine block (published), 2 = secondary head shard (not published)
//   kind 1 only:
//        1     1  n = engine hash length (16 or 32)
//        2     n  the engine's block hash (vLLM's BlockHash bytes, SGLang's page hash)
//      2+n     1  m = parent hash length (0: the first block of its prompt; else n)
//      3+n     m  the engine's hash of the previous block
//    3+n+m     4  block_size (tokens), u32
//    7+n+m     4  t = token count (0: not known, e.g. SGLang hands over hashes only), u32
//   11+n+m    4t  token ids, u32 each
//        …     1  l = LoRA name length
//        …     l  LoRA name (UTF-8; the namespace's lora_id), l = 0: none
//
// A paged store keeps a block as one shard per KV head (docs/keys.md, "Head shards"); the shard of
// head 0 carries kind 1 and stands for the engine block in events, every other shard carries kind
// 2 and is never published: one BlockStored / BlockRemoved per engine block, not per shard.
//
// Thread-safety: free functions over plain values.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "events/kv_event.h"
#include "strata/engine_keys.h"
#include "strata/result.h"

namespace strata::events {

enum class BlockTagKind : uint8_t { kEngineBlock = 1, kSecondaryShard = 2 };

struct BlockTag {
  BlockTagKind kind = BlockTagKind::kEngineBlock;
  EngineHash hash;            // kind 1
  EngineHash parent;          // size 0: none
  uint32_t block_size = 0;
  std::vector<uint32_t> token_ids;
  std::string lora_name;      // empty: none
};

// The tag of one block (layout above).
std::string EncodeBlockTag(const BlockTag& tag);
// The tag of a secondary head shard: one byte.
std::string SecondaryShardTag();
// Corruption for bytes that are not a tag.
Result<BlockTag> DecodeBlockTag(std::string_view bytes);

// An engine hash as vLLM publishes it (maybe_convert_block_hash): with int_hashes the low 64 bits
// of the hash bytes read big-endian (the last 8 bytes), else the hash bytes themselves.
ExternalBlockHash PublishedEngineHash(const EngineHash& hash, bool int_hashes);

}  // namespace strata::events
