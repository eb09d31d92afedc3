// Eviction policies of the local tiers, shared by the real tiers (block_pool.h, disk_tier.h) and by
// `strata bench trace`, which replays a trace through the very same objects (docs/store.md,
// "Eviction").
//
// A policy ranks *slots*: dense ids in [0, capacity) that a tier assigns to its cached blocks (a
// tier's slot table, the trace replayer's id map). Working on slots rather than keys keeps the
// policy's per-block state in flat arrays (BytesPerSlot() bytes each, counted in the tier's
// metadata budget) and lets the same code run on BlockKeys and on trace block ids.
//
// A block's *parent* is the block of the same chain one position earlier (key[i-1] for key[i]).
// Prefix-aware policies use it: a block whose children are cached is interior and is worth more
// than a leaf, because evicting it would strand every cached descendant (a request only hits a
// prefix).
//
// Thread-safety contract (both policies):
//  - OnInsert/OnAccess/OnRemove may run concurrently from many threads, and concurrently with
//    PickVictim, as long as each slot's own events are ordered by the caller: OnInsert(s)
//    happens-before OnAccess(s) and OnRemove(s), and OnRemove(s) happens-before the next
//    OnInsert(s). OnEvict(s, key) is an OnRemove(s) for these rules.
//  - PickVictim calls are serialised by the caller (one evictor at a time); it never removes the
//    slot it returns, the caller does (OnRemove) once the block is really gone.
//  - "prefix": a hit (OnAccess) is one relaxed atomic store, no lock; OnInsert pushes onto a
//    lock-free ring and takes the policy's own mutex only when that ring is full; OnRemove and
//    PickVictim take it (eviction is the slow path). "lru" keeps an exact doubly-linked list under
//    one spin lock on every call: it is the baseline, not the fast path.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

#include "store/function_ref.h"
#include "strata/result.h"

namespace strata::store {

inline constexpr uint32_t kNoSlot = UINT32_MAX;

enum class PolicyKind : uint8_t {
  kLru = 0,       // exact least-recently-used: the baseline every peer uses
  kPrefix = 1,    // prefix- and frequency-aware CLOCK (docs/store.md)
  kArc = 2,       // classic baselines (classic_policies.h): ARC,
  kS3Fifo = 3,    // S3-FIFO,
  kWTinyLfu = 4,  // W-TinyLFU,
  kGdsf = 5,      // GreedyDual-Size-Frequency
  kLearned = 6,   // prefix + online dead-block prediction (learned_policy.h): the default
  kRegret = 7,  // learned's arc and fifo experts mixed by LeCaR's regret weights (learned_policy.h)
};

std::string_view PolicyKindName(PolicyKind kind);
// "lru", "prefix", "arc", "s3fifo", "wtinylfu", "gdsf", "learned" or "regret"; InvalidArgument
// otherwise.
Result<PolicyKind> ParsePolicyKind(std::string_view name);
// Every kind, the default first.
std::span<const PolicyKind> AllPolicyKinds();

class EvictionPolicy {
 public:
  virtual ~EvictionPolicy() = default;

  virtual PolicyKind kind() const = 0;
  uint32_t capacity() const { return capacity_; }

  // A block entered `slot`. `parent` is the slot of its parent block when that is cached in the
  // same tier, kNoSlot otherwise. `key_hash` is a well-mixed hash of the block's key, for policies
  // that remember keys across evictions (neither built-in policy needs it today).
  // REQUIRES: slot < capacity(), slot not currently inserted; parent == kNoSlot or inserted.
  virtual void OnInsert(uint32_t slot, uint32_t parent, uint64_t key_hash) = 0;
  // The block in `slot` was read (a hit). Ignored when `slot` is not inserted.
  virtual void OnAccess(uint32_t slot) = 0;
  // The block in `slot` left the tier. Ignored when `slot` is not inserted.
  virtual void OnRemove(uint32_t slot) = 0;
  // The block in `slot`, whose key hashes to `key_hash` (as given to OnInsert), was evicted (the
  // slot PickVictim returned): OnRemove, and policies that remember evicted keys (ghosts) note
  // the key. Default: OnRemove.
  virtual void OnEvict(uint32_t slot, uint64_t key_hash) {
    (void)key_hash;
    OnRemove(slot);
  }

  // The slot to evict next: the lowest-ranked inserted slot for which evictable(slot) is true
  // (pinned or in-flight blocks are not). kNoSlot when none is.
  virtual uint32_t PickVictim(FunctionRef<bool(uint32_t)> evictable) = 0;

  // True when `slot` has cached children (it is an interior node of the prefix tree). Tiers use
  // it to admit shared prefixes to the next tier down.
  virtual bool HasChildren(uint32_t slot) const = 0;
  // Accesses of `slot` the policy remembers (saturating, aged); 0 when not inserted.
  virtual uint32_t Frequency(uint32_t slot) const = 0;

  // Bytes of policy state per slot (the tier adds its own index bytes to report the total).
  virtual size_t BytesPerSlot() const = 0;
  // Bytes of policy state that do not grow with the capacity (samples, simulations), fixed at
  // construction; reported with the tier's fixed metadata. Default: none.
  virtual size_t FixedBytes() const { return 0; }

 protected:
  explicit EvictionPolicy(uint32_t capacity) : capacity_(capacity) {}

 private:
  uint32_t capacity_;
};

inline constexpr PolicyKind kDefaultPolicyKind = PolicyKind::kLearned;

// The disk tier's policy under a host tier running `host`: the same, except `learned` and
// `regret` (the same policy with another judge), whose dead-block features read the request
// stream while the disk tier sees the host's victims; their disk analogue is `prefix`. Replayed
// two-tier on the Mooncake trace (`strata bench trace
// --host-fraction F --disk-fraction 0.2 --policy learned --disk-policy D`, docs/benchmarks.md),
// under the `learned` host (issue 17's sixth pass) a `prefix` disk hits 0.278 / 0.212 / 0.159 of
// requests from disk at host 2% / 5% / 10% where a `learned` disk hits 0.188 / 0.138 / 0.103
// (and `lru` 0.207 at 5%).
inline constexpr PolicyKind DiskPolicyFor(PolicyKind host) {
  return host == PolicyKind::kLearned || host == PolicyKind::kRegret ? PolicyKind::kPrefix : host;
}

struct PolicyOptions {
  PolicyKind kind = kDefaultPolicyKind;  // Default: learned.
};

// A policy for slots [0, capacity). InvalidArgument for capacity 0 or a bad option.
Result<std::unique_ptr<EvictionPolicy>> MakeEvictionPolicy(uint32_t capacity,
                                                           const PolicyOptions& options = {});

}  // namespace strata::store
