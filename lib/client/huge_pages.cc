#include "client/huge_pages.h"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

namespace strata {
namespace {

uint64_t ReadHugePageBytes() {
  uint64_t bytes = 0;
  if (std::FILE* f = std::fopen("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size", "r")) {
    unsigned long long v = 0;
    if (std::fscanf(f, "%llu", &v) == 1) bytes = v;
    std::fclose(f);
  }
  // A power of two of at least 64 KiB, else the x86-64 and arm64 (4 KiB base pages) size.
  if (bytes < (uint64_t{64} << 10) || (bytes & (bytes - 1)) != 0) bytes = uint64_t{2} << 20;
  return bytes;
}

}  // namespace

uint64_t HugePageBytes() {
  static const uint64_t bytes = ReadHugePageBytes();
  return bytes;
}

std::vector<std::pair<uint64_t, uint64_t>> MergeRanges(std::span<const MemoryRange> ranges) {
  std::vector<std::pair<uint64_t, uint64_t>> merged;
  for (const MemoryRange& r : ranges) {
    const auto b = reinterpret_cast<uint64_t>(r.begin);
    if (r.begin == nullptr || r.bytes == 0 || b + r.bytes < b) continue;
    merged.emplace_back(b, b + r.bytes);
  }
  std::sort(merged.begin(), merged.end());
  size_t n = 0;
  for (size_t i = 0; i < merged.size(); ++i) {
    if (n > 0 && merged[i].first <= merged[n - 1].second)
      merged[n - 1].second = std::max(merged[n - 1].second, merged[i].second);
    else
      merged[n++] = merged[i];
  }
  merged.resize(n);
  return merged;
}

HugePageAdvice AdviseHugePages(std::span<const MemoryRange> ranges, MadviseFn madvise_fn) {
  if (madvise_fn == nullptr) madvise_fn = &::madvise;
  HugePageAdvice out;
  const std::vector<std::pair<uint64_t, uint64_t>> merged = MergeRanges(ranges);
  const uint64_t huge = HugePageBytes();
  for (const auto& [b, e] : merged) {
    const uint64_t begin = (b + huge - 1) & ~(huge - 1), end = e & ~(huge - 1);
    if (begin >= end) continue;
    out.aligned_bytes += end - begin;
    auto* p = reinterpret_cast<void*>(begin);
    if (madvise_fn(p, end - begin, MADV_HUGEPAGE) != 0) {
      if (out.advise_errno == 0) out.advise_errno = errno;
      continue;  // a range the kernel will not advise (hugetlbfs, a special mapping) is left
    }
    out.advised_bytes += end - begin;
    out.advised.push_back({static_cast<std::byte*>(p), end - begin});
  }
  return out;
}

uint64_t AnonHugePageBytes() {
  std::FILE* f = std::fopen("/proc/self/smaps_rollup", "r");
  if (f == nullptr) return 0;
  char line[256];
  uint64_t kib = 0;
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    unsigned long long v = 0;
    if (std::sscanf(line, "AnonHugePages: %llu kB", &v) == 1) {
      kib = v;
      break;
    }
  }
  std::fclose(f);
  return kib << 10;
}

}  // namespace strata
