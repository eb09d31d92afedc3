#include "store/eviction_policy.h"

#include <algorithm>
#include <atomic>
#include <mutex>
#include <string>
#include <vector>

#include "store/classic_policies.h"
#include "store/learned_policy.h"
#include "store/spin_lock.h"
#include "store/thread_annotations.h"

namespace strata::store {

std::string_view PolicyKindName(PolicyKind kind) {
  switch (kind) {
    case PolicyKind::kLru:
      return "lru";
    case PolicyKind::kPrefix:
      return "prefix";
    case PolicyKind::kArc:
      return "arc";
    case PolicyKind::kS3Fifo:
      return "s3fifo";
    case PolicyKind::kWTinyLfu:
      return "wtinylfu";
    case PolicyKind::kGdsf:
      return "gdsf";
    case PolicyKind::kLearned:
      return "learned";
    case PolicyKind::kRegret:
      return "regret";
  }
  return "unknown";
}

namespace {
constexpr PolicyKind kAllKinds[] = {kDefaultPolicyKind, PolicyKind::kPrefix, PolicyKind::kLru,
                                    PolicyKind::kArc,   PolicyKind::kS3Fifo, PolicyKind::kWTinyLfu,
                                    PolicyKind::kGdsf,  PolicyKind::kRegret};
static_assert(kDefaultPolicyKind == PolicyKind::kLearned, "kAllKinds lists the default first");
}  // namespace

std::span<const PolicyKind> AllPolicyKinds() { return kAllKinds; }

Result<PolicyKind> ParsePolicyKind(std::string_view name) {
  for (PolicyKind k : kAllKinds)
    if (name == PolicyKindName(k)) return k;
  return Status::InvalidArgument(
      "unknown eviction policy '" + std::string(name) +
      "' (expected learned, prefix, lru, arc, s3fifo, wtinylfu, gdsf or regret)");
}

namespace {

// ---------------------------------------------------------------------------------------------
// lru: an exact recency list. Children are counted too, so HasChildren() works for admission.
class LruPolicy final : public EvictionPolicy {
 public:
  explicit LruPolicy(uint32_t capacity) : EvictionPolicy(capacity), nodes_(capacity) {}

  PolicyKind kind() const override { return PolicyKind::kLru; }

  void OnInsert(uint32_t slot, uint32_t parent, uint64_t /*key_hash*/) override {
    std::lock_guard lock(mu_);
    Node& n = nodes_[slot];
    if (n.linked) Unlink(slot);
    n.linked = true;
    n.children = 0;
    n.freq = 1;
    n.parent = parent;
    if (parent != kNoSlot && nodes_[parent].linked && nodes_[parent].children < UINT16_MAX)
      ++nodes_[parent].children;
    PushFront(slot);
  }

  void OnAccess(uint32_t slot) override {
    std::lock_guard lock(mu_);
    Node& n = nodes_[slot];
    if (!n.linked) return;
    if (n.freq < UINT8_MAX) ++n.freq;
    Unlink(slot);
    PushFront(slot);
  }

  void OnRemove(uint32_t slot) override {
    std::lock_guard lock(mu_);
    Node& n = nodes_[slot];
    if (!n.linked) return;
    Unlink(slot);
    n.linked = false;
    if (n.parent != kNoSlot && nodes_[n.parent].linked && nodes_[n.parent].children > 0)
      --nodes_[n.parent].children;
  }

  uint32_t PickVictim(FunctionRef<bool(uint32_t)> evictable) override {
    std::lock_guard lock(mu_);
    for (uint32_t s = tail_; s != kNoSlot; s = nodes_[s].prev)
      if (evictable(s)) return s;
    return kNoSlot;
  }

  bool HasChildren(uint32_t slot) const override {
    std::lock_guard lock(mu_);
    return nodes_[slot].linked && nodes_[slot].children > 0;
  }
  uint32_t Frequency(uint32_t slot) const override {
    std::lock_guard lock(mu_);
    return nodes_[slot].linked ? nodes_[slot].freq : 0;
  }
  size_t BytesPerSlot() const override { return sizeof(Node); }

