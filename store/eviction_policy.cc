#include "store/eviction_policy.h"

#include <algorithm>
#include <atomic>
#include <mutex>
#include <string>
#include <vector>

#include "store/spin_lock.h"
#include "store/thread_annotations.h"

namespace strata::store {

std::string_view PolicyKindName(PolicyKind kind) {
  switch (kind) {
    case PolicyKind::kLru:
      return "lru";
    case PolicyKind::kPrefix:
      return "prefix";
  }
  return "unknown";
}

Result<PolicyKind> ParsePolicyKind(std::string_view name) {
  if (name == "lru") return PolicyKind::kLru;
  if (name == "prefix") return PolicyKind::kPrefix;
  return Status::InvalidArgument("unknown eviction policy '" + std::string(name) +
                                 "' (expected lru or prefix)");
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
//  - A new block joins the tail of one FIFO queue with frequency 0.
//  - A hit only bumps the block's 2-bit frequency (a relaxed atomic store; no lock, no list
//    surgery, which is why FIFO-based policies scale where LRU does not).
//  - Eviction looks at the head: a block that was hit since it last passed the head goes back to
//    the tail with its frequency decremented (one extra lap per remembered hit, up to 3: frequent
//    blocks outlive one-off ones); a block with cached children (an interior node of the prefix
//    tree) goes back to the tail unchanged, so its descendants leave first and a shared prefix
//    outlives every tail hanging from it; a pinned block waits; anything else is the victim.
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
    n.children.store(0, std::memory_order_relaxed);
    n.freq.store(0, std::memory_order_relaxed);
    n.parent.store(parent, std::memory_order_relaxed);
    if (parent != kNoSlot && Live(nodes_[parent]))
      nodes_[parent].children.fetch_add(1, std::memory_order_relaxed);
    n.flags.fetch_or(kLiveBit, std::memory_order_release);
    while (!TryPush(slot)) {  // ring full: drain it ourselves (slow path)
      std::lock_guard lock(mu_);
      Drain();
    }
  }

  void OnAccess(uint32_t slot) override {
    Node& n = nodes_[slot];
    const uint8_t f = n.freq.load(std::memory_order_relaxed);
    if (f < kMaxFreq) n.freq.store(f + 1, std::memory_order_relaxed);  // lossy under races: fine
  }

  void OnRemove(uint32_t slot) override {
    std::lock_guard lock(mu_);
    Drain();
    Node& n = nodes_[slot];
    if (!Live(n)) return;
    Unlink(slot);
    n.flags.fetch_and(static_cast<uint8_t>(~kLiveBit), std::memory_order_release);
    const uint32_t parent = n.parent.load(std::memory_order_relaxed);
    if (parent != kNoSlot) {
      // Saturating: a parent slot that was reused meanwhile must not wrap.
      auto& c = nodes_[parent].children;
      uint16_t v = c.load(std::memory_order_relaxed);
      while (v > 0 && !c.compare_exchange_weak(v, v - 1, std::memory_order_relaxed)) {
      }
    }
  }

  uint32_t PickVictim(FunctionRef<bool(uint32_t)> evictable) override {
    std::lock_guard lock(mu_);
    Drain();
    // Every block passes the head at most kMaxFreq + 1 times before it is a candidate; interior
    // and pinned blocks may rotate a few more laps before the fallback below.
    const uint64_t budget = static_cast<uint64_t>(size_[kMain]) * (kMaxFreq + 3);
    for (uint64_t step = 0; step < budget; ++step) {
      const int q = kMain;
      const uint32_t s = head_[q];
      if (s == kNoSlot) return kNoSlot;
      Node& n = nodes_[s];
      const uint8_t f = n.freq.load(std::memory_order_relaxed);
      const bool interior = n.children.load(std::memory_order_relaxed) > 0;
      Unlink(s);
      if (f > 0) {
        n.freq.store(f - 1, std::memory_order_relaxed);
        PushBack(kMain, s);  // second chance, one per remembered hit
      } else if (interior || !evictable(s)) {
        PushBack(q, s);  // its descendants go first; pinned blocks wait
      } else {
        PushBack(q, s);  // stays linked until the caller's OnRemove
        return s;
      }
    }
    // Everything left is pinned or interior: take the first evictable block, interior or not.
    for (uint32_t s = head_[kMain]; s != kNoSlot; s = nodes_[s].next)
      if (evictable(s)) return s;
    return kNoSlot;
  }

