// Offline replay of request block chains through cache models, for `strata bench trace` and
// `strata demo` (which compares the daemon's hit ratio with these on the very requests it sent).
//
// Replay model (docs/store.md, "Eviction"): each request is a chain of block ids (equal ids mean
// an equal prefix). A request hits the longest cached prefix of its chain; then all its blocks are
// inserted (or touched), in chain order, each with its predecessor as parent. While a request is
// served its blocks are in use (pinned), so they are not eviction candidates for that request.
//
//  - ReplayPolicy runs store::MakeEvictionPolicy's objects, the same code the host and disk tiers
//    run; block ids map to the policy's dense slots through an id table, as BlockKeys map to slots
//    in a tier.
//  - ReplayBelady is the offline optimum: it evicts the cached block whose next request is
//    furthest in the future (blocks never used again first).
//  - ReplayInfinite never evicts: the bound every capacity approaches.
//
// Thread-safety: the functions share no state; a policy object is used by one replay at a time.
#pragma once

#include <cstdint>
#include <vector>

#include "store/eviction_policy.h"

namespace strata::bench {

// One request's block ids, in chain order.
using Chains = std::vector<std::vector<uint64_t>>;

struct ReplayCounts {
  uint64_t hit = 0;        // blocks in the matched prefixes
  uint64_t requested = 0;  // blocks asked
  double Ratio() const { return requested ? static_cast<double>(hit) / requested : 0; }
};

// Distinct block ids in `chains`.
uint64_t UniqueBlocks(const Chains& chains);

// Replays `chains` through `policy`, with policy.capacity() blocks of room.
ReplayCounts ReplayPolicy(const Chains& chains, store::EvictionPolicy& policy);

// Replays `chains` through a store::PolicyKind with `capacity` blocks. InvalidArgument for a
// capacity outside [1, 2^32 - 1).
Result<ReplayCounts> ReplayPolicy(const Chains& chains, uint64_t capacity, store::PolicyKind kind);

// The offline optimum with `capacity` blocks. Ties (blocks next used by the same request) break
// towards the deeper block, so that a prefix is never stranded by evicting its head first.
ReplayCounts ReplayBelady(const Chains& chains, uint64_t capacity);

// A cache that never evicts.
ReplayCounts ReplayInfinite(const Chains& chains);

// A host tier over a disk tier, as TieredStore's write-back runs them: a request hits the longest
// prefix of its chain held in either tier (a block in host is a host hit, else a disk hit); every
// block of it is counted once by the disk admission sketch (a put or a get in the store), then read
// or stored in host; a disk hit is promoted (copied) into host; a host victim that is not on disk
// already is demoted to disk when store::DiskAdmission admits it (the store's object), else
// dropped. Host runs `kind`, disk `disk_kind` (host_capacity and disk_capacity blocks).
struct TwoTierCounts {
  uint64_t host_hit = 0;   // prefix blocks found in host
  uint64_t disk_hit = 0;   // prefix blocks found on disk only
  uint64_t requested = 0;  // blocks asked
  uint64_t demoted = 0;    // host victims written to disk
  uint64_t rejected = 0;   // host victims the admission filter kept off the disk
  uint64_t promoted = 0;   // disk blocks copied back into host
  double HostRatio() const { return requested ? static_cast<double>(host_hit) / requested : 0; }
  double DiskRatio() const { return requested ? static_cast<double>(disk_hit) / requested : 0; }
  double Ratio() const { return HostRatio() + DiskRatio(); }
};
// InvalidArgument for a capacity outside [1, 2^32 - 1).
Result<TwoTierCounts> ReplayTwoTier(const Chains& chains, uint64_t host_capacity,
                                    uint64_t disk_capacity, store::PolicyKind kind,
                                    store::PolicyKind disk_kind,
                                    uint32_t admission_min_frequency);

}  // namespace strata::bench
