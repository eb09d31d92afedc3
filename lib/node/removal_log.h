// RemovalLog: the most recent blocks that left a node's host tier or its disk tier, and when (the
// latest of the two: a host eviction that demoted is superseded by the disk eviction), so that
// the inspector can say "evicted at T" instead of "absent" for a prefix that missed. Bounded: the
// oldest entries are forgotten first (kCapacity entries, about 3 MiB).
//
// Thread-safety: all methods are thread-safe. Record is called by the host tier's removal hook
// and the disk tier's eviction hook, possibly with the pool's or the disk tier's lock held: it takes one short mutex and never calls out.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "node/inspect.h"
#include "strata/block_key.h"

namespace strata {

class RemovalLog {
 public:
  static constexpr size_t kCapacity = 65536;

  // `cleared`: erased by a Clear (else evicted).
  void Record(const BlockKey& key, bool cleared) {
    const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
    std::lock_guard<std::mutex> lock(mu_);
    auto [it, fresh] = entries_.try_emplace(key, Entry{now, cleared});
    if (!fresh) {
      it->second = Entry{now, cleared};
      return;
    }
    order_.push_back(key);
    if (order_.size() > kCapacity) {
      entries_.erase(order_.front());
      order_.pop_front();
    }
  }

  std::optional<inspect::Removal> Find(const BlockKey& key) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(key);
    if (it == entries_.end()) return std::nullopt;
    return inspect::Removal{it->second.unix_ms, it->second.cleared ? "cleared" : "evicted"};
  }

 private:
  struct Entry {
    int64_t unix_ms;
    bool cleared;
  };
  mutable std::mutex mu_;
  std::unordered_map<BlockKey, Entry, BlockKeyHash> entries_;  // GUARDED_BY(mu_)
  std::deque<BlockKey> order_;                                 // GUARDED_BY(mu_)
};

}  // namespace strata
