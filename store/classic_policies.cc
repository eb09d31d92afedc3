#include "store/classic_policies.h"

#include <algorithm>
#include <mutex>
#include <set>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "store/frequency_sketch.h"
#include "store/spin_lock.h"
#include "store/thread_annotations.h"

namespace strata::store {
namespace {

// Doubly-linked lists over one shared array of links (ids are slots or ghost entries); an id is in
// at most one list. Front = most recent, back = oldest.
struct Links {
  uint32_t prev = kNoSlot;
  uint32_t next = kNoSlot;
};

class IdList {
 public:
  uint32_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  uint32_t front() const { return head_; }
  uint32_t back() const { return tail_; }

  void PushFront(std::vector<Links>& l, uint32_t id) {
    l[id].prev = kNoSlot;
    l[id].next = head_;
    if (head_ != kNoSlot) l[head_].prev = id; else tail_ = id;
    head_ = id;
    ++size_;
  }
  void Remove(std::vector<Links>& l, uint32_t id) {
    if (l[id].prev != kNoSlot) l[l[id].prev].next = l[id].next; else head_ = l[id].next;
    if (l[id].next != kNoSlot) l[l[id].next].prev = l[id].prev; else tail_ = l[id].prev;
    l[id].prev = l[id].next = kNoSlot;
    --size_;
  }

 private:
  uint32_t head_ = kNoSlot;
  uint32_t tail_ = kNoSlot;
  uint32_t size_ = 0;
};

// A FIFO/LRU directory of evicted keys (ARC's B1/B2, S3-FIFO's G): up to `limit` entries in
// `lists` lists, a key in at most one. Baseline-grade: the hash map allocates.
class GhostDirectory {
 public:
  GhostDirectory(uint32_t limit, int lists)
      : links_(limit), keys_(limit), list_of_(limit, 0), lists_(lists) {
    free_.reserve(limit);
    for (uint32_t i = limit; i-- > 0;) free_.push_back(i);
  }

  // The list holding `key` (1-based), or 0.
  int Find(uint64_t key) const {
    auto it = index_.find(key);
    return it == index_.end() ? 0 : list_of_[it->second];
  }
  void Erase(uint64_t key) {
    auto it = index_.find(key);
    if (it == index_.end()) return;
    const uint32_t g = it->second;
    lists_[list_of_[g] - 1].Remove(links_, g);
    list_of_[g] = 0;
    index_.erase(it);
    free_.push_back(g);
  }
  // Adds `key` as the newest of list `list` (1-based); when full, first drops the oldest of
  // list `drop_first` (1-based), or of any list.
  void Add(uint64_t key, int list, int drop_first) {
    Erase(key);
    if (free_.empty()) {
      int victim = drop_first;
      if (lists_[victim - 1].empty())
        for (victim = 1; lists_[victim - 1].empty(); ++victim) {
        }
      DropOldest(victim);
    }
    const uint32_t g = free_.back();
    free_.pop_back();
    keys_[g] = key;
    list_of_[g] = static_cast<uint8_t>(list);
    lists_[list - 1].PushFront(links_, g);
    index_[key] = g;
  }
  void DropOldest(int list) {
    if (lists_[list - 1].empty()) return;
    Erase(keys_[lists_[list - 1].back()]);
  }
  uint32_t size(int list) const { return lists_[list - 1].size(); }

 private:
  std::vector<Links> links_;
  std::vector<uint64_t> keys_;
  std::vector<uint8_t> list_of_;
  std::vector<IdList> lists_;
  std::vector<uint32_t> free_;
  std::unordered_map<uint64_t, uint32_t> index_;
};

// Per-slot bookkeeping every classic policy shares: the parent link and child counts (for
// HasChildren, which the tiered store's disk admission reads), the key hash (ghosts, sketches),
// and a saturating hit count. Incarnations keep a child that outlives its parent's slot from
// decrementing the slot's next occupant.
class ChainPolicy : public EvictionPolicy {
 public:
  explicit ChainPolicy(uint32_t capacity) : EvictionPolicy(capacity), nodes_(capacity) {}

