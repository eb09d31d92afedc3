// BlockPool: the memory-pool tier that HostTier (memfd) and DeviceTier (cudaMalloc) share: a slot
// table (per-block metadata), a lock-striped hash index, a SlabAllocator for payload space and an
// EvictionPolicy, over a region whose copy operations are chosen once at set-up (an operation
// table, not a branch per request).
//
// Per-block metadata (measured by Stats().metadata_bytes / max_blocks, docs/store.md): a 40-byte
// Slot, the policy's per-slot state (learned: 18 bytes), 2 bytes of hash buckets (one per two
// slots, any count: no power-of-two rounding) and the slab allocator's 30 bytes per slab, shared
// by the blocks of the slab. The 64-byte block header itself lives in the header area, one per
// slot (in the shared pool for the host tier, so clients can read it).
//
// Hot paths (Put without eviction, Get, Find, Pin): no malloc, no system call, no global lock: the
// key's index stripe (one of 1024 spin locks), one size class's spin lock, a lock-free free-slot
// stack and relaxed atomics in the policy. Eviction (when the pool is full) serialises on
// evict_mu_; it is the slow path.
//
// Thread-safety: all methods are thread-safe. Reads of a block hold a reader reference (counted
// in the slot, taken under the index stripe lock), so the block cannot be evicted or erased under
// a reader: a PinnedBlock keeps its bytes valid until it is destroyed.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <optional>
#include <vector>

#include "store/eviction_policy.h"
#include "store/slab_allocator.h"
#include "store/spin_lock.h"
#include "store/thread_annotations.h"
#include "store/tier.h"

namespace strata::store {

// Called for each block the pool evicts, while its bytes are still in place and no reader can
// reach it, with the block's header, its payload (a host pointer: the host tier only) and whether
// it had cached children (a shared prefix). The tiered store writes blocks back to disk from here.
// It runs on the evicting thread with the pool's eviction lock held: it must not call back into
// the pool.
using EvictionSink =
    std::function<void(const BlockHeader&, std::span<const std::byte>, bool shared_prefix)>;

struct BlockPoolOptions {
  // Size of one slab: the unit the allocator lends to a size class, and the largest payload the
  // pool accepts. Larger slabs spread their 28 bytes of bookkeeping over more blocks; smaller
  // ones let small pools hold more size classes at once. Default: 16 MiB.
  // REQUIRES: a multiple of 2 MiB, <= 256 MiB.
  uint64_t slab_bytes = uint64_t{16} << 20;
  // Slots (blocks the pool can index). Default: 0, meaning payload capacity / 64 KiB: enough for
  // 64 KiB blocks; set it to capacity / your block size to spend less on metadata.
  uint32_t max_blocks = 0;
  // Eviction policy of this tier. Default: prefix.
  PolicyOptions policy;
  // Verify each put payload against its header checksum (one XXH3 pass over the bytes). Default:
  // true. Turn off only when the producer verified (e.g. a checked transfer).
  bool verify_on_put = true;
  // Called for each evicted block (host tier only). Default: none (evicted blocks are dropped).
  EvictionSink on_evict;
  // Called by a put (Put, Reserve; not TryReserve) that found no free slot or chunk and is about
  // to evict, with its payload length, before it takes the eviction lock: no pool lock is held,
  // so it may wait. The tiered store waits here a bounded time for room in its demotion ring
  // (TieredStoreOptions::demotion_wait). Default: none.
  std::function<void(uint64_t length)> before_evict;
  // Longest pin a caller may ask for; longer TTLs are clamped. Default: 10 minutes.
  std::chrono::milliseconds max_pin_ttl = std::chrono::minutes(10);
  // Tenants whose blocks never share a slab (docs/data-plane.md, "Tenants"); tenant 0 is the
  // shared one. REQUIRES: 1..SlabAllocator::kMaxTenants. Default: 1.
  uint16_t tenants = 1;
  // The tenant of the blocks of a namespace, for puts that carry only a header (Put, PutBatch);
  // kNoTenant refuses the put (PermissionDenied). Default: none (every such block is tenant 0).
  std::function<uint16_t(const NamespaceId&)> tenant_of;
};

// BlockPoolOptions::tenant_of's answer for a namespace whose tenant is not known.
inline constexpr uint16_t kNoTenant = UINT16_MAX;

// How the pool's memory is reached (set up by HostTier / DeviceTier).
struct PoolMemory {
  std::byte* payload_base = nullptr;  // slab region: host or device address
  std::byte* header_base = nullptr;   // max_blocks x 64 bytes, host memory
  void (*copy_in)(std::byte* pool_dst, const std::byte* src, size_t n) = nullptr;
  void (*copy_out)(std::byte* dst, const std::byte* pool_src, size_t n) = nullptr;
  bool host_visible = true;  // payload_base is CPU-addressable (zero-copy views, eviction sink)
};

class BlockPool;

// A block held for zero-copy reading (host-visible pools). Move-only; the block stays valid (not
// evicted, not erased, bytes unchanged) until the PinnedBlock is destroyed or Release()d.
class PinnedBlock {
 public:
  PinnedBlock() = default;
  PinnedBlock(PinnedBlock&& other) noexcept { *this = std::move(other); }
  PinnedBlock& operator=(PinnedBlock&& other) noexcept;
  ~PinnedBlock() { Release(); }

