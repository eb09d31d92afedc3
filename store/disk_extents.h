// ExtentAllocator: the free space of the disk tier's slab file (blocks.data),
// best fit by length, coalescing neighbours. DiskTier rebuilds it at Open from
// the extents its index names (the gaps between them and the file's tail are
// free) and frees an extent only after the record that named it is deleted.
//
// Thread-safety: not thread-safe; DiskTier calls it under its mutex. No I/O.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <set>
#include <utility>

namespace strata::store::disk {

class ExtentAllocator {
 public:
  static constexpr uint64_t kNone = UINT64_MAX;
  // Returns the offset of `len` free bytes (the smallest free extent that holds
  // them, its lowest offset among equals), or kNone.
  uint64_t Allocate(uint64_t len);
  // Returns [off, off + len) to the free space, merged with free neighbours.
  // REQUIRES: the range is not free already.
  void Free(uint64_t off, uint64_t len);
  uint64_t free_bytes() const { return free_bytes_; }
  // Free extents (after merging).
  size_t extents() const { return by_off_.size(); }

 private:
  void Insert(uint64_t off, uint64_t len);
  std::map<uint64_t, uint64_t> by_off_;
  std::set<std::pair<uint64_t, uint64_t>> by_len_;
  uint64_t free_bytes_ = 0;
};

}  // namespace strata::store::disk