 private:
  struct Node {
    uint32_t prev = kNoSlot;
    uint32_t next = kNoSlot;
    uint32_t parent = kNoSlot;
    uint16_t children = 0;
    uint8_t freq = 0;
    bool linked = false;
  };
  static_assert(sizeof(Node) == 16);

  void Unlink(uint32_t s) REQUIRES_LOCK(mu_) {
    Node& n = nodes_[s];
    if (n.prev != kNoSlot) nodes_[n.prev].next = n.next; else head_ = n.next;
    if (n.next != kNoSlot) nodes_[n.next].prev = n.prev; else tail_ = n.prev;
    n.prev = n.next = kNoSlot;
  }
  void PushFront(uint32_t s) REQUIRES_LOCK(mu_) {
    Node& n = nodes_[s];
    n.prev = kNoSlot;
    n.next = head_;
    if (head_ != kNoSlot) nodes_[head_].prev = s;
    head_ = s;
    if (tail_ == kNoSlot) tail_ = s;
  }

  mutable SpinLock mu_;
  std::vector<Node> nodes_ GUARDED_BY(mu_);
  uint32_t head_ GUARDED_BY(mu_) = kNoSlot;  // most recently used
  uint32_t tail_ GUARDED_BY(mu_) = kNoSlot;  // least recently used
};

// ---------------------------------------------------------------------------------------------
// prefix: a CLOCK queue with frequency (S3-FIFO's main queue: Yang et al., "FIFO queues are all
// you need for cache eviction", SOSP'23) that is prefix-aware (docs/store.md, "Eviction").
//
//  - A new block joins a FIFO *nursery* (10% of the slots, S3-FIFO's small-queue share) and moves
//    on to the tail of the CLOCK queue when newer blocks push it out. The nursery is not examined
//    for victims while the queue holds one, so a block is never evicted before a tenth of the
//    capacity was stored after it: a prefix stored a moment ago and about to be loaded (by a
//    decode node, the next turn) is not the first victim just because older blocks were read and
//    took their second chance ahead of it. (S3-FIFO's small queue does the opposite, quick
//    demotion of new blocks; prefix reuse comes late, so it costs hits here.)
//    A new block starts with frequency 0.
//  - A hit only bumps the block's 2-bit frequency (a relaxed atomic store; no lock, no list
//    surgery, which is why FIFO-based policies scale where LRU does not).
//  - Eviction looks at the head: a block that was hit since it last passed the head goes back to
//    the tail with its frequency decremented (one extra lap per remembered hit, up to 3: frequent
//    blocks outlive one-off ones). A block with cached children (an interior node of the prefix
//    tree) gets one extra lap the first time it reaches the head (a shared prefix outlives the
//    tails under it); the next time it is *parked* off the queue until its last child leaves,
//    and then returns to the head, so it goes right after its descendants instead of waiting a
//    whole lap per block of the chain (which kept finished conversations cached for many laps).
//    A pinned block waits; anything else is the victim.
//
// Admission to disk (no one-hit wonders) lives in the tiered store, with FrequencySketch.
class PrefixPolicy final : public EvictionPolicy {
 public:
  explicit PrefixPolicy(uint32_t capacity)
      : EvictionPolicy(capacity), nodes_(new Node[capacity]), ring_(new Cell[kRingSize]) {
    for (uint32_t i = 0; i < kRingSize; ++i) ring_[i].seq.store(i, std::memory_order_relaxed);
  }

  PolicyKind kind() const override { return PolicyKind::kPrefix; }