  bool HasChildren(uint32_t slot) const override {
    return Live(nodes_[slot]) && nodes_[slot].children.load(std::memory_order_relaxed) > 0;
  }
  uint32_t Frequency(uint32_t slot) const override {
    const Node& n = nodes_[slot];
    return Live(n) ? n.freq.load(std::memory_order_relaxed) + 1 : 0;
  }
  // The insert ring is a fixed 24 KiB on top, whatever the capacity.
  size_t BytesPerSlot() const override { return sizeof(Node); }

 private:
  static constexpr uint8_t kMaxFreq = 3;
  static constexpr int kMain = 0;
  static constexpr uint32_t kRingSize = 1024;

  static constexpr uint8_t kLiveBit = 1;    // inserted and not removed
  static constexpr uint8_t kLinkedBit = 2;  // in the queue (changed under mu_ only)

  struct Node {
    uint32_t prev = kNoSlot;  // queue links: under mu_
    uint32_t next = kNoSlot;
    std::atomic<uint32_t> parent{kNoSlot};
    std::atomic<uint16_t> children{0};
    std::atomic<uint8_t> freq{0};
    std::atomic<uint8_t> flags{0};
  };
  static_assert(sizeof(Node) == 16);

  static bool Live(const Node& n) { return n.flags.load(std::memory_order_acquire) & kLiveBit; }

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
      if (c.seq.load(std::memory_order_acquire) != dequeue_ + 1) return;  // empty or in flight
      const uint32_t slot = c.slot;
      c.seq.store(dequeue_ + kRingSize, std::memory_order_release);
      ++dequeue_;
      // Seen before within the sketch's window: a returning block, straight to M.
      if (!Live(nodes_[slot])) continue;
      Unlink(slot);
      PushBack(kMain, slot);
    }
  }

  void Unlink(uint32_t s) REQUIRES_LOCK(mu_) {
    Node& n = nodes_[s];
    if (!(n.flags.load(std::memory_order_relaxed) & kLinkedBit)) return;
    const int q = kMain;
    if (n.prev != kNoSlot) nodes_[n.prev].next = n.next; else head_[q] = n.next;
    if (n.next != kNoSlot) nodes_[n.next].prev = n.prev; else tail_[q] = n.prev;
    n.prev = n.next = kNoSlot;
    n.flags.fetch_and(static_cast<uint8_t>(~kLinkedBit), std::memory_order_relaxed);
    --size_[q];
  }
  void PushBack(int q, uint32_t s) REQUIRES_LOCK(mu_) {
    Node& n = nodes_[s];
    n.prev = tail_[q];
    n.next = kNoSlot;
    if (tail_[q] != kNoSlot) nodes_[tail_[q]].next = s; else head_[q] = s;
    tail_[q] = s;
    n.flags.fetch_or(kLinkedBit, std::memory_order_relaxed);
    ++size_[q];
  }

  std::unique_ptr<Node[]> nodes_;
  std::unique_ptr<Cell[]> ring_;
  std::atomic<uint64_t> enqueue_{0};
  std::mutex mu_;
  uint64_t dequeue_ GUARDED_BY(mu_) = 0;
  uint32_t head_[1] GUARDED_BY(mu_) = {kNoSlot};
  uint32_t tail_[1] GUARDED_BY(mu_) = {kNoSlot};
  uint32_t size_[1] GUARDED_BY(mu_) = {0};
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
  }
  return Status::InvalidArgument("unknown eviction policy kind");
}

}  // namespace strata::store