  const BlockHeader& header() const { return header_; }
  std::span<const std::byte> payload() const { return payload_; }
  // Offset of the payload from the pool base (what a client that mapped the pool uses).
  uint64_t offset() const { return offset_; }
  void Release();

 private:
  friend class BlockPool;
  BlockPool* pool_ = nullptr;
  uint32_t slot_ = kNoSlot;
  BlockHeader header_;
  std::span<const std::byte> payload_;
  uint64_t offset_ = 0;
};

// One block of BlockPool::PutBatch: the header that describes it, its payload (host memory that
// stays unchanged until PutBatch returns) and its chain parent (PutOptions::parent).
struct BatchPut {
  BlockHeader header;
  std::span<const std::byte> payload;
  const BlockKey* parent = nullptr;
};

// One block of BlockPool::GetBatch: the key and where its payload goes (in); the header and the
// outcome (out): NotFound, InvalidArgument when `out` is shorter than the payload, IOError when
// the copy failed.
struct BatchGet {
  BlockKey key;
  std::span<std::byte> out;
  BlockHeader header;
  Status status;
};

// Space for a block being written in place by a producer that maps the pool (an engine client of
// the daemon, a transfer landing in the pool): Reserve, write the payload at
// payload_base + offset, then Commit (publish) or Abort. A reservation is invisible to readers,
// to Find and to eviction until it is committed.
struct WriteReservation {
  BlockKey key;
  uint32_t slot = kNoSlot;
  int cls = -1;
  uint64_t offset = 0;  // payload offset from the pool's payload base
  uint64_t length = 0;
};

class BlockPool : public Tier {
 public:
  ~BlockPool() override;
  BlockPool(const BlockPool&) = delete;
  BlockPool& operator=(const BlockPool&) = delete;

  TierKind kind() const override { return kind_; }
  Status Put(const BlockHeader& header, std::span<const std::byte> payload,
             const PutOptions& options = {}) override;
  Result<BlockHeader> Get(const BlockKey& key, std::span<std::byte> out) override;
  Result<BlockLocation> Find(const BlockKey& key) const override;
  Status Pin(const BlockKey& key, std::chrono::milliseconds ttl) override;
  Status Unpin(const BlockKey& key) override;
  Status Erase(const BlockKey& key) override;
  TierStats Stats() const override;

