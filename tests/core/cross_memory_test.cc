// Cross-memory reads split over workers (lib/core/cross_memory.h): the same bytes and checksum
// as one thread reading alone, whatever order the workers run in, and a hole in the middle of
// the payload is the same clear error. Reads this test's own memory (process_vm_readv of itself).
#include "cross_memory.h"

#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "strata/block_format.h"

namespace strata {
namespace {

ClientProcess Self() {
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, ::getpid(), 0));
  return {::getpid(), pidfd};
}

// The ways a RunWorkers may run its calls: all at once on threads, one after another, backwards.
std::vector<std::pair<std::string, RunWorkers>> Runners() {
  return {
      {"threads",
       [](size_t n, const std::function<void(size_t)>& fn) {
         std::vector<std::thread> t;
         for (size_t w = 0; w < n; ++w) t.emplace_back([&fn, w] { fn(w); });
         for (auto& x : t) x.join();
       }},
      {"in order",
       [](size_t n, const std::function<void(size_t)>& fn) {
         for (size_t w = 0; w < n; ++w) fn(w);
       }},
      {"backwards",
       [](size_t n, const std::function<void(size_t)>& fn) {
         for (size_t w = n; w-- > 0;) fn(w);
       }},
  };
}

TEST_CASE("cross-memory reads split over workers copy and hash exactly what one thread does",
          "[core]") {
  const ClientProcess self = Self();
  REQUIRE(self.pidfd >= 0);
  std::mt19937_64 rng(7);
  for (uint64_t length : {uint64_t{3} * kCrossMemoryChunkBytes, uint64_t{1} << 21,
                          (uint64_t{1} << 20) + 100, kCrossMemoryChunkBytes + 1}) {
    std::vector<std::byte> src(length);
    for (auto& b : src) b = static_cast<std::byte>(rng());
    const uint64_t want = PayloadChecksum(src);
    for (const auto& [name, run] : Runners()) {
      for (size_t workers : {size_t{1}, size_t{2}, size_t{3}}) {
        CAPTURE(length, name, workers);
        std::vector<std::byte> dst(length);
        auto got = CopyFromProcessWithChecksum(self, reinterpret_cast<uint64_t>(src.data()),
                                               length, dst.data(), workers, run);
        REQUIRE(got.ok());
        CHECK(*got == want);
        CHECK(dst == src);
      }
    }
  }
  ::close(self.pidfd);
}

TEST_CASE("cross-memory reads split over workers fail clearly on a hole in the payload",
          "[core]") {
  const ClientProcess self = Self();
  REQUIRE(self.pidfd >= 0);
  const uint64_t length = uint64_t{1} << 21;
  void* m = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  REQUIRE(m != MAP_FAILED);
  std::memset(m, 0x5a, length);
  // One page gone in the fifth chunk: that chunk's read fails, whichever worker reads it.
  auto* base = static_cast<std::byte*>(m);
  REQUIRE(::munmap(base + 4 * kCrossMemoryChunkBytes + 8192, 4096) == 0);
  for (const auto& [name, run] : Runners()) {
    CAPTURE(name);
    std::vector<std::byte> dst(length);
    auto got = CopyFromProcessWithChecksum(self, reinterpret_cast<uint64_t>(m), length,
                                           dst.data(), 2, run);
    REQUIRE_FALSE(got.ok());
    CHECK(got.status().IsInvalidArgument());
    // The chunk's read stops at the hole (a short read) or faults at once (EFAULT).
    const std::string why = got.status().ToString();
    CHECK((why.find("short") != std::string::npos || why.find("EFAULT") != std::string::npos));
  }
  ::munmap(base, 4 * kCrossMemoryChunkBytes + 8192);
  ::munmap(base + 4 * kCrossMemoryChunkBytes + 12288, length - 4 * kCrossMemoryChunkBytes - 12288);
  ::close(self.pidfd);
}

}  // namespace
}  // namespace strata
