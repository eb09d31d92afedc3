// The classic eviction policies that `strata bench trace` compares the default policy with, behind
// the same EvictionPolicy interface (eviction_policy.h), so that they can also run in a tier
// (`--eviction-policy arc` ...). Each follows its paper and reference implementation; where the
// slot interface forces a deviation it is named at the class (classic_policies.cc).
//
//  - ARC: Megiddo & Modha, "ARC: A Self-Tuning, Low Overhead Replacement Cache", FAST'03 (Fig. 4).
//  - S3-FIFO: Yang et al., "FIFO queues are all you need for cache eviction", SOSP'23, and
//    libCacheSim's S3FIFOv0.c (the version the paper measured).
//  - W-TinyLFU: Einziger, Friedman & Manes, "TinyLFU: A Highly Efficient Cache Admission
//    Policy", ACM TOS 2017, as Caffeine runs it (1% LRU window, segmented LRU main cache with an
//    80% protected segment, TinyLFU admission from window to main).
//  - GDSF: Cherkasova, "Improving WWW Proxies Performance with Greedy-Dual-Size-Frequency
//    Caching Policy", HP Labs TR 98-69 (after Cao & Irani's GreedyDual-Size): priority
//    H = L + frequency x cost / size, with unit cost and size here (all blocks of a namespace
//    have one size), L the priority of the last victim (the aging clock).
//
// They are baselines: every call takes one spin lock (like `lru`), and ARC and S3-FIFO keep a
// ghost directory (a hash table of evicted keys) whose inserts may allocate on the eviction path.
// Thread-safety: as EvictionPolicy (eviction_policy.h).
#pragma once

#include <cstdint>
#include <memory>

#include "store/eviction_policy.h"

namespace strata::store {

// REQUIRES: capacity in [1, kNoSlot).
std::unique_ptr<EvictionPolicy> MakeArcPolicy(uint32_t capacity);
std::unique_ptr<EvictionPolicy> MakeS3FifoPolicy(uint32_t capacity);
std::unique_ptr<EvictionPolicy> MakeWTinyLfuPolicy(uint32_t capacity);
std::unique_ptr<EvictionPolicy> MakeGdsfPolicy(uint32_t capacity);

}  // namespace strata::store