  // Reserves a slot and payload space for `length` bytes of `key` in a slab of `tenant`
  // (evicting as needed). AlreadyExists when the key is cached; NoSpace when nothing can be
  // evicted; PermissionDenied for kNoTenant; InvalidArgument for another tenant out of range.
  Result<WriteReservation> Reserve(const BlockKey& key, uint64_t length, uint16_t tenant = 0);
  // As Reserve, but never evicts (no eviction lock, no write-back, no disk I/O): NoSpace when no
  // free slot or chunk is at hand. For threads that must not block, such as a transport's
  // progress thread placing a pulled block (the puller makes room on its own thread and retries).
  Result<WriteReservation> TryReserve(const BlockKey& key, uint64_t length, uint16_t tenant = 0);
  // The tenant of namespace `ns` (options().tenant_of; 0 without it).
  uint16_t TenantOf(const NamespaceId& ns) const {
    return options_.tenant_of ? options_.tenant_of(ns) : 0;
  }
  // Slabs: the tenant whose bytes each holds (the one it is lent to, or was last lent to).
  uint64_t slab_bytes() const { return alloc_.slab_bytes(); }
  uint32_t num_slabs() const { return alloc_.num_slabs(); }
  uint16_t SlabTenant(uint32_t slab) const { return alloc_.SlabTenant(slab); }
  // Publishes a reservation whose payload has been written. `header` must describe it (key,
  // length); with `verify` the payload is checked against header.payload_checksum first
  // (Corruption: the reservation is released). When the key was published meanwhile by another
  // producer, this one is released and OK returned (same key, same bytes).
  Status Commit(const WriteReservation& reservation, const BlockHeader& header,
                const PutOptions& options, bool verify);
  // Releases a reservation that will not be committed.
  void Abort(const WriteReservation& reservation);
  // Keys of the blocks cached now, of namespace `ns` (every namespace when nullopt).
  std::vector<BlockKey> Keys(const std::optional<NamespaceId>& ns) const;
  // Where payload offsets point (host-visible pools: a CPU address).
  std::byte* payload_base() const { return mem_.payload_base; }

  // Records an access of each cached key of `keys` for the eviction policy (a hit, as a Get),
  // reading no bytes: reads a client made without the pool (the host tier's load index) are
  // reported here. Keys not cached are skipped. Returns how many were.
  size_t Touch(std::span<const BlockKey> keys);

  // Zero-copy read (host-visible pools; NotSupported otherwise). Counts as a hit.
  Result<PinnedBlock> Acquire(const BlockKey& key);

  // Batched copies: the pool reserves or reads every block of the batch first, then moves all
  // the payloads with one CopyInBatch / CopyOutBatch (the device tier: asynchronous copies on one
  // stream and one synchronisation per batch), then publishes or releases them. Per batch, not per
  // block, they allocate their bookkeeping vectors: these are batch paths, not the per-block hot
  // path.
  //
  // PutBatch stores the blocks that are not cached yet: it reserves space for each (stopping at
  // the first block that does not fit), copies the payloads in, and publishes them. With
  // verify_on_put each payload is checked against its header first (a mismatch is Corruption and
  // stores nothing). Returns how many blocks were newly published (cached ones are skipped);
  // the reservation error when none was reserved and some block did not fit; IOError when a copy
  // failed (nothing of the batch is published then).
  Result<size_t> PutBatch(std::span<const BatchPut> blocks);
  // GetBatch copies the payload of each block found into its `out` and sets its header and
  // status; blocks are read under reader references, so none is evicted while copied. The
  // payload is not verified against its checksum here (a device pool cannot be read by the CPU):
  // the caller verifies the bytes where they land (TieredStore::PromoteFromDevice commits them
  // into host with verification). Returns OK, or IOError when the copies failed (then every
  // found block's status is that error too).
  Status GetBatch(std::span<BatchGet> blocks);
  // OK when blocks of `sizes` bytes could all be held at once by this pool when it is empty (each
  // size rounded up to its chunk class, each class to whole slabs). Otherwise NoSpace saying how
  // large the pool would have to be, or InvalidArgument for a size above one slab. A store whose
  // blocks must coexist (reserved together) is refused up front with it.
  Status CheckFits(std::span<const uint64_t> sizes) const;
  // Namespace of the cached block `key` (its header's), for statistics; no access is recorded.
  // NotFound when it is not cached.
  Result<NamespaceId> NamespaceOf(const BlockKey& key) const;

