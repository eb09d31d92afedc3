#include "store/learned_policy.h"

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <mutex>
#include <numeric>
#include <vector>

#include "store/frequency_sketch.h"
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

// OPTgen (Jain & Lin, ISCA'16) over a sample of the keys: for each access of a sampled key it
// answers "would Belady's MIN, with `capacity` blocks for the sampled keys, have kept this block
// since its previous access?" and reports the signature of that previous access with the answer.
//
// Time is the count of sampled accesses. occupancy_[t mod W] counts the blocks MIN keeps across
// time t; a reuse interval [t0, t) fits when every counter in it is below the capacity, and then
// takes one unit of each. Accesses older than the window (W = 8 x capacity, Hawkeye's) count as
// not reused. The history is direct-mapped by key hash; an entry displaced while still inside
// the window trains nothing (a collision says nothing about reuse).
//
// Memory: W 16-bit counters, 2W history entries of 12 bytes, a slot map of 4 x capacity entries.
// Not thread-safe: the policy serialises it with its sampler lock.
class OptGen {
 public:
  explicit OptGen(uint32_t capacity)
      : capacity_(capacity),
        window_(8 * capacity),
        occupancy_(window_, 0),
        history_(std::bit_ceil(2 * window_)),
        slots_(std::bit_ceil(4 * std::max<uint32_t>(capacity, 64))) {}

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

  // The sampled keys that are cached, by slot (linear probing, backward-shift deletion).
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

  size_t MemoryBytes() const {
    return occupancy_.size() * sizeof(uint16_t) + history_.size() * sizeof(Entry) +
           slots_.size() * sizeof(SlotKey);
  }

 private:
  struct Entry {
    uint32_t tag = 0;
    uint32_t time = 0;
    uint8_t sig = 0;
    bool valid = false;
  };
  struct SlotKey {
    uint32_t slot = kNoSlot;
    uint64_t key = 0;
  };
  size_t Home(uint32_t slot) const { return Mix(slot) & (slots_.size() - 1); }
  size_t Next(size_t i) const { return (i + 1) & (slots_.size() - 1); }

  const uint32_t capacity_;
  const uint32_t window_;
  std::vector<uint16_t> occupancy_;
  std::vector<Entry> history_;
  std::vector<SlotKey> slots_;
  size_t tracked_ = 0;
  uint32_t now_ = 0;
};

class LearnedPolicy final : public EvictionPolicy {
 public:
  explicit LearnedPolicy(uint32_t capacity)
      : EvictionPolicy(capacity),
        nodes_(new Node[capacity]),
        sample_shift_(SampleShift(capacity)),
        sketch_(std::bit_floor(capacity)),  // at most 2 bytes per slot
        optgen_(std::max<uint32_t>(1, capacity >> sample_shift_)),
        ghosts_(std::bit_ceil(4 * std::max<uint32_t>(64, capacity >> sample_shift_))) {
    for (auto& c : predictor_) c.store(kFriendly, std::memory_order_relaxed);
  }

  PolicyKind kind() const override { return PolicyKind::kLearned; }
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
    // Inserts of this key the sketch remembers (it was cached before and evicted: a ghost hit).
    const uint8_t seen = static_cast<uint8_t>(std::min<uint32_t>(3, sketch_.Estimate(key_hash)));
    sketch_.Increment(key_hash);
    const uint8_t sig = Signature(seen, parent_hits, depth);
    const bool sampled = IsSampled(key_hash);
    n.children.store(0, std::memory_order_relaxed);
    n.depth.store(depth, std::memory_order_relaxed);
    n.meta.store(static_cast<uint8_t>((parent_gen << kGenShift) | seen), std::memory_order_relaxed);
    n.parent.store(parent, std::memory_order_relaxed);
    n.last.store(clock_.fetch_add(1, std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    n.sig.store(sig, std::memory_order_relaxed);
    bool tracked = false;
    if (sampled) {
      std::lock_guard lock(sampler_mu_);
      tracked = optgen_.Track(slot, key_hash);
      n.nominated = 0;
      CheckGhost(key_hash, clock_.load(std::memory_order_relaxed));
      optgen_.Access(key_hash, sig, [this](uint8_t s, bool kept) { Train(s, kept); });
    }
    n.flags.store(static_cast<uint8_t>((gen << kGenShift) | kLiveBit | (tracked ? kSampledBit : 0) |
                                       (seen << kSeenShift)),
                  std::memory_order_release);
  }

  void OnAccess(uint32_t slot) override {
    Node& n = nodes_[slot];
    const uint8_t f = n.flags.load(std::memory_order_acquire);
    if (!(f & kLiveBit)) return;
    const uint8_t m = n.meta.load(std::memory_order_relaxed);
    const uint8_t hits = std::min<uint8_t>((m & kHitsMask) + 1, kHitsMask);
    n.meta.store(static_cast<uint8_t>((m & ~kHitsMask) | hits), std::memory_order_relaxed);
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
      if (optgen_.Key(slot, &key))
        optgen_.Access(key, sig, [this](uint8_t s, bool kept) { Train(s, kept); });
      CheckNominated(n, clock_.load(std::memory_order_relaxed));
    }
  }

