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

}  // namespace strata::bench
