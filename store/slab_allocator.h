// SlabAllocator: carves a region of `num_slabs * slab_bytes` bytes into chunks of size classes
// (4 KiB steps up to 16 KiB, then four classes per doubling: at most 25% internal waste; every
// chunk is 4 KiB-aligned, so payloads suit O_DIRECT and DMA). A slab is lent to one class while it
// holds live chunks and returns to the shared free-slab list as soon as its last chunk is freed, so
// churn of mixed sizes cannot strand free space inside one class for good (as memcached's slab
// rebalancer; the pool evicts a whole victim slab when a class needs a slab and none is free,
// block_pool.cc). It hands out *offsets*, never touches the memory, and so serves host (memfd) and
// device (cudaMalloc) pools alike.
//
// Tenants: slabs are lent per tenant as well as per size class. A *lane* is a (tenant, class)
// pair, Lane(cls, tenant); chunks of one slab all belong to one lane, so a slab holds the bytes of
// one tenant only. A slab remembers its tenant while free; when it is lent to a lane of another
// tenant, the lend hook runs first (the host tier gives the slab fresh memory there, so memory a
// tenant could map never receives another tenant's bytes; docs/data-plane.md, "Tenants").
//
// Thread-safety: thread-safe. Allocate/Free take the spin lock of one size class (held for a
// bitmap scan of one slab); the free-slab list has its own spin lock, taken only when a slab
// changes class. No system call; memory is allocated only when a slab is lent to a class (its
// free-chunk bitmap), never per block.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "store/spin_lock.h"
#include "store/thread_annotations.h"

namespace strata::store {

class SlabAllocator {
 public:
  static constexpr uint64_t kAlign = 4096;
  static constexpr uint64_t kNoOffset = UINT64_MAX;
  static constexpr int kMaxClasses = 64;

  static constexpr uint16_t kMaxTenants = 256;
  // Runs (with no lock of the allocator held) before free slab `slab`, last lent to another
  // tenant, is lent to `tenant`; false refuses the lend (the slab stays free and Allocate fails).
  using LendHook = std::function<bool(uint32_t slab, uint16_t tenant)>;

  // REQUIRES: slab_bytes is a multiple of kAlign, num_slabs > 0, 1 <= tenants <= kMaxTenants.
  SlabAllocator(uint64_t slab_bytes, uint32_t num_slabs, uint16_t tenants = 1);
  ~SlabAllocator();
  SlabAllocator(const SlabAllocator&) = delete;
  SlabAllocator& operator=(const SlabAllocator&) = delete;

  // The class serving `bytes`, or -1 when bytes is 0 or larger than a slab.
  int ClassOf(uint64_t bytes) const;
  // The lane of class `cls` for `tenant` (tenant 0: Lane(cls, 0) == cls). Allocate, Free, the
  // drain calls and SlabClass speak lanes.
  int Lane(int cls, uint16_t tenant) const { return tenant * num_classes_ + cls; }
  uint16_t TenantOfLane(int lane) const { return static_cast<uint16_t>(lane / num_classes_); }
  // Chunk bytes of a class or a lane.
  uint64_t ChunkBytes(int lane) const { return class_bytes_[lane % num_classes_]; }
  int num_classes() const { return num_classes_; }
  uint16_t tenants() const { return tenants_; }
  // The tenant whose bytes `slab` holds: the one it is lent to, or was last lent to while free
  // (0 for a slab never lent).
  uint16_t SlabTenant(uint32_t slab) const {
    return slab_tenant_[slab].load(std::memory_order_acquire);
  }
  // REQUIRES: before the first Allocate.
  void SetLendHook(LendHook hook) { lend_hook_ = std::move(hook); }
  uint64_t slab_bytes() const { return slab_bytes_; }
  uint32_t num_slabs() const { return num_slabs_; }
  uint32_t SlabOf(uint64_t offset) const { return static_cast<uint32_t>(offset / slab_bytes_); }
  // The class a slab is lent to, or -1 when it is free.
  int SlabClass(uint32_t slab) const;

  // A free chunk of lane `cls`, or kNoOffset when the lane is full and no slab is free (or the
  // lend hook refused the free one).
  uint64_t Allocate(int cls);
  // REQUIRES: `offset` came from Allocate(cls) and is not yet freed.
  void Free(uint64_t offset, int cls);

  // Draining: the pool empties one slab of class `cls` so that it can be lent to another class.
  // While a slab drains, Allocate hands out none of its chunks (so a concurrent put of `cls`
  // cannot refill it); when its last chunk is freed it returns to the free-slab list as usual.
  // BeginDrain is false (and does nothing) when `slab` is not lent to `cls`. EndDrain ends a drain
  // that did not empty the slab (its free chunks are allocatable again); it does nothing when the
  // slab was released meanwhile. REQUIRES: one drainer at a time (the pool's eviction lock).
  bool BeginDrain(uint32_t slab, int cls);
  void EndDrain(uint32_t slab, int cls);

  uint32_t free_slabs() const;
  // Bytes of bookkeeping that scale with the pool: slab headers, the free-slab list and the
  // bitmaps of slabs lent to small-chunk classes.
  uint64_t MetadataBytes() const;
  // Fixed bookkeeping per pool (the size classes' locks).
  uint64_t FixedMetadataBytes() const { return sizeof(ClassState) * num_classes_ * tenants_; }

 private:
  // 24 bytes: slab bookkeeping is part of the per-block metadata budget for big blocks.
  struct Slab {
    std::atomic<int16_t> cls{-1};  // written under the class lock, read lock-free
    uint16_t free_count = 0;
    uint16_t chunks = 0;
    bool draining = false;  // out of the partial list until emptied or EndDrain
    uint32_t prev = UINT32_MAX;  // links in the class's partial-slab list
    uint32_t next = UINT32_MAX;
    // Bit i set: chunk i is free. Inline for up to 64 chunks; a heap array (allocated when the
    // slab is lent to a class of small chunks) otherwise.
    union {
      uint64_t inline_bits;
      uint64_t* heap_bits;
    };
    uint64_t* Bits() { return chunks <= 64 ? &inline_bits : heap_bits; }
  };
  static_assert(sizeof(Slab) == 24);
  struct alignas(64) ClassState {
    SpinLock mu;
    uint32_t partial_head GUARDED_BY(mu) = UINT32_MAX;  // slabs with at least one free chunk
  };

  void PushPartial(ClassState& c, uint32_t slab) REQUIRES_LOCK(c.mu);
  void RemovePartial(ClassState& c, uint32_t slab) REQUIRES_LOCK(c.mu);

  // Lends a free slab to lane `cls` (running the lend hook when its tenant changes); false when
  // none is free or the hook refused.
  bool LendFreeSlab(int cls);

  const uint64_t slab_bytes_;
  const uint32_t num_slabs_;
  const uint16_t tenants_;
  int num_classes_ = 0;
  LendHook lend_hook_;
  std::unique_ptr<std::atomic<uint16_t>[]> slab_tenant_;
  std::array<uint64_t, kMaxClasses> class_bytes_{};
  std::unique_ptr<ClassState[]> classes_;
  // slabs_[i] fields are guarded by the lock of the class the slab is lent to; a free slab's by
  // free_mu_.
  std::unique_ptr<Slab[]> slabs_;
  mutable SpinLock free_mu_;
  std::vector<uint32_t> free_slabs_ GUARDED_BY(free_mu_);
};

}  // namespace strata::store