  void OnInsert(uint32_t slot, uint32_t parent, uint64_t /*key_hash*/) override {
    Node& n = nodes_[slot];
    // Not live and not linked here (OnRemove came first), so no other thread writes its flags.
    const uint8_t gen = static_cast<uint8_t>(Gen(n.flags.load(std::memory_order_relaxed)) + 1);
    uint8_t parent_gen = 0;
    if (parent != kNoSlot) {
      const uint8_t pf = nodes_[parent].flags.load(std::memory_order_acquire);
      if (pf & kLiveBit) {
        parent_gen = Gen(pf);
        nodes_[parent].children.fetch_add(1, std::memory_order_relaxed);
      } else {
        parent = kNoSlot;
      }
    }
    n.children.store(0, std::memory_order_relaxed);
    n.meta.store(static_cast<uint8_t>(parent_gen << kGenShift), std::memory_order_relaxed);
    n.parent.store(parent, std::memory_order_relaxed);
    n.flags.store(static_cast<uint8_t>((gen << kGenShift) | kLiveBit), std::memory_order_release);
    while (!TryPush(slot)) {  // ring full: drain it ourselves (slow path)
      std::lock_guard lock(mu_);
      Drain();
    }
  }

  void OnAccess(uint32_t slot) override {
    Node& n = nodes_[slot];
    const uint8_t m = n.meta.load(std::memory_order_relaxed);
    if ((m & kFreqMask) < kMaxFreq)
      n.meta.store(m + 1, std::memory_order_relaxed);  // lossy under races: fine
  }

  void OnRemove(uint32_t slot) override {
    std::lock_guard lock(mu_);
    Drain();
    Node& n = nodes_[slot];
    if (!Live(n)) return;
    Unlink(slot);
    n.flags.fetch_and(static_cast<uint8_t>(~kLiveBit), std::memory_order_release);
    const uint32_t parent = n.parent.load(std::memory_order_relaxed);
    // The parent may have left first (erased, or evicted by the fallback below) and its slot may
    // hold another block now: only the incarnation the child was inserted under is decremented.
    if (parent != kNoSlot && IsIncarnation(nodes_[parent], ParentGen(n))) {
      auto& c = nodes_[parent].children;
      uint16_t v = c.load(std::memory_order_relaxed);
      while (v > 0 && !c.compare_exchange_weak(v, v - 1, std::memory_order_relaxed)) {
      }
      // Its last child left: a parked parent is next in line (children only drop under mu_).
      if (v == 1 && Parked(nodes_[parent])) {
        Unlink(parent);
        PushFront(kMain, parent);
      }
    }
  }

  uint32_t PickVictim(FunctionRef<bool(uint32_t)> evictable) override {
    std::lock_guard lock(mu_);
    Drain();
    // Every block passes the head at most kMaxFreq + 2 times before it is a candidate or parked;
    // pinned blocks may rotate a few more laps before the fallback below.
    const uint64_t budget = static_cast<uint64_t>(size_[kMain]) * (kMaxFreq + 3);
    for (uint64_t step = 0; step < budget; ++step) {
      const uint32_t s = head_[kMain];
      if (s == kNoSlot) break;
      Node& n = nodes_[s];
      const uint8_t m = n.meta.load(std::memory_order_relaxed);
      const bool interior = n.children.load(std::memory_order_relaxed) > 0;
      Unlink(s);
      if (m & kFreqMask) {
        n.meta.store(m - 1, std::memory_order_relaxed);
        PushBack(kMain, s);  // second chance, one per remembered hit
      } else if (interior) {
        if (m & kLappedBit) {
          PushBack(kParked, s);  // back at the head when its last child leaves (OnRemove)
        } else {
          n.meta.fetch_or(kLappedBit, std::memory_order_relaxed);
          PushBack(kMain, s);  // one extra lap for a prefix
        }
      } else if (!evictable(s)) {
        PushBack(kMain, s);  // pinned or in flight: waits
      } else {
        PushBack(kMain, s);  // stays linked until the caller's OnRemove
        return s;
      }
    }
    // Everything left is pinned or interior: take the first evictable block, interior or not.
    for (int q : {kMain, kParked, kNursery})
      for (uint32_t s = head_[q]; s != kNoSlot; s = nodes_[s].next)
        if (evictable(s)) return s;
    return kNoSlot;
  }

  bool HasChildren(uint32_t slot) const override {
    return Live(nodes_[slot]) && nodes_[slot].children.load(std::memory_order_relaxed) > 0;
  }
  uint32_t Frequency(uint32_t slot) const override {
    const Node& n = nodes_[slot];
    return Live(n) ? (n.meta.load(std::memory_order_relaxed) & kFreqMask) + 1u : 0u;
  }
  // The insert ring is a fixed 24 KiB on top, whatever the capacity.
  size_t BytesPerSlot() const override { return sizeof(Node); }

