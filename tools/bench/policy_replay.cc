#include "policy_replay.h"

#include <queue>
#include <tuple>
#include <unordered_map>
#include <unordered_set>

namespace strata::bench {

uint64_t UniqueBlocks(const Chains& chains) {
  std::unordered_set<uint64_t> u;
  for (const auto& c : chains) u.insert(c.begin(), c.end());
  return u.size();
}

ReplayCounts ReplayPolicy(const Chains& chains, store::EvictionPolicy& policy) {
  const uint32_t capacity = policy.capacity();
  std::unordered_map<uint64_t, uint32_t> slot_of;
  slot_of.reserve(capacity * 2);
  std::vector<uint64_t> id_of(capacity);
  std::vector<uint32_t> in_use_epoch(capacity, 0);  // == epoch: the slot belongs to this request
  std::vector<uint32_t> free_slots(capacity);
  for (uint32_t i = 0; i < capacity; ++i) free_slots[i] = capacity - 1 - i;
  ReplayCounts counts;
  uint32_t epoch = 0;
  for (const auto& chain : chains) {
    ++epoch;
    size_t k = 0;
    while (k < chain.size() && slot_of.count(chain[k])) ++k;
    counts.hit += k;
    counts.requested += chain.size();
    uint32_t parent = store::kNoSlot;
    for (uint64_t id : chain) {
      auto it = slot_of.find(id);
      if (it != slot_of.end()) {
        policy.OnAccess(it->second);
        in_use_epoch[it->second] = epoch;
        parent = it->second;
        continue;
      }
      if (free_slots.empty()) {
        uint32_t victim =
            policy.PickVictim([&](uint32_t s) { return in_use_epoch[s] != epoch; });
        if (victim == store::kNoSlot) break;  // the request alone fills the cache
        policy.OnRemove(victim);
        slot_of.erase(id_of[victim]);
        free_slots.push_back(victim);
      }
      uint32_t slot = free_slots.back();
      free_slots.pop_back();
      slot_of.emplace(id, slot);
      id_of[slot] = id;
      in_use_epoch[slot] = epoch;
      policy.OnInsert(slot, parent, id * 0x9E3779B97F4A7C15ULL);
      parent = slot;
    }
  }
  return counts;
}

Result<ReplayCounts> ReplayPolicy(const Chains& chains, uint64_t capacity,
                                  store::PolicyKind kind) {
  if (capacity == 0 || capacity >= store::kNoSlot)
    return Status::InvalidArgument("capacity must be in [1, 2^32-1) blocks");
  store::PolicyOptions options;
  options.kind = kind;
  auto policy = store::MakeEvictionPolicy(static_cast<uint32_t>(capacity), options);
  if (!policy.ok()) return policy.status();
  return ReplayPolicy(chains, **policy);
}

ReplayCounts ReplayBelady(const Chains& chains, uint64_t capacity) {
  constexpr uint64_t kNever = UINT64_MAX;
  // next_use[r][j]: index of the next request (after r) whose chain contains chains[r][j].
  std::vector<std::vector<uint64_t>> next_use(chains.size());
  std::unordered_map<uint64_t, uint64_t> upcoming;
  for (size_t r = chains.size(); r-- > 0;) {
    next_use[r].resize(chains[r].size());
    for (size_t j = 0; j < chains[r].size(); ++j) {
      auto it = upcoming.find(chains[r][j]);
      next_use[r][j] = it == upcoming.end() ? kNever : it->second;
    }
    for (uint64_t id : chains[r]) upcoming[id] = r;
  }
  std::unordered_map<uint64_t, uint64_t> cached;  // id -> next use
  std::priority_queue<std::tuple<uint64_t, size_t, uint64_t>> heap;  // (next use, depth, id), lazy
  ReplayCounts counts;
  for (size_t r = 0; r < chains.size(); ++r) {
    const auto& chain = chains[r];
    size_t k = 0;
    while (k < chain.size() && cached.count(chain[k])) ++k;
    counts.hit += k;
    counts.requested += chain.size();
    for (size_t j = 0; j < chain.size(); ++j) {
      cached[chain[j]] = next_use[r][j];
      heap.emplace(next_use[r][j], j, chain[j]);
    }
    while (cached.size() > capacity) {
      auto [nu, depth, id] = heap.top();
      heap.pop();
      auto it = cached.find(id);
      if (it != cached.end() && it->second == nu) cached.erase(it);
    }
  }
  return counts;
}

ReplayCounts ReplayInfinite(const Chains& chains) {
  std::unordered_set<uint64_t> seen;
  ReplayCounts counts;
  for (const auto& chain : chains) {
    size_t k = 0;
    while (k < chain.size() && seen.count(chain[k])) ++k;
    counts.hit += k;
    counts.requested += chain.size();
    seen.insert(chain.begin(), chain.end());
  }
  return counts;
}

}  // namespace strata::bench
