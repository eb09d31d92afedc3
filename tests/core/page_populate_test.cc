// BackgroundPopulate: the page table of a read-only mapping is filled by its thread, and Stop()
// leaves nothing running over the range (it may be unmapped at once).
#include "page_populate.h"

#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

namespace strata {
namespace {

// The resident bytes of this process's mapping that starts at `base` (smaps' Rss: pages in its
// page table), or -1 when no mapping starts there.
int64_t MappingRss(const void* base) {
  std::ifstream smaps("/proc/self/smaps");
  std::ostringstream want;
  want << std::hex << reinterpret_cast<uintptr_t>(base) << "-";
  std::string line;
  bool in = false;
  while (std::getline(smaps, line)) {
    if (line.rfind(want.str(), 0) == 0) in = true;
    if (in && line.rfind("Rss:", 0) == 0) return std::stoll(line.substr(4)) * 1024;
  }
  return -1;
}

// A read-only shared mapping of a memfd of `bytes`, each page holding its index.
struct Memfd {
  int fd = -1;
  const std::byte* base = nullptr;
  size_t bytes = 0;
  explicit Memfd(size_t n) : bytes(n) {
    fd = ::memfd_create("page-populate-test", MFD_CLOEXEC);
    REQUIRE(fd >= 0);
    REQUIRE(::ftruncate(fd, static_cast<off_t>(n)) == 0);
    std::vector<std::byte> page(4096);
    for (size_t at = 0; at < n; at += page.size()) {
      const uint64_t index = at / page.size();
      std::memcpy(page.data(), &index, sizeof(index));
      REQUIRE(::pwrite(fd, page.data(), page.size(), static_cast<off_t>(at)) ==
              static_cast<ssize_t>(page.size()));
    }
    void* p = ::mmap(nullptr, n, PROT_READ, MAP_SHARED, fd, 0);
    REQUIRE(p != MAP_FAILED);
    base = static_cast<const std::byte*>(p);
  }
  ~Memfd() {
    if (base != nullptr) ::munmap(const_cast<std::byte*>(base), bytes);
    ::close(fd);
  }
};

TEST_CASE("BackgroundPopulate fills a read-only mapping's page table and reads nothing else",
          "[core][populate]") {
  Memfd m(size_t{8} << 20);
  CHECK(MappingRss(m.base) == 0);  // nothing read yet
  BackgroundPopulate populate(m.base, m.bytes, size_t{2} << 20);
  int64_t rss = 0;
  for (int i = 0; i < 1000 && (rss = MappingRss(m.base)) < static_cast<int64_t>(m.bytes); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  CHECK(rss == static_cast<int64_t>(m.bytes));
  populate.Stop();
  populate.Stop();  // twice: a no-op
  for (size_t at = 0; at < m.bytes; at += 4096) {
    uint64_t index = 0;
    std::memcpy(&index, m.base + at, sizeof(index));
    REQUIRE(index == at / 4096);
  }
}

TEST_CASE("BackgroundPopulate::Stop ends the thread: the range may be unmapped at once and no "
          "page is filled after it",
          "[core][populate]") {
  Memfd m(size_t{256} << 20);
  BackgroundPopulate populate(m.base, m.bytes, size_t{2} << 20);
  populate.Stop();
  const int64_t after_stop = MappingRss(m.base);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  CHECK(MappingRss(m.base) == after_stop);
  // Moving keeps one thread: the moved-from object stops nothing, the target stops it.
  BackgroundPopulate a(m.base, m.bytes, size_t{2} << 20);
  BackgroundPopulate b = std::move(a);
  a.Stop();
  b = BackgroundPopulate();  // stops and joins a's thread
  const int64_t after_move = MappingRss(m.base);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  CHECK(MappingRss(m.base) == after_move);
}

}  // namespace
}  // namespace strata