 private:
  static constexpr uint8_t kMaxFreq = 3;
  static constexpr int kMain = 0;     // the CLOCK queue
  static constexpr int kParked = 1;   // interior blocks that used their extra lap
  static constexpr int kNursery = 2;  // the newest blocks, FIFO, never victims while main has one
  static constexpr uint32_t kRingSize = 1024;

  // Node::flags: live, linked, the queue (2 bits) and the incarnation (4 bits, bumped by every
  // OnInsert of the slot). Node::meta: the 2-bit frequency, the lapped bit and the parent's
  // incarnation when this block was inserted. A child removed after its parent's slot was reused leaves the new
  // occupant's child count alone unless the 4-bit incarnations collide (1 in 16, and only when a
  // parent leaves before its children, which the policy itself avoids): an ordering hint, never
  // a correctness matter.
  static constexpr uint8_t kLiveBit = 1;    // flags: inserted and not removed
  static constexpr uint8_t kLinkedBit = 2;  // flags: in a queue (changed under mu_ only)
  static constexpr int kQueueShift = 2;     // flags: which queue, 2 bits (under mu_ only)
  static constexpr uint8_t kQueueMask = 3 << kQueueShift;
  static constexpr uint8_t kFreqMask = 3;   // meta: hits remembered (0..kMaxFreq)
  static constexpr uint8_t kLappedBit = 4;  // meta: had its extra lap as an interior block
  static constexpr int kGenShift = 4;       // both: incarnation in the top 4 bits

  struct Node {
    uint32_t prev = kNoSlot;  // queue links: under mu_
    uint32_t next = kNoSlot;
    std::atomic<uint32_t> parent{kNoSlot};
    std::atomic<uint16_t> children{0};
    std::atomic<uint8_t> meta{0};
    std::atomic<uint8_t> flags{0};
  };
  static_assert(sizeof(Node) == 16);

  static bool Live(const Node& n) { return n.flags.load(std::memory_order_acquire) & kLiveBit; }
  static uint8_t Gen(uint8_t flags) { return flags >> kGenShift; }
  static uint8_t ParentGen(const Node& n) {
    return n.meta.load(std::memory_order_relaxed) >> kGenShift;
  }
  static bool IsIncarnation(const Node& n, uint8_t gen) {
    const uint8_t f = n.flags.load(std::memory_order_acquire);
    return (f & kLiveBit) && Gen(f) == gen;
  }
  static bool Parked(const Node& n) {
    const uint8_t f = n.flags.load(std::memory_order_relaxed);
    return (f & kLinkedBit) && ((f & kQueueMask) >> kQueueShift) == kParked;
  }

  // Vyukov's bounded MPMC queue, used multi-producer / single-consumer (the consumer holds mu_).
  struct Cell {
    std::atomic<uint64_t> seq;
    uint32_t slot;
  };

  bool TryPush(uint32_t slot) {
    uint64_t pos = enqueue_.load(std::memory_order_relaxed);
    for (;;) {
      Cell& c = ring_[pos & (kRingSize - 1)];
      const uint64_t seq = c.seq.load(std::memory_order_acquire);
      const int64_t diff = static_cast<int64_t>(seq) - static_cast<int64_t>(pos);
      if (diff == 0) {
        if (enqueue_.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed)) {
          c.slot = slot;
          c.seq.store(pos + 1, std::memory_order_release);
          return true;
        }
      } else if (diff < 0) {
        return false;  // full
      } else {
        pos = enqueue_.load(std::memory_order_relaxed);
      }
    }
  }