  void OnInsert(uint32_t slot, uint32_t parent, uint64_t key_hash) final {
    std::lock_guard lock(mu_);
    Node& n = nodes_[slot];
    if (n.live) Forget(slot);
    n.live = true;
    ++n.gen;
    n.key = key_hash;
    n.children = 0;
    n.hits = 0;
    n.parent = kNoSlot;
    if (parent != kNoSlot && nodes_[parent].live) {
      n.parent = parent;
      n.parent_gen = nodes_[parent].gen;
      if (nodes_[parent].children < UINT16_MAX) ++nodes_[parent].children;
    }
    Inserted(slot, key_hash);
  }
  void OnAccess(uint32_t slot) final {
    std::lock_guard lock(mu_);
    Node& n = nodes_[slot];
    if (!n.live) return;
    if (n.hits < UINT8_MAX) ++n.hits;
    Accessed(slot);
  }
  void OnRemove(uint32_t slot) final {
    std::lock_guard lock(mu_);
    if (!nodes_[slot].live) return;
    Forget(slot);
  }
  uint32_t PickVictim(FunctionRef<bool(uint32_t)> evictable) final {
    std::lock_guard lock(mu_);
    victim_ = Pick(evictable);
    return victim_;
  }
  bool HasChildren(uint32_t slot) const final {
    std::lock_guard lock(mu_);
    return nodes_[slot].live && nodes_[slot].children > 0;
  }
  uint32_t Frequency(uint32_t slot) const final {
    std::lock_guard lock(mu_);
    return nodes_[slot].live ? nodes_[slot].hits + 1u : 0u;
  }

 protected:
  struct Node {
    uint64_t key = 0;
    uint32_t parent = kNoSlot;
    uint32_t gen = 0;
    uint32_t parent_gen = 0;
    uint16_t children = 0;
    uint8_t hits = 0;
    bool live = false;
  };

  // Policy hooks, under mu_. Removed(slot, evicted): evicted is true when `slot` is the victim
  // the last PickVictim returned (an eviction), false for an erase.
  virtual void Inserted(uint32_t slot, uint64_t key) = 0;
  virtual void Accessed(uint32_t slot) = 0;
  virtual void Removed(uint32_t slot, bool evicted) = 0;
  virtual uint32_t Pick(FunctionRef<bool(uint32_t)> evictable) = 0;

  // Node bytes plus the derived policy's per-slot arrays.
  size_t BaseBytesPerSlot() const { return sizeof(Node); }

  std::vector<Node> nodes_;  // under mu_ (all hooks run under it)

 private:
  void Forget(uint32_t slot) {
    Node& n = nodes_[slot];
    Removed(slot, slot == victim_);
    if (slot == victim_) victim_ = kNoSlot;
    n.live = false;
    if (n.parent != kNoSlot) {
      Node& p = nodes_[n.parent];
      if (p.live && p.gen == n.parent_gen && p.children > 0) --p.children;
    }
  }

  mutable SpinLock mu_;
  uint32_t victim_ = kNoSlot;
};

// The first evictable id of `list`, from the back (oldest); kNoSlot when none.
uint32_t OldestEvictable(const IdList& list, const std::vector<Links>& links,
                         FunctionRef<bool(uint32_t)> evictable) {
  for (uint32_t s = list.back(); s != kNoSlot; s = links[s].prev)
    if (evictable(s)) return s;
  return kNoSlot;
}

// ---------------------------------------------------------------------------------------------
// ARC (Megiddo & Modha, FAST'03, Fig. 4). T1/T2 hold cached blocks (seen once / more than once
// recently), B1/B2 the keys of blocks evicted from them; p is the adaptive target size of T1.
// Deviation forced by the interface: PickVictim runs before the missing key is known, so
// REPLACE's tie case "x in B2 and |T1| == p" is not taken (REPLACE evicts from T1 iff
// |T1| > p); ghost hits adapt p in OnInsert, and case IV's directory trimming (|T1| + |B1| <= c,
// |L1| + |L2| <= 2c) runs after the insert, which deletes the same entries.
class ArcPolicy final : public ChainPolicy {
 public:
  explicit ArcPolicy(uint32_t capacity)
      : ChainPolicy(capacity), links_(capacity), list_(capacity, 0), ghosts_(capacity + 1, 2) {}

  PolicyKind kind() const override { return PolicyKind::kArc; }
  size_t BytesPerSlot() const override {
    // Node, links, list tag; the ghost directory holds up to one key per slot (links, key, tag,
    // and a hash-map entry of about 32 bytes).
    return BaseBytesPerSlot() + sizeof(Links) + 1 + sizeof(Links) + 8 + 1 + 32;
  }