  uint64_t capacity_bytes() const { return uint64_t{alloc_.num_slabs()} * alloc_.slab_bytes(); }
  uint32_t max_blocks() const { return max_blocks_; }
  uint64_t max_payload_bytes() const { return alloc_.slab_bytes(); }
  const EvictionPolicy& policy() const { return *policy_; }

 protected:
  // REQUIRES: options validated by ValidateOptions; memory laid out for num_slabs x slab_bytes of
  // payload and max_blocks headers.
  BlockPool(TierKind kind, const BlockPoolOptions& options, uint32_t num_slabs, uint32_t max_blocks,
            PoolMemory memory, std::unique_ptr<EvictionPolicy> policy);

  // One payload copy of a batch: `n` bytes from `src` to `dst` (pool memory on one side).
  struct BatchCopy {
    std::byte* dst;
    const std::byte* src;
    size_t n;
  };
  // Moves the payloads of a batch into / out of the pool's memory; OK once every copy is done.
  // Default: the pool's copy operations, one after the other (host pools: memcpy). IOError when
  // a copy failed.
  virtual Status CopyInBatch(std::span<const BatchCopy> copies);
  virtual Status CopyOutBatch(std::span<const BatchCopy> copies);

  // Hooks for a pool that mirrors its index elsewhere (HostTier: the load index). OnPublished runs
  // when `slot` (block `header`, payload at `offset`, allocator lane `lane`) becomes reachable;
  // OnUnpublished when it stops being reachable, before its payload may be freed or rewritten.
  // Both run with the key's stripe lock held (a spin lock): no system call, no call into the
  // pool. Default: nothing.
  virtual void OnPublished(uint32_t slot, const BlockHeader& header, uint64_t offset, int lane) {
    (void)slot, (void)header, (void)offset, (void)lane;
  }
  virtual void OnUnpublished(uint32_t slot) { (void)slot; }

  // As Acquire, for every pool: payload() is an address in the pool's own memory (a device
  // address for the device tier), for the pool's copy operations only. Counts as a hit.
  Result<PinnedBlock> AcquireInPlace(const BlockKey& key);
  const BlockPoolOptions& options() const { return options_; }
  SlabAllocator& allocator() { return alloc_; }

  // Checks options and computes (num_slabs, max_blocks) for `capacity_bytes` of payload.
  static Status ValidateOptions(const BlockPoolOptions& options, uint64_t capacity_bytes,
                                uint32_t* num_slabs, uint32_t* max_blocks);

 private:
  friend class PinnedBlock;

  enum State : uint8_t { kFree = 0, kWriting = 1, kLive = 2 };
  static constexpr uint32_t kReader = 1;
  static constexpr uint32_t kPin = 1u << 16;
  static constexpr uint32_t kStripes = 1024;

  struct Slot {
    BlockKey key;                    // set before publication, immutable while published
    // Payload offset / 4 KiB. Written before the slot leaves kFree; atomic (relaxed) because the
    // evictor reads it of reservations that may be released and reused meanwhile.
    std::atomic<uint32_t> page{0};
    uint32_t length = 0;             // payload bytes
    std::atomic<uint32_t> next{kNoSlot};  // hash chain (under the stripe lock) or free stack
    std::atomic<uint32_t> refs{0};   // low 16 bits: readers; high 16 bits: pins
    std::atomic<uint32_t> pin_deadline_ms{0};
    uint16_t cls = 0;  // the allocator's lane: size class and tenant
    std::atomic<uint8_t> state{kFree};
  };

  // The key's bucket: its low half (a hash; multiplied by 2^64 / phi so that keys differing only
  // in low bits spread too), its top 32 bits scaled to [0, num_buckets_) (Lemire's multiply-shift
  // range reduction: any bucket count works, no power of two needed).
  uint32_t Bucket(const BlockKey& key) const {
    const uint64_t h = (key.low * 0x9E3779B97F4A7C15ULL) >> 32;
    return static_cast<uint32_t>((h * num_buckets_) >> 32);
  }
  SpinLock& StripeOf(uint32_t bucket) const { return stripes_[bucket & (kStripes - 1)]; }
  // REQUIRES: the stripe lock of `bucket`.
  uint32_t FindLocked(uint32_t bucket, const BlockKey& key) const;
  void UnlinkLocked(uint32_t bucket, uint32_t slot);

