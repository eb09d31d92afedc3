// FrequencySketch: TinyLFU's count-min sketch (Einziger, Friedman, Manes, "TinyLFU: A Highly
// Efficient Cache Admission Policy", 2017). Four 4-bit counters per key in 64-bit words, about
// 8 bits per tracked key at width = capacity; when `sample_size` increments have been recorded
// every counter is halved, so the estimate means "recently frequent" and old popularity fades.
// It remembers keys that are no longer cached, which is what lets a tier refuse one-hit wonders.
//
// Thread-safety: thread-safe and lock-free (relaxed atomic counters). Concurrent increments and
// the halving pass may lose a count now and then; a sketch is an estimate anyway.
#pragma once

#include <cstddef>
#include <cstdint>
#include <atomic>
#include <memory>

namespace strata::store {

class FrequencySketch {
 public:
  // Sized for about `expected_keys` distinct keys; ages after 10 x expected_keys increments
  // (TinyLFU's sample size). REQUIRES: expected_keys > 0.
  explicit FrequencySketch(uint64_t expected_keys);

  // Counts one occurrence of `key_hash` (any well-mixed 64-bit hash).
  void Increment(uint64_t key_hash);
  // Estimated occurrences of `key_hash` since the last agings, saturating at 15.
  uint32_t Estimate(uint64_t key_hash) const;

  size_t MemoryBytes() const { return words_ * sizeof(uint64_t); }

 private:
  uint32_t Index(uint64_t key_hash, int row) const;
  void Age();

  std::unique_ptr<std::atomic<uint64_t>[]> table_;  // 16 counters of 4 bits per word
  uint64_t words_;
  uint64_t mask_;  // words_ - 1 (a power of two)
  uint64_t sample_size_;
  std::atomic<uint64_t> additions_{0};
};

}  // namespace strata::store
