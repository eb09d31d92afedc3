// The interface every local tier implements (DESIGN.md, "Tiers"): device (GPU pool), host (memfd
// pool), disk (RocksDB index + payload files). The tiered store (tiered_store.h) stacks them.
//
// A tier stores *blocks*: a 64-byte BlockHeader (strata/block_format.h: key, namespace, codec,
// length, XXH3-64 payload checksum) and the payload bytes. The header travels with the block; a
// block whose payload fails its checksum is a miss, never data.
//
// Thread-safety: every method of every tier may be called concurrently from any thread.
// Ownership: a tier owns its memory/files; callers own the buffers they pass in.
#pragma once

#include <chrono>
#include <cstdint>
#include <span>
#include <string_view>

#include "strata/block_format.h"
#include "strata/block_key.h"
#include "strata/result.h"
#include "strata/status.h"
#include "strata/tier.h"

namespace strata::store {

// The store's tiers are strata::Tier's kDevice, kHost and kDisk (strata/tier.h).
using TierKind = ::strata::Tier;
inline std::string_view TierKindName(TierKind kind) { return TierName(kind); }

// Where a block lives inside one tier. For host and device tiers `offset` is the payload's byte
// offset from the pool base (TierLayout); for the disk tier the offset in its payload file.
struct BlockLocation {
  TierKind tier = TierKind::kHost;
  uint64_t offset = 0;
  uint64_t length = 0;  // payload bytes (raw: before any compression on disk)
};

struct PutOptions {
  // Key of the block one position earlier in the same chain (key[i-1] for key[i]); lets the
  // prefix-aware policy rank prefixes above their tails. Default: none (a chain head or unknown).
  const BlockKey* parent = nullptr;
  // The block's tag: opaque bytes that travel with it through every tier and survive restarts
  // (the disk tier keeps them in the block's index record; the tiered store hands them to its
  // on_tier_change hook). The KV-event publisher keeps the engine's own block hash there
  // (lib/events/block_tag.h). At most kMaxBlockTagBytes. Default: empty (none).
  std::string_view tag;
};

// The longest tag a tier keeps (PutOptions::tag); a longer one is refused as InvalidArgument.
inline constexpr size_t kMaxBlockTagBytes = 16384;

struct TierStats {
  uint64_t blocks = 0;          // blocks cached now
  uint64_t payload_bytes = 0;   // payload bytes cached now
  uint64_t capacity_bytes = 0;  // bytes the tier may use for blocks
  uint64_t hits = 0;
  uint64_t misses = 0;
  uint64_t puts = 0;
  uint64_t evictions = 0;
  uint64_t corrupt_dropped = 0;  // blocks that failed verification and were dropped
  uint64_t metadata_bytes = 0;   // index, policy and allocator memory that scales with the tier
                                 // (not the 64-byte block headers, which are part of each block)
  uint64_t fixed_metadata_bytes = 0;  // per-tier constant overhead (lock arrays)
  uint64_t max_blocks = 0;       // slots the metadata was sized for
  // Pools (host, device): bytes of the slabs lent to size classes now. What of them holds no
  // payload (chunks rounded up to their class, free chunks of partly used slabs) is the pool's
  // fragmentation: 1 - payload_bytes / lent_bytes.
  uint64_t lent_bytes = 0;
  // Disk tier only (0 in the others). payload_bytes is what the blocks take on disk (compressed,
  // 4 KiB-rounded); raw_payload_bytes what they hold before compression.
  uint64_t raw_payload_bytes = 0;
  uint64_t compressed_blocks = 0;   // blocks stored compressed now
  uint64_t stored_raw = 0;          // puts with compression on that were written raw (no gain)
  uint64_t decompress_errors = 0;   // stored bytes that did not decompress (also corrupt_dropped)
};

class Tier {
 public:
  virtual ~Tier() = default;

  virtual TierKind kind() const = 0;

  // Stores `payload` under `header.key`. The header must describe the payload (length; its
  // checksum is verified by tiers that say so). A key already present is left as it is and OK is
  // returned (a key names its bytes: same key, same block). NoSpace when the block cannot fit even
  // after eviction (everything pinned, or a disk that is full).
  virtual Status Put(const BlockHeader& header, std::span<const std::byte> payload,
                     const PutOptions& options = {}) = 0;

  // Copies the payload of `key` into `out` and returns its header. NotFound on a miss;
  // InvalidArgument when `out` is smaller than the payload; Corruption when the stored bytes fail
  // verification (the block is then dropped, so the next Get is a miss).
  virtual Result<BlockHeader> Get(const BlockKey& key, std::span<std::byte> out) = 0;

  // Location of `key` if present (no access is recorded). NotFound otherwise.
  virtual Result<BlockLocation> Find(const BlockKey& key) const = 0;

  // Pins `key` against eviction until Unpin or until `ttl` passes (pins expire, so a crashed
  // client cannot leak them). Pins nest: each Pin needs an Unpin. NotFound if absent.
  virtual Status Pin(const BlockKey& key, std::chrono::milliseconds ttl) = 0;
  virtual Status Unpin(const BlockKey& key) = 0;

  // Removes `key`. NotFound if absent; Unavailable while the block is pinned (an unexpired pin) or
  // being read, so bytes in use are never reused under a reader (retry after Unpin).
  virtual Status Erase(const BlockKey& key) = 0;

  virtual TierStats Stats() const = 0;
};

}  // namespace strata::store
