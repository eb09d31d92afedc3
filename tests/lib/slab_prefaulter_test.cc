// The background populate of mapped pool slabs (lib/client/slab_prefaulter.h): the pieces go
// forward from the block just read and wrap around, a kernel without MADV_POPULATE_READ turns it
// off and another refusal drops only that slab, Stop ends it; on a real shared mapping every page
// of the range ends up in this process's page table (/proc/self/pagemap), and a client of a real
// `strata serve` has the whole slab of a block it loaded mapped without reading it.
#include "client/slab_prefaulter.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "strata/client.h"
#include "tests/lib/client_test_util.h"
#include "tests/lib/disk_serve.h"
#include "tests/lib/scratch_files.h"

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif

namespace strata {
namespace {

constexpr uint64_t kMiB = uint64_t{1} << 20;

struct Call {
  uintptr_t at;
  size_t length;
  int advice;
};
std::mutex calls_mu;
std::vector<Call> calls;
int refuse_with = 0;  // errno to fail with, 0: succeed

int FakeMadvise(void* p, size_t n, int advice) {
  std::lock_guard<std::mutex> lock(calls_mu);
  calls.push_back({reinterpret_cast<uintptr_t>(p), n, advice});
  if (refuse_with == 0) return 0;
  errno = refuse_with;
  return -1;
}

// Waits (at most 10 s: a loaded machine) until nothing is queued and `done(stats)` holds.
template <typename Done>
SlabPrefaulter::Stats WaitFor(const SlabPrefaulter& p, Done done) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  SlabPrefaulter::Stats s = p.stats();
  while (!(s.queued == 0 && done(s)) && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    s = p.stats();
  }
  return s;
}

TEST_CASE("slab prefaulter: forward from the block read, then wrapped, in 2 MiB pieces", "[lib]") {
  const uintptr_t base = uintptr_t{1} << 40;  // never dereferenced: the fake madvise records
  calls.clear();
  refuse_with = 0;
  SlabPrefaulter p(&FakeMadvise);
  p.Enqueue(reinterpret_cast<const std::byte*>(base), 8 * kMiB, 3 * kMiB + 100);
  auto s = WaitFor(p, [](const auto& st) { return st.populated_bytes == 8 * kMiB; });
  CHECK(s.populated_bytes == 8 * kMiB);
  CHECK(s.dropped_slabs == 0);
  CHECK(s.supported);
  p.Stop();
  std::lock_guard<std::mutex> lock(calls_mu);
  // From the page holding offset 3 MiB + 100 to the end, then from the start up to it.
  const std::vector<std::pair<uint64_t, uint64_t>> want = {
      {3 * kMiB, 2 * kMiB}, {5 * kMiB, 2 * kMiB}, {7 * kMiB, 1 * kMiB},
      {0, 2 * kMiB}, {2 * kMiB, 1 * kMiB}};
  REQUIRE(calls.size() == want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    INFO("call " << i);
    CHECK(calls[i].at - base == want[i].first);
    CHECK(calls[i].length == want[i].second);
    CHECK(calls[i].advice == MADV_POPULATE_READ);
  }
}

TEST_CASE("slab prefaulter: EINVAL turns it off, another refusal drops one slab", "[lib]") {
  const auto* base = reinterpret_cast<const std::byte*>(uintptr_t{1} << 40);
  SECTION("a kernel without MADV_POPULATE_READ") {
    calls.clear();
    refuse_with = EINVAL;
    SlabPrefaulter p(&FakeMadvise);
    p.Enqueue(base, 4 * kMiB, 0);
    auto s = WaitFor(p, [](const auto& st) { return !st.supported; });
    CHECK_FALSE(s.supported);
    CHECK(s.populated_bytes == 0);
    CHECK(s.dropped_slabs == 0);
    p.Enqueue(base, 4 * kMiB, 0);  // nothing more is tried
    CHECK(p.stats().queued == 0);
    p.Stop();
    std::lock_guard<std::mutex> lock(calls_mu);
    CHECK(calls.size() == 1);
  }
  SECTION("a range the kernel refuses (not mapped)") {
    calls.clear();
    refuse_with = ENOMEM;
    SlabPrefaulter p(&FakeMadvise);
    p.Enqueue(base, 4 * kMiB, 0);
    auto s = WaitFor(p, [](const auto& st) { return st.dropped_slabs == 1; });
    CHECK(s.dropped_slabs == 1);
    CHECK(s.supported);
    refuse_with = 0;
    p.Enqueue(base, 4 * kMiB, 0);  // the next slab is still populated
    s = WaitFor(p, [](const auto& st) { return st.populated_bytes == 4 * kMiB; });
    CHECK(s.populated_bytes == 4 * kMiB);
    p.Stop();
  }
  SECTION("interrupted pieces are retried a few times, then the slab is dropped") {
    calls.clear();
    refuse_with = EINTR;
    SlabPrefaulter p(&FakeMadvise);
    p.Enqueue(base, 2 * kMiB, 0);
    auto s = WaitFor(p, [](const auto& st) { return st.dropped_slabs == 1; });
    CHECK(s.dropped_slabs == 1);
    p.Stop();
    std::lock_guard<std::mutex> lock(calls_mu);
    CHECK(calls.size() == 4);  // the first try and three retries
  }
  refuse_with = 0;
}

TEST_CASE("slab prefaulter: after Stop nothing is queued or run", "[lib]") {
  calls.clear();
  refuse_with = 0;
  SlabPrefaulter p(&FakeMadvise);
  p.Stop();
  p.Enqueue(reinterpret_cast<const std::byte*>(uintptr_t{1} << 40), 4 * kMiB, 0);
  CHECK(p.stats().queued == 0);
  std::lock_guard<std::mutex> lock(calls_mu);
  CHECK(calls.empty());
}

// Whether this kernel has MADV_POPULATE_READ (Linux >= 5.14).
bool KernelPopulates() {
  void* m = ::mmap(nullptr, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  REQUIRE(m != MAP_FAILED);
  const bool ok = ::madvise(m, 4096, MADV_POPULATE_READ) == 0;
  ::munmap(m, 4096);
  return ok;
}

// Pages of [at, at + bytes) present in this process's page table (pagemap bit 63).
uint64_t PresentPages(const std::byte* at, uint64_t bytes) {
  const int fd = ::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  const uint64_t first = reinterpret_cast<uintptr_t>(at) / 4096, n = bytes / 4096;
  std::vector<uint64_t> entries(n);
  const ssize_t got = ::pread(fd, entries.data(), n * 8, static_cast<off_t>(first * 8));
  ::close(fd);
  REQUIRE(got == static_cast<ssize_t>(n * 8));
  uint64_t present = 0;
  for (uint64_t e : entries) present += (e >> 63) & 1;
  return present;
}

TEST_CASE("slab prefaulter: a read-only shared mapping ends up wholly in the page table",
          "[lib]") {
  REQUIRE(::sysconf(_SC_PAGESIZE) == 4096);
  constexpr uint64_t kBytes = 8 * kMiB;
  const int fd = ::memfd_create("prefault-test", MFD_CLOEXEC);
  REQUIRE(fd >= 0);
  REQUIRE(::ftruncate(fd, kBytes) == 0);
  // The pages exist (written through one mapping), as a daemon's pool slab's do.
  void* w = ::mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  REQUIRE(w != MAP_FAILED);
  std::memset(w, 0x5a, kBytes);
  void* r = ::mmap(nullptr, kBytes, PROT_READ, MAP_SHARED, fd, 0);
  REQUIRE(r != MAP_FAILED);
  const auto* ro = static_cast<const std::byte*>(r);
  CHECK(PresentPages(ro, kBytes) == 0);  // nothing read through it yet
  SlabPrefaulter p;
  p.Enqueue(ro, kBytes, 5 * kMiB);
  auto s = WaitFor(p, [](const auto& st) { return st.populated_bytes == kBytes || !st.supported; });
  // A kernel without MADV_POPULATE_READ (Linux < 5.14) is the fallback: nothing populated, and
  // the mapping as it was.
  CHECK(s.supported == KernelPopulates());
  CHECK(s.populated_bytes == (s.supported ? kBytes : 0));
  CHECK(PresentPages(ro, kBytes) == (s.supported ? kBytes / 4096 : 0));
  p.Stop();
  ::munmap(r, kBytes);
  ::munmap(w, kBytes);
  ::close(fd);
}

// Rss of this process's mappings of the daemon's pool (the read-only slab mappings of clients).
uint64_t PoolRssBytes() {
  std::ifstream in("/proc/self/smaps");
  std::string line;
  bool pool = false;
  uint64_t kib = 0;
  while (std::getline(in, line)) {
    if (line.find('-') != std::string::npos && line.find(' ') != std::string::npos &&
        line.find(':') > line.find(' ')) {  // a mapping's header line
      pool = line.find("memfd:strata-host-pool") != std::string::npos;
    } else if (pool && line.rfind("Rss:", 0) == 0) {
      kib += std::stoull(line.substr(4));
    }
  }
  return kib * 1024;
}

TEST_CASE("strata serve: a client that loads one block has its whole slab mapped soon after",
          "[lib][integration]") {
  const std::string dir = testing::ScratchDir("prefault");
  const std::string socket = dir + "/s.sock";
  auto serve = testing::StartServe(
      {"serve", "--socket", socket, "--no-disk", "--host-pool", "64MiB"}, socket);
  auto c = Client::Connect(socket);
  REQUIRE(c.ok());
  Client& client = **c;
  constexpr size_t kBlock = 64 * 1024;
  Namespace ns = testing::SmallNamespace("test/prefault", kBlock);
  testing::Prompt p(ns, 32, 7, kBlock);  // 2 MiB in one slab
  REQUIRE(*client.Store(ns, p.keys, p.in).Wait() == 32);
  CHECK(PoolRssBytes() == 0);  // stores go through staging: no slab mapped yet
  testing::Outputs o(1, kBlock);
  REQUIRE(*client.Load(ns, std::span<const BlockKey>(p.keys).first(1), o.out).Wait() == 1);
  CHECK(o.bufs[0] == p.blocks[0]);
  // The load read 64 KiB of the slab; the rest of its 16 MiB comes from the prefaulter.
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  uint64_t rss = PoolRssBytes();
  while (rss < (16 << 20) && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    rss = PoolRssBytes();
  }
  // Without MADV_POPULATE_READ (Linux < 5.14) only what the load read is mapped, as before.
  if (KernelPopulates())
    CHECK(rss == uint64_t{16} << 20);
  else
    CHECK(rss < uint64_t{1} << 20);
  // The rest loads bit for bit from the populated mapping.
  testing::Outputs all(32, kBlock);
  REQUIRE(*client.Load(ns, p.keys, all.out).Wait() == 32);
  for (size_t i = 0; i < 32; ++i) CHECK(all.bufs[i] == p.blocks[i]);
}

}  // namespace
}  // namespace strata
