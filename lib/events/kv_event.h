// vLLM's KV-event wire format (vllm/distributed/kv_events.py; docs/kv-events.md) as plain C++
// values, and its msgpack encoding. Strata publishes the blocks its tiers gain and lose in this
// format (kv_event_publisher.h) and consumes an engine's own events (engine_events.h), so routers
// that already read vLLM's stream (llm-d, Dynamo, Mooncake's indexer) read Strata's too.
//
// One ZMQ message is three frames: (topic, 8-byte big-endian sequence number, EventBatch). The
// EventBatch is msgspec's encoding of
//
//   EventBatch  (array_like)         [ ts: float64, events: [event...], data_parallel_rank? ]
//   BlockStored (tagged, tag "type") { "type": "BlockStored", "block_hashes": [h...],
//                                      "parent_block_hash": h | nil, "token_ids": [int...],
//                                      "block_size": int, "lora_id": int | nil,
//                                      "medium": str | nil, "lora_name": str | nil,
//                                      "group_idx": int (omitted when nil) }
//   BlockRemoved                     { "type": "BlockRemoved", "block_hashes": [h...],
//                                      "medium": str | nil, "group_idx": int (omitted) }
//   AllBlocksCleared                 { "type": "AllBlocksCleared" }
//
// Events are tagged maps since vLLM #42892; older vLLM encoded them as tagged arrays in the same
// field order (["BlockStored", block_hashes, parent_block_hash, token_ids, block_size, lora_id,
// medium, lora_name]). EventEncoding picks one for output; the decoder reads both, ignores
// fields it does not know (extra_keys, kv_cache_spec_kind, ...) and accepts a map EventBatch
// ({"ts", "events", "data_parallel_rank"}) too. msgspec's omit_defaults drops a trailing nil
// data_parallel_rank and nil optional fields with defaults; required fields are always written.
//
// A block hash h is vLLM's ExternalBlockHash: an unsigned 64-bit integer (the default,
// VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=1: the low 64 bits of the hash bytes read big-endian) or the
// hash bytes themselves (msgpack bin).
//
// Thread-safety: free functions over plain values.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "strata/result.h"

namespace strata::events {

// vLLM's ExternalBlockHash: int (uint64) or bytes.
using ExternalBlockHash = std::variant<uint64_t, std::string>;

// "i:<decimal>" or "b:<hex>", for logs and JSON.
std::string HashToString(const ExternalBlockHash& h);

enum class KvEventKind : uint8_t { kBlockStored, kBlockRemoved, kAllBlocksCleared };

struct KvEvent {
  KvEventKind kind = KvEventKind::kBlockStored;
  std::vector<ExternalBlockHash> block_hashes;          // stored, removed
  std::optional<ExternalBlockHash> parent_block_hash;   // stored
  std::vector<int64_t> token_ids;                       // stored
  int64_t block_size = 0;                               // stored
  std::optional<int64_t> lora_id;                       // stored
  std::optional<std::string> medium;                    // stored, removed
  std::optional<std::string> lora_name;                 // stored
  std::optional<int64_t> group_idx;                     // stored, removed
};

struct KvEventBatch {
  double ts = 0;  // seconds since the epoch (Python's time.time())
  std::vector<KvEvent> events;
  std::optional<int64_t> data_parallel_rank;
};

enum class EventEncoding : uint8_t {
  kTaggedMap = 0,    // current vLLM: each event a map with a "type" tag
  kTaggedArray = 1,  // vLLM before #42892: each event an array, tag first
};

// msgpack bytes of `batch` in vLLM's encoding (the third frame of a message).
std::string EncodeEventBatch(const KvEventBatch& batch, EventEncoding encoding);

// Decodes an EventBatch in either encoding. Corruption for bytes that are not msgpack or not an
// EventBatch (wrong types, an unknown event tag, missing block_hashes).
Result<KvEventBatch> DecodeEventBatch(std::span<const std::byte> bytes);

}  // namespace strata::events
