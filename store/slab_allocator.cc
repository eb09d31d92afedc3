#include "store/slab_allocator.h"

#include <algorithm>
#include <bit>
#include <mutex>

namespace strata::store {

SlabAllocator::SlabAllocator(uint64_t slab_bytes, uint32_t num_slabs, uint16_t tenants)
    : slab_bytes_(slab_bytes),
      num_slabs_(num_slabs),
      tenants_(tenants),
      slab_tenant_(new std::atomic<uint16_t>[num_slabs]),
      slabs_(new Slab[num_slabs]) {
  for (uint32_t i = 0; i < num_slabs; ++i) {
    slabs_[i].inline_bits = 0;
    slab_tenant_[i].store(0, std::memory_order_relaxed);
  }
  // 4, 8, 12, 16 KiB, then 4 classes per power of two: 20, 24, 28, 32, 40, 48, 56, 64 KiB, ...
  uint64_t size = kAlign;
  while (size <= slab_bytes_ && num_classes_ < kMaxClasses) {
    class_bytes_[num_classes_++] = size;
    const uint64_t step = std::max<uint64_t>(kAlign, std::bit_floor(size) / 4);
    size += step;
  }
  if (num_classes_ < kMaxClasses && class_bytes_[num_classes_ - 1] != slab_bytes_)
    class_bytes_[num_classes_++] = slab_bytes_;
  classes_.reset(new ClassState[static_cast<size_t>(num_classes_) * tenants_]);
  free_slabs_.reserve(num_slabs);
  for (uint32_t i = num_slabs; i-- > 0;) free_slabs_.push_back(i);
}

int SlabAllocator::ClassOf(uint64_t bytes) const {
  if (bytes == 0 || bytes > slab_bytes_) return -1;
  // Binary search over the (sorted) class sizes.
  int lo = 0, hi = num_classes_ - 1;
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    if (class_bytes_[mid] >= bytes) hi = mid; else lo = mid + 1;
  }
  return lo;
}

int SlabAllocator::SlabClass(uint32_t slab) const {
  return slabs_[slab].cls.load(std::memory_order_relaxed);
}

void SlabAllocator::PushPartial(ClassState& c, uint32_t slab) {
  Slab& s = slabs_[slab];
  s.prev = UINT32_MAX;
  s.next = c.partial_head;
  if (c.partial_head != UINT32_MAX) slabs_[c.partial_head].prev = slab;
  c.partial_head = slab;
}

void SlabAllocator::RemovePartial(ClassState& c, uint32_t slab) {
  Slab& s = slabs_[slab];
  if (s.prev != UINT32_MAX) slabs_[s.prev].next = s.next; else c.partial_head = s.next;
  if (s.next != UINT32_MAX) slabs_[s.next].prev = s.prev;
  s.prev = s.next = UINT32_MAX;
}

SlabAllocator::~SlabAllocator() {
  for (uint32_t i = 0; i < num_slabs_; ++i)
    if (slabs_[i].chunks > 64) delete[] slabs_[i].heap_bits;
}

bool SlabAllocator::LendFreeSlab(int cls) {
  uint32_t slab;
  {
    std::lock_guard free_lock(free_mu_);
    if (free_slabs_.empty()) return false;
    slab = free_slabs_.back();
    free_slabs_.pop_back();
  }
  // The slab is out of every list: nobody else can lend it or write to it while the hook runs.
  const uint16_t tenant = TenantOfLane(cls);
  if (slab_tenant_[slab].load(std::memory_order_relaxed) != tenant) {
    if (lend_hook_ && !lend_hook_(slab, tenant)) {
      std::lock_guard free_lock(free_mu_);
      free_slabs_.push_back(slab);
      return false;
    }
    slab_tenant_[slab].store(tenant, std::memory_order_release);
  }
  ClassState& c = classes_[cls];
  std::lock_guard lock(c.mu);
  Slab& s = slabs_[slab];
  s.chunks = static_cast<uint16_t>(slab_bytes_ / ChunkBytes(cls));
  s.free_count = s.chunks;
  const size_t words = (s.chunks + 63) / 64;
  if (s.chunks > 64) s.heap_bits = new uint64_t[words];
  uint64_t* bits = s.Bits();
  for (size_t w = 0; w < words; ++w) bits[w] = ~uint64_t{0};
  if (s.chunks % 64) bits[words - 1] = (uint64_t{1} << (s.chunks % 64)) - 1;
  s.cls.store(static_cast<int16_t>(cls), std::memory_order_relaxed);
  s.draining = false;
  PushPartial(c, slab);
  return true;
}

