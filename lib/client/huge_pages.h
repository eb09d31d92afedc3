// Transparent huge pages for an engine's KV cache (docs/data-plane.md, "Engine KV in huge
// pages"). RegisterKvCache advises the host memory it is given so that the kernel backs it with
// 2 MiB pages: the daemon's cross-memory reads (process_vm_readv) pin one page per 4 KiB of a
// 4 KiB-paged source, about 1 us each, and one per 2 MiB otherwise; the client's own gathers and
// scatters take fewer TLB misses on random pages.
//
// Best effort by contract: nothing here fails a registration. Only the 2 MiB-aligned part of a
// range is advised (madvise splits the mapping there; the engine's bytes are never moved or
// changed, MADV_COLLAPSE copies pages into huge pages with their contents). Thread-safe: no state.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace strata {

// One contiguous range of an engine's memory.
struct MemoryRange {
  std::byte* begin = nullptr;
  uint64_t bytes = 0;
};

// What the kernel took. The errnos are the first refusal of each kind (0: none).
struct HugePageAdvice {
  uint64_t aligned_bytes = 0;    // bytes of the 2 MiB-aligned parts of the merged ranges
  uint64_t advised_bytes = 0;    // of which MADV_HUGEPAGE succeeded
  uint64_t collapsed_bytes = 0;  // of which MADV_COLLAPSE succeeded
  int advise_errno = 0;
  int collapse_errno = 0;
};

// The madvise the advice goes through (::madvise; tests substitute a refusing one).
using MadviseFn = int (*)(void* address, size_t length, int advice);

// Merges ranges that overlap or touch (one tensor holding every layer is advised as one range),
// rounds each inward to huge-page boundaries and advises it MADV_HUGEPAGE (pages faulted in
// later are huge; khugepaged may collapse the rest, slowly); with `collapse` also MADV_COLLAPSE
// (Linux >= 6.1), which puts the pages already there into huge pages now, synchronously:
// engines zero their KV cache before they register it, so the advice alone would not reach the
// pages they store from (ClientOptions::kv_huge_pages). Never fails; refusals are reported in
// the result. MADV_COLLAPSE goes 32 MiB at a time, so one refusal (no free huge page) costs no
// more than that piece and the next piece is still tried.
HugePageAdvice AdviseHugePages(std::span<const MemoryRange> ranges, bool collapse,
                               MadviseFn madvise_fn = nullptr);

// The transparent huge page size (hpage_pmd_size; 2 MiB where it cannot be read).
uint64_t HugePageBytes();

// AnonHugePages of /proc/self/smaps_rollup in bytes (0 where it cannot be read): how much of
// this process's anonymous memory is in huge pages, for benchmarks and tests.
uint64_t AnonHugePageBytes();

}  // namespace strata
