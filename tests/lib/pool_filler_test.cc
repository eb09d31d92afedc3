// PoolFiller (lib/client/pool_filler.h): fills the page table of the pages a slab's memfd holds,
// and never allocates one it does not.
#include "lib/client/pool_filler.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <cctype>
#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

namespace strata {
namespace {

// Rss of the mapping of this process that starts at `start`, in bytes (/proc/self/smaps).
uint64_t RssAt(const void* start) {
  std::ifstream in("/proc/self/smaps");
  std::string line;
  bool in_it = false;
  while (std::getline(in, line)) {
    if (!line.empty() && std::isxdigit(static_cast<unsigned char>(line[0])) &&
        line.find('-') != std::string::npos && line.find(':') > line.find(' ')) {
      in_it = std::stoull(line.substr(0, line.find('-')), nullptr, 16) ==
              reinterpret_cast<uintptr_t>(start);
      continue;
    }
    if (in_it && line.rfind("Rss:", 0) == 0) {
      std::istringstream f(line);
      std::string key;
      uint64_t kb = 0;
      f >> key >> kb;
      return kb * 1024;
    }
  }
  return UINT64_MAX;
}

TEST_CASE("pool filler: fills the pages a slab's memfd holds and allocates none it does not",
          "[lib]") {
  constexpr uint64_t kSlab = uint64_t{4} << 20, kWritten = uint64_t{1} << 20;
  const int fd = ::memfd_create("pool-filler-test", MFD_CLOEXEC);
  REQUIRE(fd >= 0);
  REQUIRE(::ftruncate(fd, kSlab) == 0);
  // The daemon's side: only the first MiB written (a renewed slab, a pool still populating).
  void* w = ::mmap(nullptr, kSlab, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  REQUIRE(w != MAP_FAILED);
  std::memset(w, 0x5a, kWritten);
  struct stat st {};
  REQUIRE(::fstat(fd, &st) == 0);
  const auto allocated = st.st_blocks;
  CHECK(static_cast<uint64_t>(allocated) * 512 == kWritten);
  // The client's side: a read-only mapping with an empty page table.
  void* r = ::mmap(nullptr, kSlab, PROT_READ, MAP_SHARED, fd, 0);
  REQUIRE(r != MAP_FAILED);
  CHECK(RssAt(r) == 0);
  {
    PoolFiller filler(static_cast<const std::byte*>(r), kSlab, 1,
                      [](uint64_t) { return uint32_t{0}; });
    // Two passes a second apart (the second finds no page more), then the thread ends.
    for (int i = 0; i < 1500 && !filler.finished(); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    REQUIRE(filler.finished());
    CHECK(filler.filled_bytes() == 0);  // the slab is not whole
  }
  CHECK(RssAt(r) == kWritten);  // every page the memfd holds is in this mapping's page table
  REQUIRE(::fstat(fd, &st) == 0);
  CHECK(st.st_blocks == allocated);  // and none was allocated by the filler's reads

  // The rest written: a new filler fills the whole slab and counts it.
  std::memset(static_cast<std::byte*>(w) + kWritten, 0x5a, kSlab - kWritten);
  {
    PoolFiller filler(static_cast<const std::byte*>(r), kSlab, 1,
                      [](uint64_t) { return uint32_t{0}; });
    for (int i = 0; i < 1500 && !filler.finished(); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    REQUIRE(filler.finished());
    CHECK(filler.filled_bytes() == kSlab);
  }
  CHECK(RssAt(r) == kSlab);
  // An unmapped slab (another tenant's, left PROT_NONE) is never read.
  {
    PoolFiller filler(static_cast<const std::byte*>(r), kSlab, 1,
                      [](uint64_t) { return PoolFiller::kUnmapped; });
    for (int i = 0; i < 1500 && !filler.finished(); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    REQUIRE(filler.finished());
    CHECK(filler.filled_bytes() == 0);
  }
  ::munmap(r, kSlab);
  ::munmap(w, kSlab);
  ::close(fd);
}

}  // namespace
}  // namespace strata
