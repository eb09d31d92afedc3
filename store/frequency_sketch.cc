#include "store/frequency_sketch.h"

#include <algorithm>
#include <bit>

namespace strata::store {
namespace {

constexpr uint64_t kSeeds[4] = {0x9E3779B97F4A7C15ULL, 0xC2B2AE3D27D4EB4FULL,
                                0x165667B19E3779F9ULL, 0x27D4EB2F165667C5ULL};

uint64_t Mix(uint64_t x) {  // splitmix64 finaliser
  x ^= x >> 30;
  x *= 0xBF58476D1CE4E5B9ULL;
  x ^= x >> 27;
  x *= 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

}  // namespace

FrequencySketch::FrequencySketch(uint64_t expected_keys) {
  words_ = std::bit_ceil(std::max<uint64_t>(expected_keys / 4, 8));
  table_.reset(new std::atomic<uint64_t>[words_]);
  for (uint64_t i = 0; i < words_; ++i) table_[i].store(0, std::memory_order_relaxed);
  mask_ = words_ - 1;
  sample_size_ = std::max<uint64_t>(expected_keys, 1) * 10;
}

// Counter `row` of a key: word from the row's hash, nibble from the row's hash's top bits. The
// index packs (word << 4 | nibble).
uint32_t FrequencySketch::Index(uint64_t key_hash, int row) const {
  const uint64_t h = Mix(key_hash + kSeeds[row]);
  return static_cast<uint32_t>(((h & mask_) << 4) | (h >> 60));
}

void FrequencySketch::Increment(uint64_t key_hash) {
  bool added = false;
  for (int row = 0; row < 4; ++row) {
    const uint32_t i = Index(key_hash, row);
    auto& word = table_[i >> 4];
    const int shift = static_cast<int>(i & 15) * 4;
    uint64_t w = word.load(std::memory_order_relaxed);
    while (((w >> shift) & 0xF) < 15) {
      if (word.compare_exchange_weak(w, w + (uint64_t{1} << shift), std::memory_order_relaxed)) {
        added = true;
        break;
      }
    }
  }
  if (added && additions_.fetch_add(1, std::memory_order_relaxed) + 1 == sample_size_) Age();
}

uint32_t FrequencySketch::Estimate(uint64_t key_hash) const {
  uint32_t est = 15;
  for (int row = 0; row < 4; ++row) {
    const uint32_t i = Index(key_hash, row);
    est = std::min<uint32_t>(
        est, (table_[i >> 4].load(std::memory_order_relaxed) >> ((i & 15) * 4)) & 0xF);
  }
  return est;
}

void FrequencySketch::Age() {
  // Halve every nibble. Run by the thread whose increment reached the sample size.
  for (uint64_t i = 0; i < words_; ++i) {
    uint64_t w = table_[i].load(std::memory_order_relaxed);
    while (!table_[i].compare_exchange_weak(w, (w >> 1) & 0x7777777777777777ULL,
                                            std::memory_order_relaxed)) {
    }
  }
  additions_.fetch_sub(sample_size_ / 2, std::memory_order_relaxed);
}

}  // namespace strata::store