 private:
  void Inserted(uint32_t slot, uint64_t key) override {
    const double c = capacity();
    const double b1 = ghosts_.size(kB1), b2 = ghosts_.size(kB2);
    switch (ghosts_.Find(key)) {
      case kB1:  // case II
        p_ = std::min(c, p_ + (b1 >= b2 ? 1.0 : b2 / b1));
        ghosts_.Erase(key);
        Push(kT2, slot);
        return;
      case kB2:  // case III
        p_ = std::max(0.0, p_ - (b2 >= b1 ? 1.0 : b1 / b2));
        ghosts_.Erase(key);
        Push(kT2, slot);
        return;
      default:  // case IV
        Push(kT1, slot);
        while (t_[0].size() + ghosts_.size(kB1) > capacity() && ghosts_.size(kB1) > 0)
          ghosts_.DropOldest(kB1);
        while (t_[0].size() + t_[1].size() + ghosts_.size(kB1) + ghosts_.size(kB2) >
                   2ull * capacity() &&
               ghosts_.size(kB2) > 0)
          ghosts_.DropOldest(kB2);
    }
  }
  void Accessed(uint32_t slot) override {  // case I
    Unlink(slot);
    Push(kT2, slot);
  }
  void Removed(uint32_t slot, bool evicted) override {
    const int list = list_[slot];
    Unlink(slot);
    if (evicted && list != 0) ghosts_.Add(nodes_[slot].key, list == kT1 ? kB1 : kB2, kB2);
  }
  uint32_t Pick(FunctionRef<bool(uint32_t)> evictable) override {  // REPLACE
    const bool from_t1 = t_[0].size() >= 1 && t_[0].size() > p_;
    const int first = from_t1 ? 0 : 1;
    uint32_t s = OldestEvictable(t_[first], links_, evictable);
    if (s == kNoSlot) s = OldestEvictable(t_[1 - first], links_, evictable);
    return s;
  }

  static constexpr int kT1 = 1, kT2 = 2;  // list_ values (0: not linked)
  static constexpr int kB1 = 1, kB2 = 2;  // ghost lists

  void Push(int list, uint32_t slot) {
    t_[list - 1].PushFront(links_, slot);
    list_[slot] = static_cast<uint8_t>(list);
  }
  void Unlink(uint32_t slot) {
    if (list_[slot] == 0) return;
    t_[list_[slot] - 1].Remove(links_, slot);
    list_[slot] = 0;
  }

  std::vector<Links> links_;
  std::vector<uint8_t> list_;
  IdList t_[2];
  GhostDirectory ghosts_;
  double p_ = 0;
};

// ---------------------------------------------------------------------------------------------
// S3-FIFO (Yang et al., SOSP'23; libCacheSim S3FIFOv0.c): a small FIFO S (10% of the slots), a
// main FIFO M with 2-bit frequencies (CLOCK), and a ghost FIFO G of keys, as many as M holds.
// A new block goes to M if its key is in G, else to S. Eviction takes from S while S holds at
// least 10% of the slots (or M is empty): S's oldest moves to M (frequency cleared) if it was hit
// since it was inserted, else it is evicted and its key enters G. From M: a block with frequency
// > 0 is reinserted with frequency - 1, else evicted. A pinned block is reinserted in its queue.
class S3FifoPolicy final : public ChainPolicy {
 public:
  explicit S3FifoPolicy(uint32_t capacity)
      : ChainPolicy(capacity),
        links_(capacity),
        queue_(capacity, 0),
        freq_(capacity, 0),
        small_target_(std::max<uint32_t>(1, capacity / 10)),
        ghosts_(std::max<uint32_t>(1, capacity - capacity / 10), 1) {}

  PolicyKind kind() const override { return PolicyKind::kS3Fifo; }
  size_t BytesPerSlot() const override {
    return BaseBytesPerSlot() + sizeof(Links) + 2 + (sizeof(Links) + 8 + 1 + 32);
  }

 private:
  static constexpr int kS = 1, kM = 2;
  static constexpr uint8_t kMaxFreq = 3;