uint64_t SlabAllocator::Allocate(int cls) {
  ClassState& c = classes_[cls];
  for (;;) {
    {
      std::lock_guard lock(c.mu);
      const uint32_t slab = c.partial_head;
      if (slab != UINT32_MAX) {
        Slab& s = slabs_[slab];
        uint64_t* bits = s.Bits();
        for (size_t w = 0; w < (s.chunks + 63u) / 64; ++w) {
          if (bits[w] == 0) continue;
          const int bit = std::countr_zero(bits[w]);
          bits[w] &= bits[w] - 1;
          if (--s.free_count == 0) RemovePartial(c, slab);
          return uint64_t{slab} * slab_bytes_ + (w * 64 + bit) * ChunkBytes(cls);
        }
        return kNoOffset;  // unreachable: a partial slab has a free bit
      }
    }
    // No partial slab: lend a free one (outside the class lock, since the lend hook may make
    // system calls), then take a chunk of whichever partial slab the class has by then.
    if (!LendFreeSlab(cls)) return kNoOffset;
  }
}

void SlabAllocator::Free(uint64_t offset, int cls) {
  ClassState& c = classes_[cls];
  const uint32_t slab = SlabOf(offset);
  const uint64_t chunk = (offset - uint64_t{slab} * slab_bytes_) / ChunkBytes(cls);
  bool release = false;
  {
    std::lock_guard lock(c.mu);
    Slab& s = slabs_[slab];
    s.Bits()[chunk / 64] |= uint64_t{1} << (chunk % 64);
    // A draining slab stays out of the partial list: Allocate must not refill it.
    if (s.free_count++ == 0 && !s.draining) PushPartial(c, slab);
    if (s.free_count == s.chunks) {
      if (!s.draining) RemovePartial(c, slab);
      s.draining = false;
      s.cls.store(-1, std::memory_order_relaxed);
      if (s.chunks > 64) delete[] s.heap_bits;
      s.chunks = 0;
      s.inline_bits = 0;
      release = true;
    }
  }
  if (release) {
    std::lock_guard free_lock(free_mu_);
    free_slabs_.push_back(slab);
  }
}

bool SlabAllocator::BeginDrain(uint32_t slab, int cls) {
  if (cls < 0 || cls >= num_classes_ * tenants_) return false;
  ClassState& c = classes_[cls];
  std::lock_guard lock(c.mu);
  Slab& s = slabs_[slab];
  if (s.cls.load(std::memory_order_relaxed) != cls || s.draining) return false;
  if (s.free_count > 0) RemovePartial(c, slab);
  s.draining = true;
  return true;
}

void SlabAllocator::EndDrain(uint32_t slab, int cls) {
  if (cls < 0 || cls >= num_classes_ * tenants_) return;
  ClassState& c = classes_[cls];
  std::lock_guard lock(c.mu);
  Slab& s = slabs_[slab];
  // Released meanwhile (and maybe lent again): Free or Allocate reset the flag.
  if (s.cls.load(std::memory_order_relaxed) != cls || !s.draining) return;
  s.draining = false;
  if (s.free_count > 0) PushPartial(c, slab);
}

uint32_t SlabAllocator::free_slabs() const {
  std::lock_guard lock(free_mu_);
  return static_cast<uint32_t>(free_slabs_.size());
}

uint64_t SlabAllocator::MetadataBytes() const {
  uint64_t bytes = (sizeof(Slab) + sizeof(uint32_t) + sizeof(uint16_t)) * num_slabs_;
  for (uint32_t i = 0; i < num_slabs_; ++i) {
    const int cls = SlabClass(i);
    if (cls < 0) continue;
    const uint64_t chunks = slab_bytes_ / ChunkBytes(cls);
    if (chunks > 64) bytes += (chunks + 63) / 64 * sizeof(uint64_t);
  }
  return bytes;
}

}  // namespace strata::store
