// DiskAdmission: write-back's rule for which host victims are written to the disk tier, one object
// for the store (TieredStore::OnHostEvict) and for `strata bench trace --host-fraction F
// --disk-fraction G`, which replays a host tier over a disk tier with it (tools/bench/
// policy_replay.h), so that the admission rule measured is the one the node runs.
//
// The rule (docs/store.md, "Hierarchy"): a victim is admitted when the frequency sketch has seen
// its key at least `min_frequency` times (no one-hit wonders on the SSD), or when it is a shared
// prefix (it had cached children when it was evicted). Every put and get of a key counts once.
//
// Thread-safety: thread-safe and lock-free (FrequencySketch's relaxed counters).
#pragma once

#include <cstdint>

#include "store/frequency_sketch.h"

namespace strata::store {

class DiskAdmission {
 public:
  // The largest useful min_frequency: the sketch's counts saturate at 15 (FrequencySketch), so a
  // larger one would admit shared prefixes only.
  static constexpr uint32_t kMaxMinFrequency = 15;

  // Sized for about `expected_keys` distinct keys (FrequencySketch). min_frequency 0 or 1 admits
  // every victim.
  DiskAdmission(uint64_t expected_keys, uint32_t min_frequency)
      : sketch_(expected_keys), min_frequency_(min_frequency) {}

  // A put or get of the key with this hash (any well-mixed 64-bit hash).
  void CountAccess(uint64_t key_hash) { sketch_.Increment(key_hash); }
  // Whether a host victim with this key hash goes to disk; `shared`: it had cached children.
  bool Admit(uint64_t key_hash, bool shared) const {
    return shared || sketch_.Estimate(key_hash) >= min_frequency_;
  }

 private:
  FrequencySketch sketch_;
  const uint32_t min_frequency_;
};

}  // namespace strata::store
