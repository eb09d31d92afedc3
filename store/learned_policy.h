// `learned`: the default eviction policy of the host, device and disk tiers. Prefix-aware
// eviction by sampled ranking, with online dead-block prediction learned from the offline optimum
// replayed on the recent past (docs/store.md, "Eviction").
//
// What it is made of, and where each idea comes from:
//  - Ranking by sampling (Psounis & Prabhakar, "A randomized web-cache replacement scheme",
//    INFOCOM'01; Redis; LHD, Beckmann et al., NSDI'18): eviction examines a window of candidates
//    from a sweeping cursor over the slot table and evicts the lowest-ranked, so the rank can be
//    any function of a block's metadata and a hit is a few relaxed atomic stores, no list surgery.
//  - Dead-block prediction trained on the offline optimum (Hawkeye, Jain & Lin, ISCA'16; its
//    successor Mockingjay, Shah et al., HPCA'22): a sample of the keys (1 in R by key hash) is
//    replayed through OPTgen, which decides in O(window) per access whether Belady's MIN, with
//    the sampled share of the capacity, would have kept the block from its previous access to this
//    one. Each decision trains a 3-bit counter of the *signature* the block had at its previous
//    access: cache-friendly (MIN kept it) or cache-averse.
//  - Signatures from chain-level features, SHiP-style (Wu et al., MICRO'11, which replaced the
//    PC by other signatures): the block's reuse count, its parent's reuse count (is this chain, a
//    conversation or a document, being reused?) and its depth in the chain (log2 bucket).
//  - A chain-level dead signal at eviction time: a block *bypassed* since its last access (its
//    parent was read later by a request that did not read it: the chain moved on along another
//    branch, or stopped short) ranks with the averse ones.
//  - Prefix order: a block with cached children is not a candidate while a leaf is, so a chain
//    always loses its tail before its head; the newest tenth of the capacity (by insert clock) is
//    not a candidate while an older block is (the `prefix` policy's nursery: a prefix stored a
//    moment ago is about to be loaded).
//  - Experts and a referee (LeCaR, Vietri et al., HotStorage'18; CACHEUS, Rodriguez et al.,
//    FAST'21): four orderings rank the same window of candidates, and the current leader's choice
//    is evicted. kDeadBlock: (averse or bypassed, then friendly), then least recently used with a
//    frequency credit (the policy before issue 17's second round); kRecency: LRU; kProbation:
//    blocks not reused since they were stored (or bypassed) first, oldest first (S3-FIFO's small
//    queue, ARC's T1); kFrequency: GDSF's clock + frequency. Every expert keeps prefix order.
//    The referee judges every expert on the sampled keys: an expert's nominee that is read again
//    within one capacity of inserts is a regret, whether it was evicted (its key comes back: a
//    ghost table of sampled victims) or left cached (its next hit). The leader is the expert with
//    the fewest regrets per nomination (decayed), replaced only when a challenger is better by 10%
//    and two standard errors, so that noise does not mix orderings.
//  Evicting a friendly block under kDeadBlock detrains its signature (Hawkeye).
//
// Per-slot state: a 16-byte node plus 1-2 bytes of the TinyLFU sketch (BytesPerSlot); fixed per
// policy, whatever the capacity: the predictor (128 counters), OPTgen (occupancy vector, history,
// slot map of the sampled keys) and the referee's ghost table (4 x the sampled capacity entries of
// 12 bytes), at most about 160 KiB.
//
// Thread-safety: as EvictionPolicy. OnAccess is relaxed atomic stores, plus the sampler's spin
// lock for sampled keys only (1 in R). OnInsert/OnRemove touch the node and its parent's child
// count atomically; PickVictim runs under the policy's mutex. Replays are deterministic: the
// cursor, the sample and the predictor depend on the event sequence only.
#pragma once

#include <cstdint>
#include <memory>

#include "store/eviction_policy.h"

namespace strata::store {

// REQUIRES: capacity in [1, kNoSlot).
std::unique_ptr<EvictionPolicy> MakeLearnedPolicy(uint32_t capacity);

}  // namespace strata::store
