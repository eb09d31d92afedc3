// Transparent huge pages for an engine's KV cache (docs/data-plane.md, "Engine KV in huge
// pages"). RegisterKvCache advises the host memory it is given so that the kernel backs it with
// 2 MiB pages: the daemon's cross-memory reads (process_vm_readv) pin one page per 4 KiB of a
// 4 KiB-paged source, about 1 us each, and one per 2 MiB otherwise; the client's own gathers and
// scatters take fewer TLB misses on random pages.
//
// Best effort by contract: nothing here fails a registration. Only the 2 MiB-aligned part of a
// range is advised (madvise splits the mapping there; the engine's bytes are never moved or
// changed). Thread-safe: no state.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

namespace strata {

// One contiguous range of an engine's memory.
struct MemoryRange {
  std::byte* begin = nullptr;
  uint64_t bytes = 0;
};

// The ranges as [begin, end) integers, sorted, merged where they overlap or touch; empty and
// wrapping ranges dropped. One tensor holding every layer comes back as one range.
std::vector<std::pair<uint64_t, uint64_t>> MergeRanges(std::span<const MemoryRange> ranges);

// What the kernel took of the advice. The errno is the first refusal (0: none).
struct HugePageAdvice {
  uint64_t aligned_bytes = 0;  // bytes of the 2 MiB-aligned parts of the merged ranges
  uint64_t advised_bytes = 0;  // of which MADV_HUGEPAGE succeeded
  int advise_errno = 0;
  std::vector<MemoryRange> advised;  // the ranges advised: what a collapse may put in huge pages
};

// The madvise the advice goes through (::madvise; tests substitute a recording one).
using MadviseFn = int (*)(void* address, size_t length, int advice);

// Merges ranges that overlap or touch (one tensor holding every layer is advised as one range),
// rounds each inward to huge-page boundaries and advises it MADV_HUGEPAGE: pages faulted in
// later are huge (khugepaged may collapse the rest, slowly). One system call per range, no
// measurable cost. Never fails; refusals are reported in the result. Engines zero their KV cache
// before they register it, so the advice alone does not reach the pages they store from: that is
// HugePageCollapser's work (client/huge_page_collapser.h).
HugePageAdvice AdviseHugePages(std::span<const MemoryRange> ranges, MadviseFn madvise_fn = nullptr);

// The transparent huge page size (hpage_pmd_size; 2 MiB where it cannot be read).
uint64_t HugePageBytes();

// AnonHugePages of /proc/self/smaps_rollup in bytes (0 where it cannot be read): how much of
// this process's anonymous memory is in huge pages, for benchmarks and tests.
uint64_t AnonHugePageBytes();

}  // namespace strata
