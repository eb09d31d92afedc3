// BlockActivity: per-block facts the tiers do not keep, for the inspector (docs/operations.md,
// "Inspector"): when a block was stored on this node, how many lookups found it, when it was last
// looked up or loaded, its chain parent (for `top`, the hottest prefixes), and the stores begun
// but not committed yet (the miss reason "in_flight").
//
// Kept beside the tiers, not in their slots: the pool's per-block metadata has a budget of 64
// bytes (docs/store.md) that these 56 bytes would break. Bounded: at most kCapacity blocks, the
// oldest stored forgotten first (about 100 MiB at the cap); a block stored before the node
// started, pulled from a peer or forgotten shows age and hits as unknown (null), never 0.
//
// Thread-safety: all methods are thread-safe: one mutex, taken once per request (not per block),
// never held while calling out.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

#include "strata/block_key.h"
#include "strata/namespace.h"

namespace strata {

class BlockActivity {
 public:
  static constexpr size_t kCapacity = size_t{1} << 20;
  // A store begun (StoreBegin) and not committed within this time is forgotten (the client gave
  // up, or died).
  static constexpr int64_t kInFlightTtlMs = 60000;

  static int64_t NowMs() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }

  struct Facts {
    NamespaceId ns;
    std::optional<BlockKey> parent;
    int64_t stored_unix_ms = 0;       // 0: not seen stored (unknown age)
    uint64_t hits = 0;                // lookups that found the block since it was stored
    int64_t last_access_unix_ms = 0;  // last lookup hit or load; 0: none
  };

  struct StoredBlock {
    BlockKey key;
    std::optional<BlockKey> parent;
  };

  // Blocks of `ns` committed now (a new block: its hits start at 0).
  void Stored(const NamespaceId& ns, std::span<const StoredBlock> blocks) {
    const int64_t now = NowMs();
    std::lock_guard<std::mutex> lock(mu_);
    for (const StoredBlock& b : blocks) {
      in_flight_.erase(b.key);
      Facts& f = Entry(b.key);
      f = Facts{ns, b.parent, now, 0, 0};
    }
  }

  // Lookup hits: the matched prefix of a lookup (`ns`, when known, names a block seen first here).
  void Hit(std::span<const BlockKey> keys) {
    if (keys.empty()) return;
    const int64_t now = NowMs();
    std::lock_guard<std::mutex> lock(mu_);
    for (const BlockKey& k : keys) {
      auto it = facts_.find(k);
      if (it == facts_.end()) continue;  // not stored here since start: hits unknown
      ++it->second.hits;
      it->second.last_access_unix_ms = now;
    }
  }

  // Loads of these blocks (last access only; the lookup before a load counted the hit).
  void Accessed(std::span<const BlockKey> keys) {
    if (keys.empty()) return;
    const int64_t now = NowMs();
    std::lock_guard<std::mutex> lock(mu_);
    for (const BlockKey& k : keys) {
      auto it = facts_.find(k);
      if (it != facts_.end()) it->second.last_access_unix_ms = now;
    }
  }

  // A store of these (uncached) keys has begun: the client encodes them now.
  void Begun(std::span<const BlockKey> keys) {
    if (keys.empty()) return;
    const int64_t now = NowMs();
    std::lock_guard<std::mutex> lock(mu_);
    if (in_flight_.size() + keys.size() > kCapacity) ExpireInFlight(now);
    for (const BlockKey& k : keys)
      if (in_flight_.size() < kCapacity) in_flight_[k] = now;
  }

  std::optional<Facts> Find(const BlockKey& key) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = facts_.find(key);
    if (it == facts_.end()) return std::nullopt;
    return it->second;
  }

  // When a store of `key` began, if one is in flight now.
  std::optional<int64_t> InFlightSince(const BlockKey& key) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = in_flight_.find(key);
    if (it == in_flight_.end() || NowMs() - it->second > kInFlightTtlMs) return std::nullopt;
    return it->second;
  }

  // A hot prefix: the chain from `first` to `last` (`depth` blocks known here), found by `hits`
  // lookups.
  struct Prefix {
    BlockKey last;
    BlockKey first;
    NamespaceId ns;
    size_t depth = 0;
    uint64_t hits = 0;
    int64_t last_access_unix_ms = 0;
  };
  // The `limit` prefixes with the most hits among blocks `cached` says are still held (of `ns`
  // when given). Hits never grow along a chain (a lookup that finds a block found its parents),
  // so each prefix is listed at its deepest block with that hit count: a block is skipped when a
  // child has as many hits. Ties: the longer prefix first.
  std::vector<Prefix> Top(size_t limit, const std::optional<NamespaceId>& ns,
                          const std::function<bool(const BlockKey&)>& cached) const {
    std::unordered_map<BlockKey, Facts, BlockKeyHash> snap;
    {
      std::lock_guard<std::mutex> lock(mu_);
      snap = facts_;
    }
    std::unordered_map<BlockKey, uint64_t, BlockKeyHash> best_child;
    for (const auto& [k, f] : snap)
      if (f.parent) {
        uint64_t& b = best_child[*f.parent];
        b = std::max(b, f.hits);
      }
    std::vector<Prefix> out;
    for (const auto& [k, f] : snap) {
      if (f.hits == 0 || (ns && f.ns != *ns)) continue;
      auto c = best_child.find(k);
      if (c != best_child.end() && c->second >= f.hits) continue;
      Prefix p{k, k, f.ns, 1, f.hits, f.last_access_unix_ms};
      for (auto at = snap.find(k); at != snap.end() && at->second.parent && p.depth < kCapacity;) {
        auto up = snap.find(*at->second.parent);
        if (up == snap.end()) break;
        p.first = up->first;
        ++p.depth;
        at = up;
      }
      out.push_back(p);
    }
    std::sort(out.begin(), out.end(), [](const Prefix& a, const Prefix& b) {
      if (a.hits != b.hits) return a.hits > b.hits;
      if (a.depth != b.depth) return a.depth > b.depth;
      return a.last < b.last;
    });
    std::vector<Prefix> kept;
    for (const Prefix& p : out) {
      if (kept.size() >= limit) break;
      if (cached && !cached(p.last)) continue;
      kept.push_back(p);
    }
    return kept;
  }

 private:
  // REQUIRES: mu_ held.
  Facts& Entry(const BlockKey& key) {
    auto [it, fresh] = facts_.try_emplace(key);
    if (fresh) {
      order_.push_back(key);
      if (order_.size() > kCapacity) {
        facts_.erase(order_.front());
        order_.pop_front();
      }
    }
    return facts_[key];
  }
  // REQUIRES: mu_ held.
  void ExpireInFlight(int64_t now) {
    for (auto it = in_flight_.begin(); it != in_flight_.end();)
      it = now - it->second > kInFlightTtlMs ? in_flight_.erase(it) : std::next(it);
  }

  mutable std::mutex mu_;
  std::unordered_map<BlockKey, Facts, BlockKeyHash> facts_;      // GUARDED_BY(mu_)
  std::deque<BlockKey> order_;                                    // GUARDED_BY(mu_)
  std::unordered_map<BlockKey, int64_t, BlockKeyHash> in_flight_;  // GUARDED_BY(mu_)
};

}  // namespace strata