  void Inserted(uint32_t slot, uint64_t key) override {
    freq_[slot] = 0;
    if (ghosts_.Find(key)) {
      ghosts_.Erase(key);
      Push(kM, slot);
    } else {
      Push(kS, slot);
    }
  }
  void Accessed(uint32_t slot) override {
    if (freq_[slot] < kMaxFreq) ++freq_[slot];
  }
  void Removed(uint32_t slot, bool evicted) override {
    const int q = queue_[slot];
    Unlink(slot);
    if (evicted && q == kS) ghosts_.Add(nodes_[slot].key, 1, 1);
  }
  uint32_t Pick(FunctionRef<bool(uint32_t)> evictable) override {
    const uint64_t budget = 4ull * (kMaxFreq + 2) * capacity();
    for (uint64_t step = 0; step < budget; ++step) {
      const bool from_small = !q_[0].empty() && (q_[0].size() >= small_target_ || q_[1].empty());
      const int q = from_small ? kS : kM;
      const uint32_t t = q_[q - 1].back();
      if (t == kNoSlot) return kNoSlot;
      Unlink(t);
      if (from_small && freq_[t] > 0) {
        freq_[t] = 0;
        Push(kM, t);
      } else if (!from_small && freq_[t] > 0) {
        --freq_[t];
        Push(kM, t);
      } else {
        Push(q, t);  // stays queued until the caller's OnRemove, or waits when pinned
        if (evictable(t)) return t;
      }
    }
    for (int q : {kS, kM}) {
      const uint32_t s = OldestEvictable(q_[q - 1], links_, evictable);
      if (s != kNoSlot) return s;
    }
    return kNoSlot;
  }

  void Push(int q, uint32_t slot) {
    q_[q - 1].PushFront(links_, slot);
    queue_[slot] = static_cast<uint8_t>(q);
  }
  void Unlink(uint32_t slot) {
    if (queue_[slot] == 0) return;
    q_[queue_[slot] - 1].Remove(links_, slot);
    queue_[slot] = 0;
  }

  std::vector<Links> links_;
  std::vector<uint8_t> queue_;
  std::vector<uint8_t> freq_;
  IdList q_[2];
  const uint32_t small_target_;
  GhostDirectory ghosts_;
};

// ---------------------------------------------------------------------------------------------
// W-TinyLFU (Einziger, Friedman & Manes, TOS 2017; Caffeine's BoundedLocalCache with its static
// sizing): an LRU window of 1% of the slots in front of a segmented LRU main cache (probation,
// and a protected segment of 80% of main). A new block enters the window; when the window is
// full its oldest block becomes the *candidate* for main and is compared with main's victim (the
// oldest of probation): the one with the lower TinyLFU frequency estimate is evicted (the
// victim wins ties). A hit in probation promotes to protected, whose overflow goes back to
// probation. Frequencies come from store/frequency_sketch.h (4-bit count-min, aging every
// 10 x capacity increments), counting inserts and hits. Caffeine's random admission of a warm
// candidate (1 in 128, a defence against hash flooding) is left out: replays stay deterministic.
class WTinyLfuPolicy final : public ChainPolicy {
 public:
  explicit WTinyLfuPolicy(uint32_t capacity)
      : ChainPolicy(capacity),
        links_(capacity),
        segment_(capacity, 0),
        window_max_(std::max<uint32_t>(1, capacity / 100)),
        protected_max_(static_cast<uint32_t>((capacity - std::min(capacity, window_max_)) * 0.8)),
        sketch_(capacity) {}

  PolicyKind kind() const override { return PolicyKind::kWTinyLfu; }
  size_t BytesPerSlot() const override {
    return BaseBytesPerSlot() + sizeof(Links) + 1 + sketch_.MemoryBytes() / capacity();
  }

 private:
  static constexpr int kWindow = 1, kProbation = 2, kProtected = 3;

  void Inserted(uint32_t slot, uint64_t key) override {
    sketch_.Increment(key);
    Push(kWindow, slot);
    // While the cache is not full, window overflow enters probation unopposed (Caffeine's
    // evictFromWindow; evictFromMain only runs above the maximum).
    while (seg_[kWindow - 1].size() > window_max_) {
      const uint32_t oldest = seg_[kWindow - 1].back();
      Unlink(oldest);
      Push(kProbation, oldest);
    }
  }
  void Accessed(uint32_t slot) override {
    sketch_.Increment(nodes_[slot].key);
    const int seg = segment_[slot];
    Unlink(slot);
    if (seg == kWindow) {
      Push(kWindow, slot);
      return;
    }
    Push(kProtected, slot);
    if (seg == kProbation && seg_[kProtected - 1].size() > protected_max_) {
      const uint32_t demoted = seg_[kProtected - 1].back();
      Unlink(demoted);
      Push(kProbation, demoted);
    }
  }
  void Removed(uint32_t slot, bool /*evicted*/) override { Unlink(slot); }