  // Commit, saying whether this reservation became the published block (false when another
  // producer published the key first).
  Status Publish(const WriteReservation& reservation, const BlockHeader& header,
                 const PutOptions& options, bool verify, bool* published);

  uint32_t PopFreeSlot();
  void PushFreeSlot(uint32_t slot);
  uint32_t NowMs() const;
  bool Pinned(const Slot& s, uint32_t now) const;
  bool Evictable(uint32_t slot, uint32_t now) const;

  // Finds `key` and takes a reader reference; kNoSlot on a miss.
  uint32_t AcquireReader(const BlockKey& key);
  void ReleaseReader(uint32_t slot);

  // Space for a payload of class `cls` (evicting as needed), or NoSpace when no evictable block
  // can make room: none of class `cls`, and every slab of another class holds a block that is
  // pinned, read or being written (evicting around it would free no slab).
  Result<uint64_t> AllocatePayload(int cls);
  Result<WriteReservation> ReserveImpl(const BlockKey& key, uint64_t length, uint16_t tenant,
                                       bool may_evict);
  // A free slot (evicting if every slot is used), or NoSpace.
  Result<uint32_t> AllocateSlot();
  // Evicts the policy's next victim. NoSpace when nothing is evictable.
  Status EvictOne() REQUIRES_LOCK(evict_mu_);
  // Unlinks and frees `slot` if it is still live and evictable; false otherwise.
  bool EvictSlot(uint32_t slot, uint32_t now) REQUIRES_LOCK(evict_mu_);
  // The NoSpace of a failed allocation for class `cls`, saying what holds the space.
  Status NoRoom(int cls, uint32_t now) const;
  // Slab of the payload of `slot`. REQUIRES: the slot is not kFree.
  uint32_t SlabOfSlot(uint32_t slot) const;
  // Sets busy_slabs_ to the slabs holding a block that eviction cannot remove now (pinned, read,
  // reserved). A snapshot: a block that becomes busy later is found by DrainSlab.
  void FindBusySlabs(uint32_t now) REQUIRES_LOCK(evict_mu_);
  bool SlabBusy(uint32_t slab) const REQUIRES_LOCK(evict_mu_) {
    return (busy_slabs_[slab / 64] >> (slab % 64)) & 1;
  }
  void SetSlabBusy(uint32_t slab) REQUIRES_LOCK(evict_mu_) {
    busy_slabs_[slab / 64] |= uint64_t{1} << (slab % 64);
  }
  // Evicts every block of `slab` (lent to class `cls`) so the slab returns to the free list.
  // False when a block of it could not be evicted (the slab stays with `cls`).
  bool DrainSlab(uint32_t slab, int cls, uint32_t now) REQUIRES_LOCK(evict_mu_);

  const TierKind kind_;
  const BlockPoolOptions options_;
  const uint32_t max_blocks_;
  const PoolMemory mem_;
  const std::chrono::steady_clock::time_point epoch_;
  SlabAllocator alloc_;
  std::unique_ptr<EvictionPolicy> policy_;
  std::unique_ptr<Slot[]> slots_;
  const uint32_t num_buckets_;  // (max_blocks + 1) / 2
  // buckets_[b] (chain head) is guarded by StripeOf(b).
  std::unique_ptr<uint32_t[]> buckets_;
  mutable std::unique_ptr<SpinLock[]> stripes_;
  std::atomic<uint64_t> free_head_;  // tagged: (tag << 32) | slot
  std::mutex evict_mu_;              // one evictor at a time (slow path)
  // One bit per slab (FindBusySlabs); sized at construction so eviction never allocates.
  std::vector<uint64_t> busy_slabs_ GUARDED_BY(evict_mu_);

  struct alignas(64) Counters {
    std::atomic<uint64_t> hits{0}, misses{0}, puts{0}, evictions{0}, corrupt{0};
    std::atomic<int64_t> blocks{0}, bytes{0};
  };
  mutable Counters counters_;
};

}  // namespace strata::store
