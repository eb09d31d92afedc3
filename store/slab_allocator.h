// SlabAllocator: carves a region of `num_slabs * slab_bytes` bytes into chunks of size classes
// (4 KiB steps up to 16 KiB, then four classes per doubling: at most 25% internal waste; every
// chunk is 4 KiB-aligned, so payloads suit O_DIRECT and DMA). A slab is lent to one class while it
// holds live chunks and returns to the shared free-slab list as soon as its last chunk is freed, so
// churn of mixed sizes cannot strand free space inside one class for good (as memcached's slab
// rebalancer; the pool evicts a whole victim slab when a class needs a slab and none is free,
// block_pool.cc). It hands out *offsets*, never touches the memory, and so serves host (memfd) and
// device (cudaMalloc) pools alike.
//
// Thread-safety: thread-safe. Allocate/Free take the spin lock of one size class (held for a
// bitmap scan of one slab); the free-slab list has its own spin lock, taken only when a slab
// changes class. No system call; memory is allocated only when a slab is lent to a class (its
// free-chunk bitmap), never per block.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
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

  // REQUIRES: slab_bytes is a multiple of kAlign, num_slabs > 0.
  SlabAllocator(uint64_t slab_bytes, uint32_t num_slabs);
  ~SlabAllocator();
  SlabAllocator(const SlabAllocator&) = delete;
  SlabAllocator& operator=(const SlabAllocator&) = delete;

  // The class serving `bytes`, or -1 when bytes is 0 or larger than a slab.
  int ClassOf(uint64_t bytes) const;
  uint64_t ChunkBytes(int cls) const { return class_bytes_[cls]; }
  int num_classes() const { return num_classes_; }
  uint64_t slab_bytes() const { return slab_bytes_; }
  uint32_t num_slabs() const { return num_slabs_; }
  uint32_t SlabOf(uint64_t offset) const { return static_cast<uint32_t>(offset / slab_bytes_); }
  // The class a slab is lent to, or -1 when it is free.
  int SlabClass(uint32_t slab) const;

  // A free chunk of class `cls`, or kNoOffset when the class is full and no slab is free.
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
  uint64_t FixedMetadataBytes() const { return sizeof(ClassState) * num_classes_; }

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

  const uint64_t slab_bytes_;
  const uint32_t num_slabs_;
  int num_classes_ = 0;
  std::array<uint64_t, kMaxClasses> class_bytes_{};
  std::unique_ptr<ClassState[]> classes_;
  // slabs_[i] fields are guarded by the lock of the class the slab is lent to; a free slab's by
  // free_mu_.
  std::unique_ptr<Slab[]> slabs_;
  mutable SpinLock free_mu_;
  std::vector<uint32_t> free_slabs_ GUARDED_BY(free_mu_);
};

}  // namespace strata::store
