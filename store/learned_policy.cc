#include "store/learned_policy.h"

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <mutex>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include "store/spin_lock.h"
#include "store/thread_annotations.h"

namespace strata::store {
namespace {

uint64_t Mix(uint64_t x) {  // splitmix64 finaliser
  x ^= x >> 30;
  x *= 0xBF58476D1CE4E5B9ULL;
  x ^= x >> 27;
  x *= 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

// The cursor's step: coprime with the capacity, near capacity / golden ratio, so a sweep visits
// every slot once per lap and one window's candidates are spread over the slot table (consecutive
// slots were often refilled together and have similar ages).
uint32_t Stride(uint32_t capacity) {
  uint32_t step = std::max<uint32_t>(1, static_cast<uint32_t>(capacity * 0.6180339887));
  while (std::gcd(step, capacity) != 1) --step;
  return step;
}

// Keys evicted recently (the ghosts of ARC's B1/B2 and S3-FIFO's G): a direct-mapped table of
// 14-bit key fingerprints, each with a 2-bit count of the key's evictions, one 2-byte cell per slot
// of the tier exactly (any count: the cell is chosen by multiply-shift, not by a power-of-two
// mask), so it remembers about the last `size` evictions (an entry survives n later evictions with
// probability (1 - 1/size)^n); ARC's ghost lists hold up to the capacity, S3-FIFO's 0.9 x. A key
// stored while remembered was evicted a short while ago: a ghost hit. The key is recorded when it
// is evicted, as both papers' ghosts are (issue 17, sixth pass): recorded at insert instead (the
// fifth pass), a block that stayed cached longer than a capacity of inserts, i.e. a reused one, was
// forgotten by the time it was evicted and came back as a newcomer, where ARC's B2 remembers it
// (`arc` forced to lead was then 0.927 / 0.909 of ARC on roots even 5% / every other 2%; 0.972 /
// 0.952 with evictions recorded). Sizes measured (fifth pass): 1-byte cells (6-bit fingerprints)
// cost 1-2% on average, a newcomer read as returning one time in 63. Thread-safety: relaxed
// atomics; a race loses or mixes one entry (an estimate, like the sketch).
class EvictedKeys {
 public:
  explicit EvictedKeys(uint32_t size)
      : entries_(std::max<uint32_t>(size, 16)), table_(new Cell[entries_]) {
    for (uint32_t i = 0; i < entries_; ++i) table_[i].store(0, std::memory_order_relaxed);
  }
  // Counts an eviction of the key.
  void Record(uint64_t key_hash) {
    uint16_t fp;
    Cell& e = CellOf(key_hash, &fp);
    const uint16_t old = e.load(std::memory_order_relaxed);
    const int count = (old & ~3) == fp ? (old & 3) : 0;
    e.store(static_cast<uint16_t>(fp | std::min(3, count + 1)), std::memory_order_relaxed);
  }
  // The evictions of the key remembered (0..3).
  uint8_t Count(uint64_t key_hash) const {
    uint16_t fp;
    const uint16_t old = CellOf(key_hash, &fp).load(std::memory_order_relaxed);
    return (old & ~3) == fp ? (old & 3) : 0;
  }
  size_t MemoryBytes() const { return size_t{entries_} * sizeof(Cell); }

 private:
  using Cell = std::atomic<uint16_t>;
  Cell& CellOf(uint64_t key_hash, uint16_t* fingerprint) const {
    const uint64_t h = Mix(key_hash ^ 0x7F4A7C159E3779B9ULL);
    *fingerprint = static_cast<uint16_t>(std::max<uint64_t>(1, h & 0x3FFF) << 2);
    return table_[((h >> 32) * entries_) >> 32];
  }
  const uint32_t entries_;
  std::unique_ptr<Cell[]> table_;
};

// The experts: orderings of the same candidates; the leader's choice is evicted.
constexpr int kDeadBlock = 0, kRecency = 1, kFrequency = 2, kFifo = 3, kArc = 4;
constexpr int kExperts = 5;
static_assert(static_cast<int>(LearnedLeader::kArc) - 1 == kArc, "LearnedLeader - 1 is the expert");
constexpr int kFirstLeader = kFifo;         // S3-FIFO: the most robust classic policy (SOSP'23)
constexpr uint32_t kCandidates = 8;         // eligible leaves ranked per eviction
constexpr uint64_t kAgeLimit = 1u << 31;    // ages beyond this rank as equally old

// What an expert knows of a block.
struct Features {
  uint64_t hits;    // references remembered: evictions the evicted-keys table recalled, then hits
  uint64_t age;     // inserts since its last reference
  bool averse;      // predicted dead: a cache-averse signature, or bypassed
  bool from_small;  // blocks neither reused nor stored recently are a tenth of the capacity or more
  bool t1_first;    // ARC: those blocks (its T1) are more than its adaptive target p
};

// Each expert's rank of a block, lowest evicted first, below 2^61 (the real cache adds prefix order
// and the nursery above it). The same function ranks in the real cache and in the simulations.
uint64_t ExpertRank(int expert, const Features& f, uint64_t capacity) {
  const uint64_t recency = kAgeLimit - std::min<uint64_t>(f.age, kAgeLimit);
  switch (expert) {
    case kDeadBlock:  // predicted dead first, then recency + half a turnover per reuse (up to 3)
      return (uint64_t{!f.averse} << 59) | (recency + std::min<uint64_t>(f.hits, 3) * (capacity / 2));
    case kRecency:  // LRU
      return recency;
    case kFrequency:  // GDSF (priority = clock + frequency): a whole turnover per reuse (up to 15)
      return recency + f.hits * capacity;
    case kArc: {
      // ARC (Megiddo & Modha, FAST'03): blocks referenced once recently (T1: no reference
      // remembered) and blocks referenced at least twice (T2: reused, or stored again while the
      // evicted-keys table remembered it, ARC's ghost hit); the least recently used of T1 goes
      // while T1 holds more than the target p, else the least recently used of T2. p moves with
      // ghost hits in the ARC simulation (MiniSim), which keeps ARC's ghost lists B1/B2.
      const bool t1 = f.hits == 0;
      return (uint64_t{t1 != f.t1_first} << 59) | recency;
    }
    default: {
      // kFifo: S3-FIFO. Blocks neither reused nor stored recently before (its small queue) go
      // first, oldest first, while they are a tenth of the capacity or more; else the others (its
      // main queue: reused, or stored again soon after an eviction, its ghost hit) by recency with
      // a turnover per reference after the one that brought the block into main (its CLOCK's
      // laps, up to 3): S3-FIFO moves a block into main with its frequency cleared, so the first
      // hit (or ghost hit) buys no lap (issue 17, eighth pass: `fifo` forced went 0.968 / 0.983 ->
      // 0.979 / 0.990 of S3-FIFO on coding at 5% / 10%).
      const bool small = f.hits == 0;
      return (uint64_t{small != f.from_small} << 59) |
             (small ? recency : recency + std::min<uint64_t>(f.hits - 1, 3) * capacity);
    }
  }
}

// A miniature simulation of one expert (SHARDS, Waldspurger et al., FAST'15, and miniature
// simulations, Waldspurger et al., ATC'17): the references of a sample of the keys (1 in R by key
// hash) replayed through a cache of capacity / R that evicts as the expert would, counting its
// hits. The sampled reference stream is the same whatever the real cache holds, so the count
// estimates the expert's hit ratio at the real capacity on the current workload, whoever leads.
// Chains are not simulated (a sample holds few parents): it compares orderings; the real cache
// keeps prefix order whoever leads. Memory: capacity / R entries of 16 bytes, an index of 2 x and
// an evicted-keys table of 1 x that many entries; the ARC simulation adds its ghost lists (one
// 2-byte cell per entry). Not thread-safe (the policy's sampler lock).
class MiniSim {
 public:
  MiniSim(uint32_t capacity, int expert)
      : capacity_(capacity),
        expert_(expert),
        entries_(capacity),
        index_(std::bit_ceil(2 * capacity), kNoSlot),
        evicted_(capacity),
        ghosts_(expert == kArc ? capacity : 0, 0),
        stride_(Stride(capacity)) {}

  // ARC's target size of T1 (its p), in simulated blocks; 0 for the other experts.
  uint32_t Target() const { return target_; }
  uint32_t capacity() const { return capacity_; }

  // A reference of `key` with signature `sig`; friendly(sig) is the dead-block predictor. Returns
  // whether the simulated cache held it.
  template <typename Friendly>
  bool Access(uint64_t key, uint8_t sig, Friendly&& friendly) {
    size_t i = Find(key);
    if (index_[i] != kNoSlot) {
      Entry& e = entries_[index_[i]];
      if (e.hits == 0) --small_;
      e.hits = static_cast<uint8_t>(std::min(15, e.hits + 1));
      e.last = clock_;
      e.sig = sig;
      return true;
    }
    const uint8_t seen = evicted_.Count(key);
    if (!ghosts_.empty()) GhostMiss(key);
    uint32_t slot = size_;
    if (size_ == capacity_) {
      slot = Pick(friendly);
      if (entries_[slot].hits == 0) --small_;
      if (!ghosts_.empty()) GhostEvict(entries_[slot].key, entries_[slot].hits > 0);
      evicted_.Record(entries_[slot].key);
      Erase(entries_[slot].key);
      i = Find(key);
    } else {
      ++size_;
    }
    entries_[slot] = Entry{key, ++clock_, seen, sig};
    if (seen == 0) ++small_;
    index_[i] = slot;
    return false;
  }

  size_t MemoryBytes() const {
    return entries_.size() * sizeof(Entry) + index_.size() * sizeof(uint32_t) +
           evicted_.MemoryBytes() + ghosts_.size() * sizeof(uint16_t);
  }

 private:
  struct Entry {
    uint64_t key = 0;
    uint32_t last = 0;  // insert clock at the last reference
    uint8_t hits = 0;   // inserts remembered at insert, then hits (saturating)
    uint8_t sig = 0;
  };

  // ARC's ghost lists B1 (evicted from T1) and B2 (evicted from T2), direct-mapped: one 2-byte
  // cell per simulated block (ARC keeps |B1| + |B2| <= c), a 15-bit key fingerprint and the list.
  // A later insert overwrites a cell, which drops the older ghost (ARC drops its LRU ghost).
  uint16_t& GhostCell(uint64_t key, uint16_t* fingerprint) {
    const uint64_t h = Mix(key ^ 0x3C6EF372FE94F82BULL);
    *fingerprint = static_cast<uint16_t>(std::max<uint64_t>(1, h & 0x7FFF) << 1);
    return ghosts_[((h >> 32) * ghosts_.size()) >> 32];
  }
  void GhostEvict(uint64_t key, bool from_t2) {
    uint16_t fp;
    uint16_t& cell = GhostCell(key, &fp);
    if (cell != 0) --(cell & 1 ? b2_ : b1_);
    cell = static_cast<uint16_t>(fp | from_t2);
    ++(from_t2 ? b2_ : b1_);
  }
  // A miss: a ghost hit in B1 moves p up by max(1, |B2| / |B1|), one in B2 down by
  // max(1, |B1| / |B2|) (ARC, Fig. 4, cases II and III).
  void GhostMiss(uint64_t key) {
    uint16_t fp;
    uint16_t& cell = GhostCell(key, &fp);
    if (cell == 0 || (cell & ~1) != fp) return;
    if (cell & 1) {
      const uint32_t delta = std::max<uint32_t>(1, b1_ / std::max<uint32_t>(1, b2_));
      target_ = target_ > delta ? target_ - delta : 0;
      --b2_;
    } else {
      const uint32_t delta = std::max<uint32_t>(1, b2_ / std::max<uint32_t>(1, b1_));
      target_ = std::min(capacity_, target_ + delta);
      --b1_;
    }
    cell = 0;
  }

  // As LearnedPolicy::PickVictim: the lowest-ranked of a window with 8 candidates older than the
  // newest tenth.
  template <typename Friendly>
  uint32_t Pick(Friendly&& friendly) {
    const bool from_small = small_ >= capacity_ / 10;
    const bool t1_first = small_ > target_;
    uint32_t best = 0;
    uint64_t best_rank = UINT64_MAX;
    uint32_t eligible = 0;
    for (uint32_t probe = 0; probe < capacity_ && eligible < kCandidates; ++probe) {
      const uint32_t s = cursor_;
      cursor_ = static_cast<uint32_t>((uint64_t{cursor_} + stride_) % capacity_);
      const Entry& e = entries_[s];
      const bool young = clock_ - e.last < capacity_ / 10;
      if (!young) ++eligible;
      const uint64_t rank =
          (uint64_t{young} << 61) |
          ExpertRank(expert_,
                     Features{e.hits, clock_ - e.last, !friendly(e.sig), from_small, t1_first},
                     capacity_);
      if (rank < best_rank) {
        best_rank = rank;
        best = s;
      }
    }
    return best;
  }
  size_t Find(uint64_t key) const {
    const size_t mask = index_.size() - 1;
    size_t i = Mix(key) & mask;
    while (index_[i] != kNoSlot && entries_[index_[i]].key != key) i = (i + 1) & mask;
    return i;
  }
  void Erase(uint64_t key) {  // backward-shift deletion
    const size_t mask = index_.size() - 1;
    size_t i = Find(key);
    for (size_t j = (i + 1) & mask;; j = (j + 1) & mask) {
      if (index_[j] == kNoSlot) break;
      const size_t home = Mix(entries_[index_[j]].key) & mask;
      if (((j - home) & mask) >= ((j - i) & mask)) {
        index_[i] = index_[j];
        i = j;
      }
    }
    index_[i] = kNoSlot;
  }

  const uint32_t capacity_;
  const int expert_;
  std::vector<Entry> entries_;
  std::vector<uint32_t> index_;  // key -> entry, linear probing
  EvictedKeys evicted_;
  std::vector<uint16_t> ghosts_;  // kArc only: B1 and B2
  const uint32_t stride_;
  uint32_t size_ = 0;
  uint32_t small_ = 0;  // entries with hits == 0 (ARC's T1)
  uint32_t target_ = 0;  // kArc: p
  uint32_t b1_ = 0, b2_ = 0;  // kArc: ghosts in B1, B2
  uint32_t clock_ = 0;  // inserts
  uint32_t cursor_ = 0;
};

// The keys of the cached blocks that are in the sample, by slot (linear probing, backward-shift
// deletion): a hit names a slot, the simulations and OPTgen need its key. 4 x the sampled capacity
// entries of 16 bytes; full at 3/4 (a key not tracked is then not simulated: rare, as the sample
// holds about capacity / R blocks). Not thread-safe: the policy's sampler lock.
class SampledKeys {
 public:
  explicit SampledKeys(uint32_t sampled_capacity)
      : slots_(std::bit_ceil(4 * std::max<uint32_t>(sampled_capacity, 64))) {}

  bool Track(uint32_t slot, uint64_t key) {
    if (4 * (tracked_ + 1) > 3 * slots_.size()) return false;
    size_t i = Home(slot);
    while (slots_[i].slot != kNoSlot && slots_[i].slot != slot) i = Next(i);
    if (slots_[i].slot == kNoSlot) ++tracked_;
    slots_[i] = {slot, key};
    return true;
  }
  bool Key(uint32_t slot, uint64_t* key) const {
    for (size_t i = Home(slot); slots_[i].slot != kNoSlot; i = Next(i))
      if (slots_[i].slot == slot) {
        *key = slots_[i].key;
        return true;
      }
    return false;
  }
  void Untrack(uint32_t slot) {
    size_t i = Home(slot);
    while (slots_[i].slot != slot) {
      if (slots_[i].slot == kNoSlot) return;
      i = Next(i);
    }
    --tracked_;
    for (size_t j = Next(i);; j = Next(j)) {  // backward shift
      if (slots_[j].slot == kNoSlot) break;
      const size_t home = Home(slots_[j].slot);
      if (((j - home) & (slots_.size() - 1)) >= ((j - i) & (slots_.size() - 1))) {
        slots_[i] = slots_[j];
        i = j;
      }
    }
    slots_[i].slot = kNoSlot;
  }
  size_t MemoryBytes() const { return slots_.size() * sizeof(SlotKey); }

 private:
  struct SlotKey {
    uint32_t slot = kNoSlot;
    uint64_t key = 0;
  };
  size_t Home(uint32_t slot) const { return Mix(slot) & (slots_.size() - 1); }
  size_t Next(size_t i) const { return (i + 1) & (slots_.size() - 1); }

  std::vector<SlotKey> slots_;
  size_t tracked_ = 0;
};

// OptGen (Jain & Lin, ISCA'16) over a sample of the keys: for each access of a sampled key it
// answers "would Belady's MIN, with `capacity` blocks for the sampled keys, have kept this block
// since its previous access?" and reports the signature of that previous access with the answer.
//
// Time is the count of sampled accesses. occupancy_[t mod W] counts the blocks MIN keeps across
// time t; a reuse interval [t0, t) fits when every counter in it is below the capacity, and then
// takes one unit of each. Accesses older than the window (W = 8 x capacity, Hawkeye's) count as
// not reused. The history is direct-mapped by key hash; an entry displaced while still inside
// the window trains nothing (a collision says nothing about reuse).
//
// Memory: W 16-bit counters, 2W history entries of 12 bytes.
// Not thread-safe: the policy serialises it with its sampler lock.
class OptGen {
 public:
  explicit OptGen(uint32_t capacity)
      : capacity_(capacity),
        window_(8 * capacity),
        occupancy_(window_, 0),
        history_(std::bit_ceil(2 * window_)) {}

  // An access of `key` with signature `sig`. Calls train(sig_before, kept) when `key` was seen
  // before; kept tells whether MIN kept it until now.
  template <typename Train>
  void Access(uint64_t key, uint8_t sig, Train&& train) {
    ++now_;
    occupancy_[now_ % window_] = 0;
    const uint64_t h = Mix(key);
    Entry& e = history_[h & (history_.size() - 1)];
    const uint32_t tag = static_cast<uint32_t>(h >> 32);
    if (e.valid) {
      const uint32_t age = now_ - e.time;
      if (e.tag == tag) {
        bool kept = age < window_;
        for (uint32_t t = e.time; kept && t != now_; ++t)
          kept = occupancy_[t % window_] < capacity_;
        if (kept)
          for (uint32_t t = e.time; t != now_; ++t) ++occupancy_[t % window_];
        train(e.sig, kept);
      } else if (age >= window_) {
        train(e.sig, false);  // displaced after the window passed without a reuse
      }
    }
    e = Entry{tag, now_, sig, true};
  }

  size_t MemoryBytes() const {
    return occupancy_.size() * sizeof(uint16_t) + history_.size() * sizeof(Entry);
  }

 private:
  struct Entry {
    uint32_t tag = 0;
    uint32_t time = 0;
    uint8_t sig = 0;
    bool valid = false;
  };

  const uint32_t capacity_;
  const uint32_t window_;
  std::vector<uint16_t> occupancy_;
  std::vector<Entry> history_;
  uint32_t now_ = 0;
};

// LeCaR's history (Vietri et al., HotStorage'18; CACHEUS, Rodriguez et al., FAST'21, keeps it):
// the keys evicted by one expert's choice where the other expert would have evicted another
// block, each with that expert and the time of the eviction, so that a later miss on the key
// charges the expert that evicted it. Only the simulations' key sample is remembered (the tier's
// per-slot budget has no room for the expert: the evicted-keys cell is 14 bits of fingerprint and
// a 2-bit count), in one entry per simulated block, direct-mapped (LeCaR keeps |H_1| + |H_2| <= N,
// the cache size; a new ghost overwrites an old one); time is counted in sampled references, so
// the sample is LeCaR on a miniature cache (SHARDS' scaling) and the weights move per cache
// turnover as LeCaR's. Entry: 15-bit key fingerprint and the expert (0 or 1), 32-bit time; 6
// bytes. Not thread-safe: the policy's sampler lock.
class RegretHistory {
 public:
  explicit RegretHistory(uint32_t size) : cells_(size) {}

  void Record(uint64_t key, int expert, uint32_t now) {
    uint16_t fp;
    Cell& c = CellOf(key, &fp);
    c = Cell{static_cast<uint16_t>(fp | expert), static_cast<uint16_t>(now),
             static_cast<uint16_t>(now >> 16)};
  }
  // The expert that evicted `key` and the time (forgetting it: LeCaR removes a ghost it hits);
  // false when it is not remembered.
  bool Take(uint64_t key, int* expert, uint32_t* when) {
    uint16_t fp;
    Cell& c = CellOf(key, &fp);
    if (c.tag == 0 || (c.tag & ~1) != fp) return false;
    *expert = c.tag & 1;
    *when = c.time_lo | (uint32_t{c.time_hi} << 16);
    c = Cell{};
    return true;
  }
  size_t MemoryBytes() const { return cells_.size() * sizeof(Cell); }

 private:
  struct Cell {
    uint16_t tag = 0;  // fingerprint << 1 | expert; 0: empty
    uint16_t time_lo = 0, time_hi = 0;
  };
  static_assert(sizeof(Cell) == 6);
  Cell& CellOf(uint64_t key, uint16_t* fingerprint) {
    const uint64_t h = Mix(key ^ 0x5851F42D4C957F2DULL);
    *fingerprint = static_cast<uint16_t>(std::max<uint64_t>(1, h & 0x7FFF) << 1);
    return cells_[((h >> 32) * cells_.size()) >> 32];
  }
  std::vector<Cell> cells_;
};

class LearnedPolicy final : public EvictionPolicy {
 public:
  LearnedPolicy(uint32_t capacity, const LearnedOptions& options)
      : EvictionPolicy(capacity),
        forced_(options.leader != LearnedLeader::kFollow),
        regret_(options.leader == LearnedLeader::kRegret),
        nodes_(new Node[capacity]),
        sample_shift_(SampleShift(capacity, 256)),
        sim_shift_(SampleShift(capacity, 1024)),
        evicted_(capacity),
        optgen_(std::max<uint32_t>(1, capacity >> sample_shift_)),
        sampled_keys_(std::max<uint32_t>(1, capacity >> sim_shift_)),
        regret_history_(regret_ ? std::max<uint32_t>(1, capacity >> sim_shift_) : 0),
        regret_discount_(std::pow(kRegretDiscountAtCapacity,
                                  1.0 / std::max<uint32_t>(1, capacity >> sim_shift_))) {
    for (auto& c : predictor_) c.store(kFriendly, std::memory_order_relaxed);
    if (forced_ && !regret_)
      leader_.store(static_cast<int>(options.leader) - 1, std::memory_order_relaxed);
    sims_.reserve(kExperts);
    for (int e = 0; e < kExperts; ++e)
      sims_.emplace_back(std::max<uint32_t>(1, capacity >> sim_shift_), e);
  }

  PolicyKind kind() const override { return regret_ ? PolicyKind::kRegret : PolicyKind::kLearned; }
  void OnInsert(uint32_t slot, uint32_t parent, uint64_t key_hash) override {
    Node& n = nodes_[slot];
    // Not live (OnRemove came first), so no other thread writes its fields.
    const uint8_t gen = static_cast<uint8_t>(Gen(n.flags.load(std::memory_order_relaxed)) + 1);
    uint8_t parent_gen = 0, depth = 0, parent_hits = 0;
    if (parent != kNoSlot) {
      const Node& p = nodes_[parent];
      const uint8_t pf = p.flags.load(std::memory_order_acquire);
      if (pf & kLiveBit) {
        parent_gen = Gen(pf);
        depth = static_cast<uint8_t>(std::min(255, p.depth.load(std::memory_order_relaxed) + 1));
        parent_hits = p.meta.load(std::memory_order_relaxed) & kHitsMask;
        nodes_[parent].children.fetch_add(1, std::memory_order_relaxed);
      } else {
        parent = kNoSlot;
      }
    }
    // Evictions of this key remembered (it was cached a short while ago: a ghost hit).
    const uint8_t seen = evicted_.Count(key_hash);
    if (seen == 0) small_.fetch_add(1, std::memory_order_relaxed);
    const uint8_t sig = Signature(seen, parent_hits, depth);
    const bool sampled = IsSampled(key_hash, sim_shift_);
    n.children.store(0, std::memory_order_relaxed);
    n.depth.store(depth, std::memory_order_relaxed);
    n.meta.store(static_cast<uint8_t>((parent_gen << kGenShift) | seen), std::memory_order_relaxed);
    n.parent.store(parent, std::memory_order_relaxed);
    n.last.store(clock_.fetch_add(1, std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    n.sig.store(sig, std::memory_order_relaxed);
    bool tracked = false;
    if (sampled) {
      std::lock_guard lock(sampler_mu_);
      tracked = sampled_keys_.Track(slot, key_hash);
      if (regret_) Regret(key_hash);
      Sampled(key_hash, sig);
    }
    n.flags.store(static_cast<uint8_t>((gen << kGenShift) | kLiveBit | (tracked ? kSampledBit : 0)),
                  std::memory_order_release);
  }

  void OnAccess(uint32_t slot) override {
    Node& n = nodes_[slot];
    const uint8_t f = n.flags.load(std::memory_order_acquire);
    if (!(f & kLiveBit)) return;
    uint8_t m = n.meta.load(std::memory_order_relaxed);
    uint8_t hits = static_cast<uint8_t>(std::min((m & kHitsMask) + 1, int{kHitsMask}));
    if ((m & kHitsMask) == 0) {
      // It leaves the small queue: counted once, by whichever racing hit sets the count.
      if (n.meta.compare_exchange_strong(m, static_cast<uint8_t>(m | 1), std::memory_order_relaxed))
        small_.fetch_sub(1, std::memory_order_relaxed);
      hits = static_cast<uint8_t>(std::max(1, m & kHitsMask));
    } else {
      n.meta.store(static_cast<uint8_t>((m & ~kHitsMask) | hits), std::memory_order_relaxed);
    }
    n.last.store(clock_.load(std::memory_order_relaxed), std::memory_order_relaxed);
    uint8_t parent_hits = 0;
    const uint32_t parent = n.parent.load(std::memory_order_relaxed);
    if (parent != kNoSlot && IsIncarnation(nodes_[parent], ParentGen(m)))
      parent_hits = nodes_[parent].meta.load(std::memory_order_relaxed) & kHitsMask;
    const uint8_t sig = Signature(hits, parent_hits, n.depth.load(std::memory_order_relaxed));
    n.sig.store(sig, std::memory_order_relaxed);
    if (f & kSampledBit) {
      std::lock_guard lock(sampler_mu_);
      uint64_t key;
      if (sampled_keys_.Key(slot, &key)) Sampled(key, sig);
    }
  }

  void OnEvict(uint32_t slot, uint64_t key_hash) override {
    const uint8_t f = nodes_[slot].flags.load(std::memory_order_acquire);
    if (f & kLiveBit) {
      evicted_.Record(key_hash);
      if (regret_ && (f & kSampledBit)) {
        // The expert whose choice evicted this slot, when the two disagreed (PickVictim).
        const uint64_t pick = last_pick_.load(std::memory_order_relaxed);
        if (static_cast<uint32_t>(pick) == slot && (pick >> 32) != kNoExpert) {
          std::lock_guard lock(sampler_mu_);
          regret_history_.Record(key_hash, static_cast<int>(pick >> 32),
                                 static_cast<uint32_t>(sim_refs_));
        }
      }
    }
    OnRemove(slot);
  }
  void OnRemove(uint32_t slot) override {
    Node& n = nodes_[slot];
    const uint8_t f = n.flags.load(std::memory_order_acquire);
    if (!(f & kLiveBit)) return;
    n.flags.store(static_cast<uint8_t>(f & ~(kLiveBit | kSampledBit)), std::memory_order_release);
    if (f & kSampledBit) {
      std::lock_guard lock(sampler_mu_);
      sampled_keys_.Untrack(slot);
    }
    const uint8_t m = n.meta.load(std::memory_order_relaxed);
    if ((m & kHitsMask) == 0) small_.fetch_sub(1, std::memory_order_relaxed);
    const uint32_t parent = n.parent.load(std::memory_order_relaxed);
    // The parent may have left first and its slot may hold another block now: only the
    // incarnation the child was inserted under is decremented.
    if (parent != kNoSlot && IsIncarnation(nodes_[parent], ParentGen(m))) {
      auto& c = nodes_[parent].children;
      uint16_t v = c.load(std::memory_order_relaxed);
      while (v > 0 && !c.compare_exchange_weak(v, v - 1, std::memory_order_relaxed)) {
      }
    }
  }

  uint32_t PickVictim(FunctionRef<bool(uint32_t)> evictable) override {
    std::lock_guard lock(mu_);
    const uint32_t now = clock_.load(std::memory_order_relaxed);
    const uint32_t nursery = capacity() / 10;
    const int64_t small = small_.load(std::memory_order_relaxed);
    const bool from_small = small >= int64_t{capacity() / 10};
    const bool t1_first = small > int64_t{arc_target_.load(std::memory_order_relaxed)};
    const int leader = leader_.load(std::memory_order_relaxed);
    uint32_t victim = kNoSlot;
    uint64_t victim_rank = UINT64_MAX;
    // kRegret: the `fifo` expert's choice beside the `arc` expert's (victim, victim_rank).
    uint32_t fifo_victim = kNoSlot;
    uint64_t fifo_rank = UINT64_MAX;
    uint32_t eligible = 0;
    for (uint32_t probe = 0; probe < capacity() && eligible < kCandidates; ++probe) {
      const uint32_t s = cursor_;
      cursor_ = static_cast<uint32_t>((uint64_t{cursor_} + stride_) % capacity());
      const Node& n = nodes_[s];
      if (!(n.flags.load(std::memory_order_acquire) & kLiveBit) || !evictable(s)) continue;
      const uint32_t last = n.last.load(std::memory_order_relaxed);
      // Inserts since the block's last access. Puts on other threads go on while the window is
      // ranked (OnInsert and OnAccess take no policy lock): a block inserted or read after `now`
      // was read has `last` ahead of it and is the newest, age 0 (wrap-safe, as Bypassed), not
      // 2^32 inserts old, which would take it out of the nursery and evict it first.
      const uint32_t age = static_cast<int32_t>(now - last) > 0 ? now - last : 0;
      const bool interior = n.children.load(std::memory_order_relaxed) > 0;
      const bool young = age < nursery;
      const bool averse = Bypassed(n, last) || !Friendly(n.sig.load(std::memory_order_relaxed));
      if (!interior && !young) ++eligible;
      const uint64_t hits = n.meta.load(std::memory_order_relaxed) & kHitsMask;
      // Whoever leads: leaves before blocks with cached children (prefix order), blocks older
      // than the newest tenth before the newest (the nursery), then the leader's order.
      const Features features{hits, age, averse, from_small, t1_first};
      const uint64_t order = (uint64_t{interior} << 62) | (uint64_t{young} << 61);
      const uint64_t rank = order | ExpertRank(regret_ ? kArc : leader, features, capacity());
      if (rank < victim_rank) {
        victim_rank = rank;
        victim = s;
      }
      if (regret_) {
        const uint64_t r = order | ExpertRank(kFifo, features, capacity());
        if (r < fifo_rank) {
          fifo_rank = r;
          fifo_victim = s;
        }
      }
    }
    if (victim == kNoSlot) return kNoSlot;
    if (regret_) {
      // LeCaR: the victim is drawn by the experts' weights; where both would evict the same block
      // neither is charged if it comes back. The draw is a hash of the eviction count, so replays
      // stay deterministic.
      uint64_t expert = kNoExpert;
      if (fifo_victim != victim) {
        const double u = static_cast<double>(Mix(++draws_ ^ 0x9E3779B97F4A7C15ULL) >> 11) * 0x1p-53;
        expert = u < arc_weight_.load(std::memory_order_relaxed) ? kRegretArc : kRegretFifo;
        if (expert == kRegretFifo) victim = fifo_victim;
      }
      last_pick_.store((expert << 32) | victim, std::memory_order_relaxed);
      return victim;
    }
    if (leader == kDeadBlock && (victim_rank >> 59) == 1) {
      // a friendly old leaf goes: detrain (Hawkeye)
      auto& c = predictor_[nodes_[victim].sig.load(std::memory_order_relaxed) & kSigMask];
      const uint8_t v = c.load(std::memory_order_relaxed);
      if (v > 0) c.store(v - 1, std::memory_order_relaxed);
    }
    return victim;
  }

  bool HasChildren(uint32_t slot) const override {
    const Node& n = nodes_[slot];
    return (n.flags.load(std::memory_order_acquire) & kLiveBit) &&
           n.children.load(std::memory_order_relaxed) > 0;
  }
  uint32_t Frequency(uint32_t slot) const override {
    const Node& n = nodes_[slot];
    if (!(n.flags.load(std::memory_order_acquire) & kLiveBit)) return 0;
    return (n.meta.load(std::memory_order_relaxed) & kHitsMask) + 1u;
  }
  // The node and the evicted-keys table's share (2 bytes); OPTgen, the predictor, the sampled
  // keys and the simulations are fixed, whatever the capacity.
  size_t BytesPerSlot() const override {
    return sizeof(Node) + (evicted_.MemoryBytes() + capacity() - 1) / capacity();
  }
  // Sizes fixed at construction: read without sampler_mu_.
  NO_THREAD_SAFETY_ANALYSIS size_t FixedBytes() const override {
    size_t bytes = sizeof(predictor_) + optgen_.MemoryBytes() + sampled_keys_.MemoryBytes();
    for (const MiniSim& s : sims_) bytes += s.MemoryBytes();
    return bytes + regret_history_.MemoryBytes();
  }

 private:
  static constexpr uint64_t kDecayLaps = 4;  // simulated hits halve every 4 simulated capacities
  static constexpr double kSwitchSigmas = 3; // a challenger leads by three standard deviations
  static constexpr uint8_t kFriendly = 4;    // predictor counters: 0..7, friendly from 4
  static constexpr uint8_t kMaxCounter = 7;
  static constexpr uint8_t kSigMask = 0x7F;  // 128 signatures
  static constexpr uint8_t kHitsMask = 15;   // meta: references remembered, saturating
  static constexpr int kGenShift = 4;        // meta: parent's incarnation; flags: own
  static constexpr uint8_t kLiveBit = 1;     // flags
  static constexpr uint8_t kSampledBit = 2;  // flags: the key is in the sample (SampledKeys)
  // kRegret: LeCaR's constants (HotStorage'18, and CACHEUS's LeCaR): learning rate 0.45, a regret
  // discounted to 0.005 after one cache size of requests, weights kept within [0.01, 0.99].
  static constexpr double kRegretLearningRate = 0.45;
  static constexpr double kRegretDiscountAtCapacity = 0.005;
  static constexpr double kRegretMinWeight = 0.01;
  static constexpr uint64_t kRegretArc = 0, kRegretFifo = 1, kNoExpert = 2;  // last_pick_ >> 32

  // Node: 16 bytes per slot (two spare).
  struct Node {
    std::atomic<uint32_t> parent{kNoSlot};
    std::atomic<uint32_t> last{0};      // insert clock at the last access
    std::atomic<uint16_t> children{0};  // cached children
    std::atomic<uint8_t> sig{0};        // signature at the last access
    std::atomic<uint8_t> depth{0};      // position in the chain (saturating)
    std::atomic<uint8_t> meta{0};       // references remembered, parent incarnation
    std::atomic<uint8_t> flags{0};      // live, sampled, incarnation
  };
  static_assert(sizeof(Node) == 16);

  // A block's signature: its reference count (0..3), its parent's (0..3: is the chain being
  // reused), and its depth's log2 bucket (0..7).
  static uint8_t Signature(uint8_t hits, uint8_t parent_hits, uint8_t depth) {
    const int bucket = std::min(7, static_cast<int>(std::bit_width(depth)));
    return static_cast<uint8_t>(std::min<int>(hits, 3) | (std::min<int>(parent_hits, 3) << 2) |
                                (bucket << 4));
  }
  // The shift R = 2^shift that leaves about `target` blocks of sampled capacity (Hawkeye samples
  // 64 sets of 16 blocks for OPTgen; SHARDS' fixed-size samples for the simulations).
  static int SampleShift(uint32_t capacity, uint32_t target) {
    int shift = 0;
    while ((capacity >> (shift + 1)) >= target) ++shift;
    return shift;
  }
  // The simulations' sample (1 in 2^sim_shift_ keys) holds OPTgen's (1 in 2^sample_shift_).
  static bool IsSampled(uint64_t key_hash, int shift) {
    return (Mix(key_hash ^ 0x2127599BF4325C37ULL) & ((uint64_t{1} << shift) - 1)) == 0;
  }
  bool Friendly(uint8_t sig) const {
    return predictor_[sig & kSigMask].load(std::memory_order_relaxed) >= kFriendly;
  }
  void Train(uint8_t sig, bool kept) {
    auto& c = predictor_[sig & kSigMask];
    const uint8_t v = c.load(std::memory_order_relaxed);
    if (kept && v < kMaxCounter) c.store(v + 1, std::memory_order_relaxed);
    if (!kept && v > 0) c.store(v - 1, std::memory_order_relaxed);
  }

  // A reference (insert or hit) of a sampled key: every expert's simulation sees it, and the
  // leader follows them; OPTgen trains the predictor on its own, smaller sample.
  void Sampled(uint64_t key_hash, uint8_t sig) REQUIRES_LOCK(sampler_mu_) {
    if (IsSampled(key_hash, sample_shift_))
      optgen_.Access(key_hash, sig, [this](uint8_t s, bool kept) { Train(s, kept); });
    Simulate(key_hash, sig);
  }

  // The leader is the expert whose simulation hit most (hits halved every kDecayLaps simulated
  // capacities of references), replaced only when a challenger's lead exceeds kSwitchSigmas
  // standard deviations of the difference (Poisson counts, taken as independent: conservative,
  // as the simulations' hits are positively correlated), so that noise does not mix orderings:
  // a cache filled by one ordering is not what another would have kept. Three, not two: with
  // five experts compared after every sampled reference, a two-sigma lead (one-sided p = 0.023
  // per comparison) is crossed by chance again and again over a replay; three (0.0013) is the
  // usual bound for many looks at the same data (issue 17, sixth pass: docs/store.md).
  void Simulate(uint64_t key_hash, uint8_t sig) REQUIRES_LOCK(sampler_mu_) {
    auto friendly = [this](uint8_t s) { return Friendly(s); };
    for (int e = 0; e < kExperts; ++e)
      if (sims_[e].Access(key_hash, sig, friendly)) sim_hits_[e] += 1;
    const MiniSim& arc = sims_[kArc];
    arc_target_.store(static_cast<uint32_t>(uint64_t{arc.Target()} * capacity() / arc.capacity()),
                      std::memory_order_relaxed);
    const uint64_t sim_capacity = std::max<uint32_t>(1, capacity() >> sim_shift_);
    if (++sim_refs_ % (kDecayLaps * sim_capacity) == 0)
      for (double& h : sim_hits_) h /= 2;
    if (forced_) return;
    const int leader = leader_.load(std::memory_order_relaxed);
    int best = leader;
    for (int e = 0; e < kExperts; ++e)
      if (sim_hits_[e] > sim_hits_[best]) best = e;
    if (best != leader && sim_hits_[best] - sim_hits_[leader] >
                              kSwitchSigmas * std::sqrt(sim_hits_[best] + sim_hits_[leader]))
      leader_.store(best, std::memory_order_relaxed);
  }

  // kRegret, a miss on a sampled key: when the history remembers which expert evicted it, that
  // expert's weight is multiplied by exp(-learning rate x discount^age), age in sampled
  // references since the eviction, and the weights renormalised (LeCaR's update; CACHEUS's LeCaR
  // also clamps them to [0.01, 0.99] so that neither expert is ruled out for good).
  void Regret(uint64_t key_hash) REQUIRES_LOCK(sampler_mu_) {
    int expert;
    uint32_t when;
    if (!regret_history_.Take(key_hash, &expert, &when)) return;
    const uint32_t age = static_cast<uint32_t>(sim_refs_) - when;
    const double cut = std::exp(-kRegretLearningRate * std::pow(regret_discount_, age));
    double arc = arc_weight_.load(std::memory_order_relaxed);
    double fifo = 1 - arc;
    (expert == static_cast<int>(kRegretArc) ? arc : fifo) *= cut;
    arc = std::clamp(arc / (arc + fifo), kRegretMinWeight, 1 - kRegretMinWeight);
    arc_weight_.store(arc, std::memory_order_relaxed);
  }

  static uint8_t Gen(uint8_t flags) { return flags >> kGenShift; }
  static uint8_t ParentGen(uint8_t meta) { return meta >> kGenShift; }
  static bool IsIncarnation(const Node& n, uint8_t gen) {
    const uint8_t f = n.flags.load(std::memory_order_acquire);
    return (f & kLiveBit) && Gen(f) == gen;
  }
  // Read after `last` by a request that did not read this block: the chain went on elsewhere.
  bool Bypassed(const Node& n, uint32_t last) const {
    const uint32_t parent = n.parent.load(std::memory_order_relaxed);
    if (parent == kNoSlot) return false;
    const Node& p = nodes_[parent];
    if (!IsIncarnation(p, ParentGen(n.meta.load(std::memory_order_relaxed)))) return false;
    return static_cast<int32_t>(p.last.load(std::memory_order_relaxed) - last) > 0;
  }

  const bool forced_;  // one expert leads throughout (LearnedOptions::leader), or kRegret
  const bool regret_;  // LearnedLeader::kRegret: arc and fifo mixed by LeCaR's weights
  std::unique_ptr<Node[]> nodes_;
  std::atomic<uint32_t> clock_{0};    // inserts so far
  std::atomic<uint8_t> predictor_[kSigMask + 1];
  const int sample_shift_;  // OPTgen's sample: 1 in 2^shift keys
  const int sim_shift_;     // the simulations' sample
  EvictedKeys evicted_;
  std::atomic<int64_t> small_{0};  // live blocks with no reference remembered (the small queue)
  std::atomic<int> leader_{kFirstLeader};  // written under sampler_mu_, read by PickVictim
  // ARC's p scaled to the real capacity: the ARC simulation's, whose ghost lists see the sample's
  // evictions (written under sampler_mu_, read by PickVictim).
  std::atomic<uint32_t> arc_target_{0};
  SpinLock sampler_mu_;
  OptGen optgen_ GUARDED_BY(sampler_mu_);
  SampledKeys sampled_keys_ GUARDED_BY(sampler_mu_);
  std::vector<MiniSim> sims_ GUARDED_BY(sampler_mu_);  // one per expert
  RegretHistory regret_history_ GUARDED_BY(sampler_mu_);  // kRegret only; empty otherwise
  const double regret_discount_;  // per sampled reference: 0.005 after a sampled capacity
  // kRegret: the `arc` expert's weight (`fifo`'s is 1 - it), written under sampler_mu_.
  std::atomic<double> arc_weight_{0.5};
  // kRegret: the last victim (low 32 bits) and the expert that chose it (kNoExpert: both agreed).
  std::atomic<uint64_t> last_pick_{uint64_t{kNoExpert} << 32 | kNoSlot};
  uint64_t draws_ GUARDED_BY(mu_) = 0;
  double sim_hits_[kExperts] GUARDED_BY(sampler_mu_) = {};
  uint64_t sim_refs_ GUARDED_BY(sampler_mu_) = 0;
  std::mutex mu_;
  uint32_t cursor_ GUARDED_BY(mu_) = 0;
  const uint32_t stride_ = Stride(capacity());
};

}  // namespace

Result<LearnedLeader> ParseLearnedLeader(std::string_view name) {
  constexpr std::pair<std::string_view, LearnedLeader> kNames[] = {
      {"follow", LearnedLeader::kFollow},       {"dead_block", LearnedLeader::kDeadBlock},
      {"recency", LearnedLeader::kRecency},     {"frequency", LearnedLeader::kFrequency},
      {"fifo", LearnedLeader::kFifo},           {"arc", LearnedLeader::kArc},
      {"regret", LearnedLeader::kRegret}};
  for (const auto& [n, leader] : kNames)
    if (n == name) return leader;
  return Status::InvalidArgument(
      "unknown learned leader '" + std::string(name) +
      "' (expected follow, dead_block, recency, frequency, fifo, arc or regret)");
}

std::unique_ptr<EvictionPolicy> MakeLearnedPolicy(uint32_t capacity,
                                                  const LearnedOptions& options) {
  return std::make_unique<LearnedPolicy>(capacity, options);
}

}  // namespace strata::store