  void Drain() REQUIRES_LOCK(mu_) {
    for (;;) {
      Cell& c = ring_[dequeue_ & (kRingSize - 1)];
      if (c.seq.load(std::memory_order_acquire) != dequeue_ + 1) break;  // empty or in flight
      const uint32_t slot = c.slot;
      c.seq.store(dequeue_ + kRingSize, std::memory_order_release);
      ++dequeue_;
      if (!Live(nodes_[slot])) continue;  // removed before it was drained
      Unlink(slot);
      PushBack(kNursery, slot);
    }
    while (size_[kNursery] > nursery_limit_) {  // the oldest newcomers join the CLOCK
      const uint32_t s = head_[kNursery];
      Unlink(s);
      PushBack(kMain, s);
    }
  }

  void Unlink(uint32_t s) REQUIRES_LOCK(mu_) {
    Node& n = nodes_[s];
    const uint8_t flags = n.flags.load(std::memory_order_relaxed);
    if (!(flags & kLinkedBit)) return;
    const int q = (flags & kQueueMask) >> kQueueShift;
    if (n.prev != kNoSlot) nodes_[n.prev].next = n.next; else head_[q] = n.next;
    if (n.next != kNoSlot) nodes_[n.next].prev = n.prev; else tail_[q] = n.prev;
    n.prev = n.next = kNoSlot;
    n.flags.fetch_and(static_cast<uint8_t>(~(kLinkedBit | kQueueMask)), std::memory_order_relaxed);
    --size_[q];
  }
  void Link(int q, uint32_t s) REQUIRES_LOCK(mu_) {
    nodes_[s].flags.fetch_or(static_cast<uint8_t>(kLinkedBit | (q << kQueueShift)),
                             std::memory_order_relaxed);
    ++size_[q];
  }
  void PushBack(int q, uint32_t s) REQUIRES_LOCK(mu_) {
    Node& n = nodes_[s];
    n.prev = tail_[q];
    n.next = kNoSlot;
    if (tail_[q] != kNoSlot) nodes_[tail_[q]].next = s; else head_[q] = s;
    tail_[q] = s;
    Link(q, s);
  }
  void PushFront(int q, uint32_t s) REQUIRES_LOCK(mu_) {
    Node& n = nodes_[s];
    n.prev = kNoSlot;
    n.next = head_[q];
    if (head_[q] != kNoSlot) nodes_[head_[q]].prev = s; else tail_[q] = s;
    head_[q] = s;
    Link(q, s);
  }

  std::unique_ptr<Node[]> nodes_;
  std::unique_ptr<Cell[]> ring_;
  std::atomic<uint64_t> enqueue_{0};
  std::mutex mu_;
  uint64_t dequeue_ GUARDED_BY(mu_) = 0;
  uint32_t head_[3] GUARDED_BY(mu_) = {kNoSlot, kNoSlot, kNoSlot};
  uint32_t tail_[3] GUARDED_BY(mu_) = {kNoSlot, kNoSlot, kNoSlot};
  uint32_t size_[3] GUARDED_BY(mu_) = {0, 0, 0};
  const uint32_t nursery_limit_ = capacity() / 10;  // S3-FIFO's small-queue share
};

}  // namespace

Result<std::unique_ptr<EvictionPolicy>> MakeEvictionPolicy(uint32_t capacity,
                                                           const PolicyOptions& options) {
  if (capacity == 0 || capacity == kNoSlot)
    return Status::InvalidArgument("eviction policy capacity must be in [1, 2^32-1)");
  switch (options.kind) {
    case PolicyKind::kLru:
      return std::unique_ptr<EvictionPolicy>(new LruPolicy(capacity));
    case PolicyKind::kPrefix:
      return std::unique_ptr<EvictionPolicy>(new PrefixPolicy(capacity));
    case PolicyKind::kArc:
      return MakeArcPolicy(capacity);
    case PolicyKind::kS3Fifo:
      return MakeS3FifoPolicy(capacity);
    case PolicyKind::kWTinyLfu:
      return MakeWTinyLfuPolicy(capacity);
    case PolicyKind::kGdsf:
      return MakeGdsfPolicy(capacity);
    case PolicyKind::kLearned:
      return MakeLearnedPolicy(capacity);
    case PolicyKind::kRegret:
      return MakeLearnedPolicy(capacity, {LearnedLeader::kRegret});
  }
  return Status::InvalidArgument("unknown eviction policy kind");
}

}  // namespace strata::store