  uint32_t Pick(FunctionRef<bool(uint32_t)> evictable) override {
    uint32_t candidate = kNoSlot;
    if (seg_[kWindow - 1].size() >= window_max_ && !seg_[kWindow - 1].empty()) {
      candidate = seg_[kWindow - 1].back();  // leaves the window for probation
      Unlink(candidate);
      Push(kProbation, candidate);
    }
    uint32_t victim = seg_[kProbation - 1].back();
    if (victim == candidate && links_[victim].prev != kNoSlot) victim = links_[victim].prev;
    if (victim == candidate) victim = seg_[kProtected - 1].back();
    if (victim == kNoSlot) victim = seg_[kWindow - 1].back();
    uint32_t first = victim, second = candidate;
    if (candidate != kNoSlot && victim != kNoSlot &&
        sketch_.Estimate(nodes_[candidate].key) <= sketch_.Estimate(nodes_[victim].key))
      std::swap(first, second);  // the candidate is not admitted
    if (victim == kNoSlot) first = candidate, second = kNoSlot;
    if (first != kNoSlot && evictable(first)) return first;
    if (second != kNoSlot && evictable(second)) return second;
    for (int seg : {kProbation, kWindow, kProtected}) {
      const uint32_t s = OldestEvictable(seg_[seg - 1], links_, evictable);
      if (s != kNoSlot) return s;
    }
    return kNoSlot;
  }

  void Push(int seg, uint32_t slot) {
    seg_[seg - 1].PushFront(links_, slot);
    segment_[slot] = static_cast<uint8_t>(seg);
  }
  void Unlink(uint32_t slot) {
    if (segment_[slot] == 0) return;
    seg_[segment_[slot] - 1].Remove(links_, slot);
    segment_[slot] = 0;
  }

  std::vector<Links> links_;
  std::vector<uint8_t> segment_;
  IdList seg_[3];
  const uint32_t window_max_;
  const uint32_t protected_max_;
  FrequencySketch sketch_;
};

// ---------------------------------------------------------------------------------------------
// GDSF (Cherkasova 1998): each block has priority H = L + F, F its accesses while cached (1 at
// insert), L the aging clock, set to the priority of each victim; the lowest H goes first, ties
// to the least recently used. With unit cost and size this is "frequency plus aging": a block
// must keep being hit to stay above the rising clock.
class GdsfPolicy final : public ChainPolicy {
 public:
  explicit GdsfPolicy(uint32_t capacity) : ChainPolicy(capacity), entry_(capacity) {}

  PolicyKind kind() const override { return PolicyKind::kGdsf; }
  size_t BytesPerSlot() const override {
    return BaseBytesPerSlot() + sizeof(Entry) + 48;  // + a std::set node
  }

 private:
  struct Entry {
    uint64_t h = 0;
    uint64_t seq = 0;
    uint32_t freq = 0;
    bool queued = false;
  };

  void Inserted(uint32_t slot, uint64_t /*key*/) override {
    entry_[slot].freq = 1;
    Queue(slot);
  }
  void Accessed(uint32_t slot) override {
    Dequeue(slot);
    ++entry_[slot].freq;
    Queue(slot);
  }
  void Removed(uint32_t slot, bool evicted) override {
    if (evicted) clock_ = std::max(clock_, entry_[slot].h);
    Dequeue(slot);
  }
  uint32_t Pick(FunctionRef<bool(uint32_t)> evictable) override {
    for (const auto& [h, seq, slot] : order_)
      if (evictable(slot)) return slot;
    return kNoSlot;
  }

  void Queue(uint32_t slot) {
    Entry& e = entry_[slot];
    e.h = clock_ + e.freq;
    e.seq = ++seq_;
    e.queued = true;
    order_.emplace(e.h, e.seq, slot);
  }
  void Dequeue(uint32_t slot) {
    Entry& e = entry_[slot];
    if (!e.queued) return;
    order_.erase({e.h, e.seq, slot});
    e.queued = false;
  }

  std::vector<Entry> entry_;
  std::set<std::tuple<uint64_t, uint64_t, uint32_t>> order_;
  uint64_t clock_ = 0;
  uint64_t seq_ = 0;
};

}  // namespace

std::unique_ptr<EvictionPolicy> MakeArcPolicy(uint32_t capacity) {
  return std::make_unique<ArcPolicy>(capacity);
}
std::unique_ptr<EvictionPolicy> MakeS3FifoPolicy(uint32_t capacity) {
  return std::make_unique<S3FifoPolicy>(capacity);
}
std::unique_ptr<EvictionPolicy> MakeWTinyLfuPolicy(uint32_t capacity) {
  return std::make_unique<WTinyLfuPolicy>(capacity);
}
std::unique_ptr<EvictionPolicy> MakeGdsfPolicy(uint32_t capacity) {
  return std::make_unique<GdsfPolicy>(capacity);
}

}  // namespace strata::store
