// Sharing an engine's host KV cache with the daemon (docs/data-plane.md, "Engine KV through the
// daemon's own mapping"): RegisterKvCache moves the cache's pages onto a memfd, mapped shared over
// the engine's own addresses, and hands the daemon the descriptor, which it maps read-only once.
// The daemon's paged stores then read the rows straight from its mapping instead of copying them
// out of this process with process_vm_readv, 4 KiB page by page.
//
// What changes for the engine: its cache (the page-aligned part of each merged layer range) is
// shared memory from then on, the same bytes at the same addresses. Mapped MADV_DONTFORK: a
// forked child does not get it (an engine's child never needs its parent's KV cache; with a
// shared mapping it would write the parent's). Its pages are shmem pages: 4 KiB unless the
// operator sets transparent_hugepage/shmem_enabled to `always` or `within_size` (`advise` does
// not reach pages written with pwrite, as these are). The memory stays the engine's: after
// UnregisterKvCache the daemon has unmapped it and the engine frees it as before (munmap).
//
// Thread-safety: no state. The caller makes sure the engine writes none of the ranges while
// MoveOntoMemfd runs (RegisterKvCache's contract: the cache holds no KV yet at registration).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "client/huge_pages.h"
#include "strata/result.h"

namespace strata {

// The cache on its memfd: range i of the engine is [begin, + bytes) at offsets[i] of `fd`.
class KvMemfd {
 public:
  KvMemfd() = default;
  KvMemfd(KvMemfd&& other) noexcept { *this = std::move(other); }
  KvMemfd& operator=(KvMemfd&& other) noexcept;
  KvMemfd(const KvMemfd&) = delete;
  KvMemfd& operator=(const KvMemfd&) = delete;
  ~KvMemfd();

  int fd() const { return fd_; }
  uint64_t bytes() const { return bytes_; }
  const std::vector<MemoryRange>& ranges() const { return ranges_; }
  const std::vector<uint64_t>& offsets() const { return offsets_; }
  // Whether [begin, begin + bytes) lies in one moved range.
  bool Covers(const std::byte* begin, uint64_t bytes) const;

 private:
  friend Result<KvMemfd> MoveOntoMemfd(std::span<const MemoryRange>);
  int fd_ = -1;
  uint64_t bytes_ = 0;
  std::vector<MemoryRange> ranges_;  // sorted, disjoint, page-aligned
  std::vector<uint64_t> offsets_;
};

// Merges `ranges` where they overlap or touch, rounds each inward to page boundaries, and moves
// those pages onto one memfd (sealed against shrinking, growing and further seals): each range is
// copied into a fresh shared mapping of the memfd that then replaces the engine's mapping at the
// same address (mremap: the old pages stay in place if it fails). NotSupported, with nothing moved, where
// a range is not plain private anonymous memory (a file or device mapping, shared, locked, or
// marked not to be copied on fork, as pinned DMA memory is: moving those pages would leave a
// device writing the old ones), other than a cache this function moved before (registered again
// after UnregisterKvCache: its pages move onto a new memfd); IOError when a system call fails (the ranges moved before it
// stay moved: same bytes, shared pages).
Result<KvMemfd> MoveOntoMemfd(std::span<const MemoryRange> ranges);

}  // namespace strata
