// BlockTags: the tags (PutOptions::tag, opaque bytes) of the blocks a TieredStore holds, kept
// while any of its tiers holds the block or a demotion carries it to disk. The store records each
// tier's gain and loss here (Changed) and hands the tag to its on_tier_change hook, so a block's
// tag reaches every event about it: stored in host, demoted to disk, promoted back, evicted, and
// (the disk tier keeps it in its index record) after a restart.
//
// Cost: a store that never sees a tag pays one relaxed atomic load per change. Tagged blocks take
// one of 64 mutex stripes and an unordered_map entry (the tag's bytes and a tier mask).
//
// Thread-safety: all methods are thread-safe; no method calls out while holding a stripe.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "store/thread_annotations.h"
#include "store/tier.h"

namespace strata::store {

class BlockTags {
 public:
  // `key` is about to enter a tier with `tag` (empty: nothing recorded). A tag already recorded
  // for `key` is kept (the same key names the same bytes).
  void Set(const BlockKey& key, std::string_view tag);
  // `tier` gained (`added`) or lost `key`. Returns the block's tag (empty when it has none) and
  // forgets it once no tier and no demotion holds the block.
  std::string Changed(TierKind tier, const BlockKey& key, bool added);
  // A demotion to disk carries `key` (from the host eviction until its disk write ended):
  // the tag outlives the host copy meanwhile. Each Hold is ended by one Release.
  void Hold(const BlockKey& key);
  void Release(const BlockKey& key);
  // Forgets `key`'s tag unless a tier or a demotion holds the block (a put that failed).
  void DropIfUnheld(const BlockKey& key);
  // The tag of `key` (empty: none).
  std::string Get(const BlockKey& key) const;
  // Tagged blocks tracked now.
  uint64_t size() const { return count_.load(std::memory_order_relaxed); }

 private:
  struct Entry {
    std::string tag;
    uint8_t tiers = 0;     // bit per TierKind that holds the block
    uint32_t holds = 0;    // demotions in flight
  };
  struct Stripe {
    mutable std::mutex mu;
    std::unordered_map<BlockKey, Entry, BlockKeyHash> map GUARDED_BY(mu);
  };
  static constexpr size_t kStripes = 64;
  Stripe& StripeOf(const BlockKey& key) { return stripes_[(key.low >> 7) % kStripes]; }
  const Stripe& StripeOf(const BlockKey& key) const {
    return stripes_[(key.low >> 7) % kStripes];
  }
  // Erases it->second when nothing holds it. REQUIRES: s.mu held.
  void EraseIfFree(Stripe& s, std::unordered_map<BlockKey, Entry, BlockKeyHash>::iterator it);

  std::array<Stripe, kStripes> stripes_;
  std::atomic<uint64_t> count_{0};
};

}  // namespace strata::store
