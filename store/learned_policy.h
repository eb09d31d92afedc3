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
//    PC by other signatures): the block's reference count, its parent's (is this chain, a
//    conversation or a document, being reused?) and its depth in the chain (log2 bucket).
//  - A chain-level dead signal at eviction time: a block *bypassed* since its last access (its
//    parent was read later by a request that did not read it: the chain moved on along another
//    branch, or stopped short) ranks with the averse ones.
//  - Recently evicted keys (ARC's ghost lists, S3-FIFO's ghost queue, Yang et al., SOSP'23): a
//    direct-mapped table of key fingerprints (one 2-byte cell per slot) remembers about the last
//    capacity of evictions (the tier names the key: OnEvict), so a block stored again soon after
//    its eviction starts with its earlier references counted, not as a newcomer.
//  - Prefix order: a block with cached children is not a candidate while a leaf is, so a chain
//    always loses its tail before its head; the newest tenth of the capacity (by insert clock) is
//    not a candidate while an older block is (the `prefix` policy's nursery: a prefix stored a
//    moment ago is about to be loaded).
//  - Experts, followed by miniature simulations (the experts and the leader as LeCaR, Vietri et
//    al., HotStorage'18, and CACHEUS, Rodriguez et al., FAST'21; the judge as SHARDS, Waldspurger
//    et al., FAST'15 and ATC'17): five orderings of the same window of candidates, and the current
//    leader's choice is evicted. kDeadBlock: averse or bypassed first, then least recently used
//    with a frequency credit; kRecency: LRU; kFrequency: GDSF's clock + frequency; kFifo: S3-FIFO
//    (newcomers not reused go first, oldest first, while they are a tenth of the capacity or more;
//    else reused or returning blocks by recency with a credit per reference after the one that
//    brought the block into main, as S3-FIFO clears the frequency there); kArc: ARC (blocks
//    referenced once, T1, least recently used first while T1 exceeds the adaptive target p, else
//    blocks referenced at least twice, T2; T1 is "no reference remembered", the per-block count
//    every expert reads, and p is moved by ghost hits in the ARC simulation, which keeps ARC's
//    ghost lists for its sampled keys and is scaled to the real capacity). Every expert keeps
//    prefix order and the nursery. Each expert also runs alone on a miniature cache (capacity /
//    R') fed the references of a 1-in-R' key sample; the leader is the expert whose simulation hit
//    most (decayed), replaced only when a challenger leads by three standard deviations.
//  Evicting a friendly block under kDeadBlock detrains its signature (Hawkeye).
//  - Regret mixing (LearnedLeader::kRegret, the `regret` policy; LeCaR, Vietri et al.,
//    HotStorage'18; CACHEUS, Rodriguez et al., FAST'21): instead of following one leader, every
//    eviction is drawn between the two best experts, kArc and kFifo, by their weights; when they
//    disagree, the evicted key is remembered (for the simulations' key sample only, in a fixed
//    history of one entry per simulated block) with the expert that chose it and the time, and a
//    later miss on it cuts that expert's weight by exp(-0.45 x 0.005^(age / sampled capacity))
//    (LeCaR's learning rate and discount, time counted in sampled references).
//
// Per-slot state: a 16-byte node and 2 bytes of the evicted-keys table (BytesPerSlot: 18 from 16
// slots up; the table is sized to the capacity exactly, not rounded to a power of two);
// fixed per policy, whatever the capacity: the predictor (128 counters), OPTgen (occupancy vector
// and history for ~256 sampled blocks of capacity), the keys of the cached sampled blocks by slot,
// the five simulations (~1024 blocks each: entries, index and evicted-keys table; ARC's also
// its ghost lists) and, under kRegret, the regret history (6 bytes per simulated block), reported
// by FixedBytes().
//
// Thread-safety: as EvictionPolicy. OnAccess is relaxed atomic stores (one compare-and-swap on a
// block's first hit), plus the sampler's spin lock for sampled keys only. OnInsert/OnRemove touch
// the node and its parent's child count atomically; PickVictim runs under the policy's mutex.
// Replays are deterministic: the cursor, the samples, the predictor and the simulations depend on
// the event sequence only.
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>

#include "store/eviction_policy.h"
#include "strata/result.h"

namespace strata::store {

// Which expert's ordering evicts. kFollow: the expert whose miniature simulation leads (the
// `learned` policy). kRegret: the `arc` and `fifo` experts mixed eviction by eviction by LeCaR's
// regret weights (the `regret` policy, PolicyKind::kRegret; docs/store.md, "The eleventh
// pass"). The others force one expert for the whole run, to measure each ordering alone
// (`strata bench trace --learned-leader`, docs/store.md).
enum class LearnedLeader : uint8_t {
  kFollow,
  kDeadBlock,
  kRecency,
  kFrequency,
  kFifo,
  kArc,
  kRegret
};

// "follow", "dead_block", "recency", "frequency", "fifo", "arc" or "regret"; InvalidArgument
// otherwise.
Result<LearnedLeader> ParseLearnedLeader(std::string_view name);

struct LearnedOptions {
  LearnedLeader leader = LearnedLeader::kFollow;  // Default: follow the simulations.
};

// REQUIRES: capacity in [1, kNoSlot).
std::unique_ptr<EvictionPolicy> MakeLearnedPolicy(uint32_t capacity,
                                                  const LearnedOptions& options = {});

}  // namespace strata::store
