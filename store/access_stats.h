// AccessStats: what readers of the tiered store asked for and where it was found, in the units an
// operator computes a hit ratio from (docs/stats.md):
//
//  - Lookups: each lookup asks about a chain of keys and matches its longest cached prefix. Every
//    key asked is either a hit (in the matched prefix; attributed to the fastest tier holding it)
//    or a miss (past the prefix), so hits summed over tiers + misses = blocks asked, always.
//    A tier's misses are the blocks a lookup looked for in it and did not find there or in a
//    faster tier (cascading: device, host, disk, peer).
//  - Served: blocks (and payload bytes) handed to loads, by the tier they came from.
//  - Per namespace: hits, misses, blocks and bytes stored. A lookup request does not name its
//    namespace (the chain's keys are hashes of it): a lookup that matched a block is attributed
//    to that block's namespace; one that matched nothing is counted in `unattributed`. At most
//    `max_namespaces` namespaces are tracked one by one; the rest are summed in `other`, so the
//    memory is bounded whatever clients send.
//
// Thread-safety: all methods are thread-safe. Scalar counters are relaxed atomics (a snapshot is
// not one instant: totals taken while requests run may differ by the requests in flight); the
// namespace table is under a spin lock (one short critical section per request, not per block).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "store/spin_lock.h"
#include "store/thread_annotations.h"
#include "strata/block_key.h"
#include "strata/tier.h"

namespace strata::store {

// Where a block was found or served from is a strata::Tier (kDevice, kHost, kDisk, or kRemote for
// a peer). The per-tier counters are kept fastest first: TierRank gives the index.
inline constexpr size_t kNumSources = 4;
inline size_t TierRank(::strata::Tier tier) {
  switch (tier) {
    case ::strata::Tier::kDevice: return 0;
    case ::strata::Tier::kHost: return 1;
    case ::strata::Tier::kDisk: return 2;
    default: return 3;  // kRemote
  }
}

struct NamespaceCounts {
  uint64_t hits = 0;           // blocks of lookups that matched
  uint64_t misses = 0;         // blocks of lookups past the matched prefix
  uint64_t blocks_stored = 0;  // blocks committed by stores (new blocks only)
  uint64_t bytes_stored = 0;   // their payload bytes
  uint64_t blocks_served = 0;  // blocks handed to loads
  uint64_t bytes_served = 0;   // their payload bytes
};

struct AccessSnapshot {
  uint64_t lookups = 0;          // lookup requests
  uint64_t empty_lookups = 0;    // lookups that matched no block
  uint64_t lookup_blocks = 0;    // keys asked
  uint64_t hit_blocks = 0;       // keys in the matched prefixes
  uint64_t miss_blocks = 0;      // lookup_blocks - hit_blocks
  std::array<uint64_t, kNumSources> hits{};           // hit_blocks by fastest tier holding them
  std::array<uint64_t, kNumSources> served_blocks{};  // blocks handed to loads, by source
  std::array<uint64_t, kNumSources> served_bytes{};   // their payload bytes
  std::vector<std::pair<NamespaceId, NamespaceCounts>> namespaces;  // at most max_namespaces
  NamespaceCounts other;         // namespaces past the cap
  NamespaceCounts unattributed;  // misses of lookups that matched nothing (namespace unknown)

  // Blocks that lookups looked for in `source` and found neither there nor in a faster tier.
  uint64_t Misses(::strata::Tier source) const;
};

class AccessStats {
 public:
  // Default cap: 256 namespaces (about 24 KiB).
  static constexpr size_t kDefaultMaxNamespaces = 256;
  explicit AccessStats(size_t max_namespaces = kDefaultMaxNamespaces);

  // A lookup of `asked` keys whose first where.size() keys were found, key i in where[i]; `ns` is
  // the namespace of the matched blocks (nullopt when none matched).
  // REQUIRES: where.size() <= asked.
  void RecordLookup(const std::optional<NamespaceId>& ns, std::span<const ::strata::Tier> where,
                    size_t asked);
  // A block of `ns` with `bytes` of payload handed to a load from `source`.
  void RecordServed(const NamespaceId& ns, ::strata::Tier source, uint64_t bytes);
  // A new block of `ns` with `bytes` of payload committed by a store.
  void RecordStored(const NamespaceId& ns, uint64_t bytes);

  AccessSnapshot Snapshot() const;

 private:
  // The counts of `ns`: its own entry, or `other_` once the table is full.
  NamespaceCounts& CountsOf(const NamespaceId& ns) REQUIRES_LOCK(ns_mu_);

  const size_t max_namespaces_;
  std::atomic<uint64_t> lookups_{0}, empty_lookups_{0}, lookup_blocks_{0};
  std::array<std::atomic<uint64_t>, kNumSources> hits_{};
  std::array<std::atomic<uint64_t>, kNumSources> served_blocks_{};
  std::array<std::atomic<uint64_t>, kNumSources> served_bytes_{};

  mutable SpinLock ns_mu_;
  // A flat table scanned linearly: a handful of namespaces is the common case, and the cap bounds
  // the scan.
  std::vector<std::pair<NamespaceId, NamespaceCounts>> namespaces_ GUARDED_BY(ns_mu_);
  NamespaceCounts other_ GUARDED_BY(ns_mu_);
  NamespaceCounts unattributed_ GUARDED_BY(ns_mu_);
};

}  // namespace strata::store
