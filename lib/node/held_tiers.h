// HeldTiers: which of this node's announced tiers (host, disk) hold each block, so that the
// cluster directory hears "added" when the first of them gains a block and "evicted" when the
// last loses it (docs/cluster.md, "Disk-tier blocks"). A block demoted from host to disk is
// withdrawn at the host eviction and announced again when its disk write lands (the two go in
// the same announce batch unless the write takes longer than announce_interval_ms).
//
// Cost: one of 64 mutex stripes and an unordered_map entry (one byte of mask) per block held.
// Thread-safety: all methods are thread-safe; Change calls `announce` outside the stripe lock
// and is meant for TieredStoreOptions::on_tier_change (it may run with a tier's lock held: it
// takes only its own stripe).
#pragma once

#include <array>
#include <cstdint>
#include <mutex>
#include <unordered_map>

#include "store/thread_annotations.h"
#include "store/tier.h"
#include "strata/block_key.h"

namespace strata {

class HeldTiers {
 public:
  enum class Transition : uint8_t { kNone, kFirst, kLast };

  // `tier` gained (`added`) or lost `key`. kFirst when no announced tier held it before, kLast
  // when none holds it now. The device tier is not announced (peers are served from host).
  Transition Change(store::TierKind tier, const BlockKey& key, bool added) {
    const uint8_t bit = tier == store::TierKind::kHost   ? 1
                        : tier == store::TierKind::kDisk ? 2
                                                         : 0;
    if (bit == 0) return Transition::kNone;
    Stripe& s = stripes_[(key.low >> 7) % kStripes];
    std::lock_guard<std::mutex> lock(s.mu);
    if (added) {
      uint8_t& mask = s.map[key];
      const bool first = mask == 0;
      mask |= bit;
      return first ? Transition::kFirst : Transition::kNone;
    }
    auto it = s.map.find(key);
    if (it == s.map.end() || (it->second & bit) == 0) return Transition::kNone;
    it->second &= static_cast<uint8_t>(~bit);
    if (it->second != 0) return Transition::kNone;
    s.map.erase(it);
    return Transition::kLast;
  }

  // Whether some announced tier holds `key`.
  bool Holds(const BlockKey& key) const {
    const Stripe& s = stripes_[(key.low >> 7) % kStripes];
    std::lock_guard<std::mutex> lock(s.mu);
    return s.map.count(key) != 0;
  }

 private:
  struct Stripe {
    mutable std::mutex mu;
    std::unordered_map<BlockKey, uint8_t, BlockKeyHash> map GUARDED_BY(mu);
  };
  static constexpr size_t kStripes = 64;
  std::array<Stripe, kStripes> stripes_;
};

}  // namespace strata
