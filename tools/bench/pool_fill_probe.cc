// Per-GiB cost of filling a client's read-only mapping of a populated shmem pool: reads that fault
// vs MAP_POPULATE vs MADV_POPULATE_READ vs mincore + MADV_POPULATE_READ vs one read per page, and
// the page tables (VmPTE) a filled GiB costs (docs/benchmarks.md, "The pool's page tables filled in
// the background"). Standalone: g++ -O2 -std=c++20 tools/bench/pool_fill_probe.cc -o /tmp/probe &&
// /tmp/probe SLABS ROUNDS (16 MiB slabs; 64 = 1 GiB).
#include <sys/mman.h>
#include <unistd.h>
#include <fcntl.h>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <vector>
#include <string>
#include <algorithm>
static double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }
static long vmpte() { FILE* f = fopen("/proc/self/status", "r"); char l[256]; long v = -1;
  while (fgets(l, sizeof l, f)) if (!strncmp(l, "VmPTE:", 6)) v = atol(l + 6); fclose(f); return v; }
int main(int argc, char** argv) {
  const uint64_t slab = 16ull << 20, nslabs = argc > 1 ? atoi(argv[1]) : 64, size = slab * nslabs;
  const int rounds = argc > 2 ? atoi(argv[2]) : 3;
  std::vector<int> fds;
  for (uint64_t i = 0; i < nslabs; ++i) {
    int fd = memfd_create("p", MFD_CLOEXEC); ftruncate(fd, slab);
    void* w = mmap(nullptr, slab, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    madvise(w, slab, MADV_POPULATE_WRITE); memset(w, int(i), slab); fds.push_back(fd);
  }
  char* dst = (char*)aligned_alloc(4096, 2 << 20); memset(dst, 1, 2 << 20);
  auto map = [&](int flags) { char* b = (char*)mmap(nullptr, size, PROT_NONE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE, -1, 0);
    for (uint64_t i = 0; i < nslabs; ++i) mmap(b + i * slab, slab, PROT_READ, MAP_SHARED|MAP_FIXED|flags, fds[i], 0); return b; };
  auto copy = [&](char* b) { for (uint64_t o = 0; o < size; o += 2 << 20) memcpy(dst, b + o, 2 << 20); };
  const double gib = double(size) / (1ull << 30);
  printf("pool %.2f GiB in %lu slabs of 16 MiB; s per GiB (lower better); VmPTE kB per GiB\n", gib, nslabs);
  for (int r = 0; r < rounds; ++r) {
    long p0 = vmpte(); double t0 = now(); char* b = map(0); double tm = now(); copy(b); double t1 = now(); copy(b); double t2 = now();
    long p1 = vmpte(); munmap(b, size);
    printf("faulting read: map %.4f  first copy %.4f  second copy (memcpy baseline) %.4f  extra %.4f  VmPTE +%.0f\n", (tm-t0)/gib, (t1-tm)/gib, (t2-t1)/gib, (t1-tm-(t2-t1))/gib, (p1-p0)/gib);
    t0 = now(); b = map(MAP_POPULATE); t1 = now(); copy(b); t2 = now(); munmap(b, size);
    printf("MAP_POPULATE: map %.4f  copy %.4f\n", (t1-t0)/gib, (t2-t1)/gib);
    b = map(0); t0 = now(); for (uint64_t o = 0; o < size; o += 2 << 20) madvise(b + o, 2 << 20, MADV_POPULATE_READ); t1 = now(); copy(b); t2 = now(); munmap(b, size);
    printf("MADV_POPULATE_READ 2MiB steps: %.4f  copy %.4f\n", (t1-t0)/gib, (t2-t1)/gib);
    b = map(0); t0 = now(); for (uint64_t i = 0; i < nslabs; ++i) madvise(b + i * slab, slab, MADV_POPULATE_READ); t1 = now(); munmap(b, size);
    printf("MADV_POPULATE_READ per slab: %.4f\n", (t1-t0)/gib);
    std::vector<unsigned char> vec(512);
    b = map(0); t0 = now(); for (uint64_t o = 0; o < size; o += 2 << 20) { mincore(b + o, 2 << 20, vec.data()); bool all = std::all_of(vec.begin(), vec.end(), [](unsigned char c){return c & 1;}); if (all) madvise(b + o, 2 << 20, MADV_POPULATE_READ);} t1 = now(); munmap(b, size);
    printf("mincore + MADV_POPULATE_READ 2MiB steps: %.4f\n", (t1-t0)/gib);
    b = map(0); t0 = now(); unsigned s = 0; for (uint64_t o = 0; o < size; o += 4096) s += *(volatile char*)(b + o); t1 = now(); munmap(b, size);
    printf("touch each 4 KiB page: %.4f (%u)\n", (t1-t0)/gib, s & 1);
  }
}
