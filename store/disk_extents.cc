#include "store/disk_extents.h"

#include <iterator>

namespace strata::store::disk {

uint64_t ExtentAllocator::Allocate(uint64_t len) {
  auto it = by_len_.lower_bound({len, 0});
  if (it == by_len_.end()) return kNone;
  const auto [flen, off] = *it;
  by_len_.erase(it);
  by_off_.erase(off);
  if (flen > len) Insert(off + len, flen - len);
  free_bytes_ -= len;
  return off;
}

void ExtentAllocator::Free(uint64_t off, uint64_t len) {
  free_bytes_ += len;
  auto next = by_off_.lower_bound(off);
  if (next != by_off_.end() && next->first == off + len) {
    len += next->second;
    by_len_.erase({next->second, next->first});
    next = by_off_.erase(next);
  }
  if (next != by_off_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == off) {
      off = prev->first;
      len += prev->second;
      by_len_.erase({prev->second, prev->first});
      by_off_.erase(prev);
    }
  }
  Insert(off, len);
}

void ExtentAllocator::Insert(uint64_t off, uint64_t len) {
  by_off_[off] = len;
  by_len_.insert({len, off});
}

}  // namespace strata::store::disk