  void OnRemove(uint32_t slot) override {
    Node& n = nodes_[slot];
    const uint8_t f = n.flags.load(std::memory_order_acquire);
    if (!(f & kLiveBit)) return;
    n.flags.store(static_cast<uint8_t>(f & ~(kLiveBit | kSampledBit)), std::memory_order_release);
    if (f & kSampledBit) {
      std::lock_guard lock(sampler_mu_);
      optgen_.Untrack(slot);
    }
    const uint32_t parent = n.parent.load(std::memory_order_relaxed);
    // The parent may have left first and its slot may hold another block now: only the
    // incarnation the child was inserted under is decremented.
    if (parent != kNoSlot && IsIncarnation(nodes_[parent], ParentGen(n.meta.load()))) {
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
    const uint64_t credit = capacity() / 2;
    uint32_t best[kExperts];
    uint64_t best_rank[kExperts];
    std::fill(best, best + kExperts, kNoSlot);
    std::fill(best_rank, best_rank + kExperts, UINT64_MAX);
    uint32_t eligible = 0;
    for (uint32_t probe = 0; probe < capacity() && eligible < kCandidates; ++probe) {
      const uint32_t s = cursor_;
      cursor_ = static_cast<uint32_t>((uint64_t{cursor_} + stride_) % capacity());
      const Node& n = nodes_[s];
      if (!(n.flags.load(std::memory_order_acquire) & kLiveBit) || !evictable(s)) continue;
      const uint32_t last = n.last.load(std::memory_order_relaxed);
      const bool interior = n.children.load(std::memory_order_relaxed) > 0;
      const bool young = now - last < nursery;
      const bool bypassed = Bypassed(n, last);
      const bool averse = bypassed || !Friendly(n.sig.load(std::memory_order_relaxed));
      if (!interior && !young) ++eligible;
      const uint64_t hits = n.meta.load(std::memory_order_relaxed) & kHitsMask;
      const uint64_t recency = uint64_t{kAgeLimit} - std::min<uint64_t>(now - last, kAgeLimit);
      // Every expert keeps prefix order (a leaf before an interior block); lowest rank first.
      const uint64_t leaf = uint64_t{interior} << 63;
      uint64_t rank[kExperts];
      // kDeadBlock: leaves, then old, then averse (predicted dead), then recency with a
      // frequency credit of half a turnover per remembered reuse (up to 3).
      rank[kDeadBlock] = leaf | (uint64_t{young} << 62) | (uint64_t{!averse} << 61) |
                         (recency + std::min<uint64_t>(hits, 3) * credit);
      // kRecency: least recently used (LRU).
      rank[kRecency] = leaf | recency;
      // kProbation: blocks not reused since they were stored (hits beyond the count they were
      // inserted with) or bypassed go first, oldest first (S3-FIFO's small queue, ARC's T1).
      const uint64_t seen = (n.flags.load(std::memory_order_relaxed) & kSeenMask) >> kSeenShift;
      rank[kProbation] = leaf | (uint64_t{hits > seen && !bypassed} << 62) | recency;
      // kFrequency: GDSF (priority = clock + frequency), a whole turnover per reuse (up to 15).
      rank[kFrequency] = leaf | (recency + hits * capacity());
      for (int e = 0; e < kExperts; ++e)
        if (rank[e] < best_rank[e]) {
          best_rank[e] = rank[e];
          best[e] = s;
        }
    }
    const uint32_t victim = best[leader_];
    if (victim == kNoSlot) return kNoSlot;
    if (victim == best[kDeadBlock] && (best_rank[kDeadBlock] >> 61) == 1) {
      // a friendly leaf goes: detrain (Hawkeye)
      auto& c = predictor_[nodes_[victim].sig.load(std::memory_order_relaxed) & kSigMask];
      const uint8_t v = c.load(std::memory_order_relaxed);
      if (v > 0) c.store(v - 1, std::memory_order_relaxed);
    }
    Referee(best, victim, now);
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
  // The node and the sketch's share (1-2 bytes); OPTgen and the predictor are fixed.
  size_t BytesPerSlot() const override {
    return sizeof(Node) + (sketch_.MemoryBytes() + capacity() - 1) / capacity();
  }

 private:
  static constexpr uint32_t kCandidates = 8;     // eligible leaves ranked per eviction
  // The experts: orderings of the same candidates (PickVictim). The leader's choice is evicted.
  static constexpr int kDeadBlock = 0, kRecency = 1, kProbation = 2, kFrequency = 3;
  static constexpr int kExperts = 4;
  static constexpr uint32_t kWindowEpochs = 32;  // a reuse within one capacity of inserts counts
  static constexpr uint64_t kDecayLaps = 4;      // regrets halve every 4 x capacity evictions
  static constexpr double kSwitchMargin = 0.9;   // a challenger needs 10% fewer regrets,
  static constexpr double kSwitchSigmas = 2;     // and two standard errors fewer
  static constexpr uint32_t kAgeLimit = 1u << 31;  // ages beyond this rank as equally old
  static constexpr uint8_t kFriendly = 4;          // predictor counters: 0..7, friendly from 4
  static constexpr uint8_t kMaxCounter = 7;
  static constexpr uint8_t kSigMask = 0x7F;    // 128 signatures
  static constexpr uint8_t kHitsMask = 15;     // meta: reuse count, saturating
  static constexpr int kGenShift = 4;          // meta: parent's incarnation; flags: own
  static constexpr uint8_t kLiveBit = 1;       // flags
  static constexpr uint8_t kSampledBit = 2;    // flags: the key is in OPTgen's sample
  static constexpr int kSeenShift = 2;         // flags: the reuse count it was inserted with
  static constexpr uint8_t kSeenMask = 3 << kSeenShift;

  // Node: 16 bytes per slot (nominated and nominated_epoch under sampler_mu_).
  struct Node {
    std::atomic<uint32_t> parent{kNoSlot};
    std::atomic<uint32_t> last{0};      // insert clock at the last access
    std::atomic<uint16_t> children{0};  // cached children
    std::atomic<uint8_t> sig{0};        // signature at the last access
    std::atomic<uint8_t> depth{0};      // position in the chain (saturating)
    std::atomic<uint8_t> meta{0};       // reuse count, parent incarnation
    std::atomic<uint8_t> flags{0};      // live, sampled, incarnation
    uint8_t nominated = 0;              // experts that nominated it and lost (sampled slots only)
    uint8_t nominated_epoch = 0;        // when (epochs of capacity / kWindowEpochs inserts)
  };
  static_assert(sizeof(Node) == 16);

  // A block's signature: its reuse count (0..3), its parent's (0..3: is the chain being reused),
  // and its depth's log2 bucket (0..7).
  static uint8_t Signature(uint8_t hits, uint8_t parent_hits, uint8_t depth) {
    const int bucket = std::min(7, static_cast<int>(std::bit_width(depth)));
    return static_cast<uint8_t>(std::min<int>(hits, 3) | (std::min<int>(parent_hits, 3) << 2) |
                                (bucket << 4));
  }
  static uint32_t Stride(uint32_t capacity) {
    uint32_t step = std::max<uint32_t>(1, static_cast<uint32_t>(capacity * 0.6180339887));
    while (std::gcd(step, capacity) != 1) --step;
    return step;
  }
  // About 256 sampled blocks of capacity, whatever the capacity (Hawkeye samples 64 sets of 16).
  static int SampleShift(uint32_t capacity) {
    int shift = 0;
    while ((capacity >> (shift + 1)) >= 256) ++shift;
    return shift;
  }
  bool IsSampled(uint64_t key_hash) const {
    return (Mix(key_hash ^ 0x5bd1e995ULL) & ((uint64_t{1} << sample_shift_) - 1)) == 0;
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

  // The referee (regret of each expert, LeCaR/CACHEUS-style, on the sampled keys only so that
  // every expert is judged on the same sample): an expert's nominee that is read again within one
  // capacity of inserts is a regret for it, whether it was evicted (the leader's, and every expert
  // that agreed: seen again when its key is inserted again, through the ghost table) or left
  // cached (seen at its next hit). The leader is the expert with the fewest regrets per
  // nomination, both decayed by half every kDecayLaps x capacity evictions.
  void Referee(const uint32_t* best, uint32_t victim, uint32_t now) {
    std::lock_guard lock(sampler_mu_);
    const uint8_t epoch = Epoch(now);
    uint8_t agreed = 0;
    for (int e = 0; e < kExperts; ++e) {
      if (best[e] == victim) {
        agreed |= static_cast<uint8_t>(1u << e);
        continue;
      }
      if (best[e] == kNoSlot) continue;
      Node& n = nodes_[best[e]];
      if (!(n.flags.load(std::memory_order_relaxed) & kSampledBit)) continue;
      if (n.nominated && static_cast<uint8_t>(epoch - n.nominated_epoch) >= kWindowEpochs)
        n.nominated = 0;  // expired
      if (!(n.nominated & (1u << e))) nominations_[e] += 1;
      if (!n.nominated) n.nominated_epoch = epoch;
      n.nominated |= static_cast<uint8_t>(1u << e);
    }
    uint64_t key;
    if ((nodes_[victim].flags.load(std::memory_order_relaxed) & kSampledBit) &&
        optgen_.Key(victim, &key)) {
      for (int e = 0; e < kExperts; ++e)
        if (agreed & (1u << e)) nominations_[e] += 1;
      const uint64_t h = Mix(key ^ 0x2545F4914F6CDD1DULL);
      ghosts_[h & (ghosts_.size() - 1)] = Ghost{static_cast<uint32_t>(h >> 32), now, agreed};
    }
    if (++evictions_ % (kDecayLaps * capacity()) == 0) {
      for (int e = 0; e < kExperts; ++e) {
        regrets_[e] /= 2;
        nominations_[e] /= 2;
      }
    }
    auto score = [&](int e) { return (regrets_[e] + 1) / (nominations_[e] + 2); };
    int best_e = leader_;
    for (int e = 0; e < kExperts; ++e)
      if (score(e) < score(best_e)) best_e = e;
    // A challenger takes over when its regret rate is lower by 10% and by two standard errors of
    // the difference (binomial), so that noise does not flip the ordering back and forth: mixing
    // two orderings keeps neither's cache contents and is worse than either.
    auto se = [&](int e) {
      const double p = score(e);
      return std::sqrt(p * (1 - p) / (nominations_[e] + 2));
    };
    if (best_e != leader_ && score(best_e) < kSwitchMargin * score(leader_) &&
        score(leader_) - score(best_e) > kSwitchSigmas * std::hypot(se(best_e), se(leader_)))
      leader_ = best_e;
  }
  void Regret(uint8_t mask) REQUIRES_LOCK(sampler_mu_) {
    for (int e = 0; e < kExperts; ++e)
      if (mask & (1u << e)) regrets_[e] += 1;
  }
  // A sampled key is inserted again: was it a victim within the window?
  void CheckGhost(uint64_t key_hash, uint32_t now) REQUIRES_LOCK(sampler_mu_) {
    const uint64_t h = Mix(key_hash ^ 0x2545F4914F6CDD1DULL);
    Ghost& g = ghosts_[h & (ghosts_.size() - 1)];
    if (g.mask && g.tag == static_cast<uint32_t>(h >> 32)) {
      if (now - g.time < capacity()) Regret(g.mask);
      g.mask = 0;
    }
  }
  // A sampled cached block is read: did an expert nominate it within the window?
  void CheckNominated(Node& n, uint32_t now) REQUIRES_LOCK(sampler_mu_) {
    if (n.nominated && static_cast<uint8_t>(Epoch(now) - n.nominated_epoch) < kWindowEpochs)
      Regret(n.nominated);
    n.nominated = 0;
  }
  uint8_t Epoch(uint32_t now) const {
    return static_cast<uint8_t>(now / std::max<uint32_t>(1, capacity() / kWindowEpochs));
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

  std::unique_ptr<Node[]> nodes_;
  std::atomic<uint32_t> clock_{0};  // inserts so far
  std::atomic<uint8_t> predictor_[kSigMask + 1];
  const int sample_shift_;
  FrequencySketch sketch_;  // inserts per key, aged (TinyLFU): memory across evictions
  SpinLock sampler_mu_;
  OptGen optgen_ GUARDED_BY(sampler_mu_);
  struct Ghost {
    uint32_t tag = 0;
    uint32_t time = 0;
    uint8_t mask = 0;  // the experts that nominated the victim
  };
  std::vector<Ghost> ghosts_ GUARDED_BY(sampler_mu_);  // sampled victims, direct-mapped
  double regrets_[kExperts] GUARDED_BY(sampler_mu_) = {};
  double nominations_[kExperts] GUARDED_BY(sampler_mu_) = {};
  uint64_t evictions_ GUARDED_BY(sampler_mu_) = 0;
  int leader_ = kDeadBlock;  // read under mu_, written under mu_ and sampler_mu_
  std::mutex mu_;
  uint32_t cursor_ GUARDED_BY(mu_) = 0;
  // The cursor's step: coprime with the capacity, near capacity / golden ratio, so a sweep
  // visits every slot once per lap and one window's candidates are spread over the slot table
  // (consecutive slots were often refilled together and have similar ages).
  const uint32_t stride_ = Stride(capacity());
};

}  // namespace

std::unique_ptr<EvictionPolicy> MakeLearnedPolicy(uint32_t capacity) {
  return std::make_unique<LearnedPolicy>(capacity);
}

}  // namespace strata::store
