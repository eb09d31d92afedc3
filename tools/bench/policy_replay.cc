#include "policy_replay.h"

#include <algorithm>
#include <memory>

#include <queue>
#include <tuple>
#include <unordered_map>
#include <unordered_set>

#include "store/disk_admission.h"

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
        policy.OnEvict(victim, id_of[victim] * 0x9E3779B97F4A7C15ULL);
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

namespace {

uint64_t IdHash(uint64_t id) { return id * 0x9E3779B97F4A7C15ULL; }

// One tier of the two-tier replay: a policy over dense slots and the id <-> slot maps.
class ReplayTier {
 public:
  explicit ReplayTier(std::unique_ptr<store::EvictionPolicy> policy)
      : policy_(std::move(policy)), id_of_(policy_->capacity()), pinned_(policy_->capacity(), 0) {
    const uint32_t capacity = policy_->capacity();
    free_.resize(capacity);
    for (uint32_t i = 0; i < capacity; ++i) free_[i] = capacity - 1 - i;
  }
  store::EvictionPolicy& policy() { return *policy_; }
  uint32_t Find(uint64_t id) const {
    auto it = slot_of_.find(id);
    return it == slot_of_.end() ? store::kNoSlot : it->second;
  }
  void Touch(uint32_t slot, uint32_t epoch) {
    policy_->OnAccess(slot);
    pinned_[slot] = epoch;
  }
  // Makes room if needed: calls on_evict(victim id, had children) for the victim. False when
  // every block is pinned by this request.
  template <typename OnEvict>
  bool MakeRoom(uint32_t epoch, OnEvict&& on_evict) {
    if (!free_.empty()) return true;
    const uint32_t victim = policy_->PickVictim([&](uint32_t s) { return pinned_[s] != epoch; });
    if (victim == store::kNoSlot) return false;
    const bool shared = policy_->HasChildren(victim);
    const uint64_t id = id_of_[victim];
    policy_->OnEvict(victim, IdHash(id));
    slot_of_.erase(id);
    free_.push_back(victim);
    on_evict(id, shared);
    return true;
  }
  // REQUIRES: a free slot (MakeRoom), id not held.
  uint32_t Insert(uint64_t id, uint32_t parent, uint32_t epoch) {
    const uint32_t slot = free_.back();
    free_.pop_back();
    slot_of_.emplace(id, slot);
    id_of_[slot] = id;
    pinned_[slot] = epoch;
    policy_->OnInsert(slot, parent, IdHash(id));
    return slot;
  }

 private:
  std::unique_ptr<store::EvictionPolicy> policy_;
  std::unordered_map<uint64_t, uint32_t> slot_of_;
  std::vector<uint64_t> id_of_;
  std::vector<uint32_t> pinned_;  // == epoch: read or stored by the current request
  std::vector<uint32_t> free_;
};

}  // namespace

Result<TwoTierCounts> ReplayTwoTier(const Chains& chains, uint64_t host_capacity,
                                    uint64_t disk_capacity, store::PolicyKind kind,
                                    store::PolicyKind disk_kind,
                                    uint32_t admission_min_frequency) {
  for (uint64_t c : {host_capacity, disk_capacity})
    if (c == 0 || c >= store::kNoSlot)
      return Status::InvalidArgument("capacity must be in [1, 2^32-1) blocks");
  store::PolicyOptions options;
  options.kind = kind;
  auto host_policy = store::MakeEvictionPolicy(static_cast<uint32_t>(host_capacity), options);
  if (!host_policy.ok()) return host_policy.status();
  options.kind = disk_kind;
  auto disk_policy = store::MakeEvictionPolicy(static_cast<uint32_t>(disk_capacity), options);
  if (!disk_policy.ok()) return disk_policy.status();
  ReplayTier host(std::move(*host_policy)), disk(std::move(*disk_policy));
  // Sized as TieredStore sizes it: four keys per host block, at least 1024.
  store::DiskAdmission admission(std::max<uint64_t>(1024, host_capacity * 4),
                                 admission_min_frequency);
  constexpr uint64_t kNoParent = UINT64_MAX;
  std::unordered_map<uint64_t, uint64_t> parent_of;  // id -> its chain parent's id
  TwoTierCounts counts;
  uint32_t epoch = 0;
  for (const auto& chain : chains) {
    ++epoch;
    counts.requested += chain.size();
    for (uint64_t id : chain) {
      if (host.Find(id) != store::kNoSlot) {
        ++counts.host_hit;
      } else if (disk.Find(id) != store::kNoSlot) {
        ++counts.disk_hit;
      } else {
        break;
      }
    }
    uint32_t parent = store::kNoSlot;
    uint64_t parent_id = kNoParent;
    for (uint64_t id : chain) {
      admission.CountAccess(IdHash(id));
      parent_of.emplace(id, parent_id);
      parent_id = id;
      const uint32_t in_host = host.Find(id);
      if (in_host != store::kNoSlot) {
        host.Touch(in_host, epoch);
        parent = in_host;
        continue;
      }
      const uint32_t on_disk = disk.Find(id);
      if (on_disk != store::kNoSlot) {
        disk.Touch(on_disk, epoch);
        ++counts.promoted;
      }
      const bool room = host.MakeRoom(epoch, [&](uint64_t victim, bool shared) {
        if (disk.Find(victim) != store::kNoSlot) return;  // already on disk
        if (!admission.Admit(IdHash(victim), shared)) {
          ++counts.rejected;
          return;
        }
        if (!disk.MakeRoom(epoch, [](uint64_t, bool) {})) return;
        const auto p = parent_of.find(victim);
        const uint32_t disk_parent =
            p == parent_of.end() || p->second == kNoParent ? store::kNoSlot : disk.Find(p->second);
        disk.Insert(victim, disk_parent, 0);
        ++counts.demoted;
      });
      if (!room) break;  // the request alone fills host
      parent = host.Insert(id, parent, epoch);
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
