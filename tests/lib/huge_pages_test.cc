// Engine KV in huge pages (lib/client/huge_pages.h, ClientOptions::kv_huge_pages): the advice
// covers exactly the 2 MiB-aligned part of the merged ranges, a kernel that refuses it never fails
// a registration, RegisterKvCache with kCollapse puts an engine's already-zeroed KV into huge pages
// (AnonHugePages of /proc/self/smaps_rollup), and what is stored from it loads back bit for bit.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "lib/client/huge_pages.h"
#include "strata/client.h"
#include "strata/key_chain.h"
#include "tests/lib/paged_test_util.h"

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif

namespace strata {
namespace {

using namespace paged_test;  // NOLINT: the shared fixtures of the paged tests

constexpr uint64_t kMiB = uint64_t{1} << 20;

struct Call {
  uintptr_t at;
  size_t length;
  int advice;
};
std::vector<Call> calls;
int refuse_hugepage = 0, refuse_collapse = 0;  // errno to fail with, 0: succeed

int FakeMadvise(void* p, size_t n, int advice) {
  calls.push_back({reinterpret_cast<uintptr_t>(p), n, advice});
  const int err = advice == MADV_HUGEPAGE ? refuse_hugepage : refuse_collapse;
  if (err == 0) return 0;
  errno = err;
  return -1;
}

std::byte* At(uintptr_t a) { return reinterpret_cast<std::byte*>(a); }

TEST_CASE("huge pages: the aligned part of merged ranges is advised, refusals are reported",
          "[lib]") {
  REQUIRE(HugePageBytes() == 2 * kMiB);  // x86-64 and arm64 with 4 KiB base pages
  const uintptr_t base = uintptr_t{1} << 40;  // never dereferenced: the fake madvise records
  calls.clear();
  refuse_hugepage = refuse_collapse = 0;
  // Three layers back to back from 1 MiB past a boundary (one tensor of every layer), one apart.
  const MemoryRange ranges[] = {{At(base + 1 * kMiB), 3 * kMiB},
                                {At(base + 4 * kMiB), 3 * kMiB},
                                {At(base + 7 * kMiB), 40 * kMiB},
                                {At(base + 100 * kMiB + 4096), kMiB}};  // no whole huge page
  HugePageAdvice a = AdviseHugePages(ranges, /*collapse=*/false, &FakeMadvise);
  REQUIRE(calls.size() == 1);
  CHECK(calls[0].at == base + 2 * kMiB);
  CHECK(calls[0].length == 44 * kMiB);  // [2, 46) MiB of the merged [1, 47) MiB
  CHECK(calls[0].advice == MADV_HUGEPAGE);
  CHECK(a.aligned_bytes == 44 * kMiB);
  CHECK(a.advised_bytes == 44 * kMiB);
  CHECK(a.collapsed_bytes == 0);

  calls.clear();
  a = AdviseHugePages(ranges, /*collapse=*/true, &FakeMadvise);
  REQUIRE(calls.size() == 3);  // advise, then collapse in pieces of 32 MiB
  CHECK((calls[1].advice == MADV_COLLAPSE && calls[1].length == 32 * kMiB));
  CHECK((calls[2].at == base + 34 * kMiB && calls[2].length == 12 * kMiB));
  CHECK(a.collapsed_bytes == 44 * kMiB);

  SECTION("MADV_HUGEPAGE refused: nothing else tried, the errno reported") {
    calls.clear();
    refuse_hugepage = EINVAL;
    a = AdviseHugePages(ranges, true, &FakeMadvise);
    CHECK(calls.size() == 1);
    CHECK(a.advised_bytes == 0);
    CHECK(a.advise_errno == EINVAL);
  }
  SECTION("MADV_COLLAPSE busy (EAGAIN): the next piece is still tried") {
    calls.clear();
    refuse_collapse = EAGAIN;
    a = AdviseHugePages(ranges, true, &FakeMadvise);
    CHECK(calls.size() == 3);
    CHECK(a.advised_bytes == 44 * kMiB);
    CHECK(a.collapsed_bytes == 0);
    CHECK(a.collapse_errno == EAGAIN);
  }
  SECTION("MADV_COLLAPSE refused otherwise (ENOMEM, EINVAL): no further piece") {
    calls.clear();
    refuse_collapse = ENOMEM;
    a = AdviseHugePages(ranges, true, &FakeMadvise);
    CHECK(calls.size() == 2);
    CHECK(a.collapse_errno == ENOMEM);
  }
  refuse_hugepage = refuse_collapse = 0;
}

TEST_CASE("huge pages: a range that is not mapped is reported, not fatal", "[lib]") {
  void* m = ::mmap(nullptr, 8 * kMiB, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  REQUIRE(m != MAP_FAILED);
  REQUIRE(::munmap(m, 8 * kMiB) == 0);  // a hole the kernel answers ENOMEM for
  const MemoryRange r{static_cast<std::byte*>(m), 8 * kMiB};
  const HugePageAdvice a = AdviseHugePages({&r, 1}, true);
  CHECK(a.advised_bytes == 0);
  CHECK(a.advise_errno == ENOMEM);
}

bool ThpNever() {
  std::ifstream f("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  return s.empty() || s.find("[never]") != std::string::npos;
}

// An engine's KV cache of kLayers layers of 4 MiB in vLLM's layout, in one mapping from `map`
// (anonymous, or a file's), zeroed and filled before it is registered, as an engine does.
struct EngineKv {
  static constexpr uint32_t kHeads = 4;
  static constexpr uint64_t kChunk = uint64_t{kBlockSize} * kHeads * kHeadDim * 2;
  static constexpr uint32_t kPagesPerLayer = 4 * kMiB / (2 * kChunk);  // 256
  static constexpr uint64_t kLayerBytes = 2 * kPagesPerLayer * kChunk;
  std::byte* mapping = nullptr;
  uint64_t mapped = 0;
  std::byte* base = nullptr;  // 2 MiB-aligned

  explicit EngineKv(int fd = -1) {
    mapped = kLayers * kLayerBytes + 2 * kMiB;
    if (fd >= 0) REQUIRE(::ftruncate(fd, static_cast<off_t>(mapped)) == 0);
    void* m = ::mmap(nullptr, mapped, PROT_READ | PROT_WRITE,
                     fd >= 0 ? MAP_PRIVATE : MAP_PRIVATE | MAP_ANONYMOUS, fd, 0);
    REQUIRE(m != MAP_FAILED);
    mapping = static_cast<std::byte*>(m);
    base = mapping + (2 * kMiB - reinterpret_cast<uintptr_t>(mapping) % (2 * kMiB)) % (2 * kMiB);
    std::memset(base, 0, kLayers * kLayerBytes);
    for (uint64_t i = 0; i < kLayers * kLayerBytes; i += 8) {
      const uint64_t v = i * 0x9E3779B97F4A7C15ull;
      std::memcpy(base + i, &v, 8);
    }
  }
  ~EngineKv() { ::munmap(mapping, mapped); }
  KvCacheSpec Spec() const {
    KvCacheSpec s;
    s.layout = KvLayout::kVllmFlashAttn;
    for (uint32_t l = 0; l < kLayers; ++l) s.layers.push_back(base + l * kLayerBytes);
    s.num_blocks = kPagesPerLayer;
    return s;
  }
  const std::byte* Chunk(uint32_t layer, uint32_t plane, int32_t page) const {
    return base + layer * kLayerBytes + (uint64_t{plane} * kPagesPerLayer + page) * kChunk;
  }
};

// Stores 8 pages of `kv` and loads them into 8 others; every chunk comes back bit for bit.
void StoreAndLoadBack(Client& client, const EngineKv& kv, const Namespace& ns) {
  REQUIRE(client.Clear(std::nullopt).ok());
  auto id = client.RegisterKvCache(ns, kv.Spec());
  INFO(id.status().ToString());
  REQUIRE(id.ok());  // whatever the kernel made of the advice
  const std::vector<BlockKey> keys = ComputeBlockKeys(ns, Tokens(8, 5));
  const std::vector<int32_t> from = {3, 250, 17, 100, 64, 201, 9, 128};
  const std::vector<int32_t> to = {4, 5, 6, 7, 8, 10, 11, 12};
  auto stored = client.StorePaged(*id, keys, from).Wait();
  INFO(stored.status().ToString());
  REQUIRE(stored.ok());
  CHECK(*stored == 8 * EngineKv::kHeads);
  auto loaded = client.LoadPaged(*id, keys, to).Wait();
  REQUIRE(loaded.ok());
  CHECK(*loaded == 8);
  for (uint32_t l = 0; l < kLayers; ++l)
    for (uint32_t p = 0; p < 2; ++p)
      for (size_t i = 0; i < from.size(); ++i)
        CHECK(std::memcmp(kv.Chunk(l, p, to[i]), kv.Chunk(l, p, from[i]), EngineKv::kChunk) == 0);
  CHECK(client.UnregisterKvCache(*id).ok());
}

TEST_CASE("huge pages: RegisterKvCache collapses an engine's zeroed KV, stores load bit for bit",
          "[lib][integration]") {
  const Namespace ns = MakeNamespace(
      {KvLayout::kVllmFlashAttn, EngineKv::kHeads, KvDtype::kBFloat16, Codec::kNone}, "huge");
  Daemon daemon("strata-huge-pages-test");
  for (const auto store_path :
       {ClientOptions::StorePath::kCrossMemory, ClientOptions::StorePath::kStaging}) {
    ClientOptions options;
    options.store_path = store_path;
    options.kv_huge_pages = ClientOptions::KvHugePages::kCollapse;
    INFO("store path " << (store_path == ClientOptions::StorePath::kStaging ? "staging"
                                                                              : "cross-memory"));
    auto client = ConnectTo(&daemon, options);
    EngineKv kv;
    const uint64_t before = AnonHugePageBytes();
    StoreAndLoadBack(*client, kv, ns);
    const uint64_t after = AnonHugePageBytes();
    INFO("AnonHugePages " << before << " -> " << after << " bytes");
    if (ThpNever())
      WARN("transparent huge pages are `never` here: the advice is refused, the store works");
    else if (after < before + 2 * kMiB)
      // MADV_COLLAPSE finds no free huge page on a machine whose memory is fragmented: the
      // registration must still work (checked above), the collapse cannot be required.
      WARN("MADV_COLLAPSE gave no huge page here (AnonHugePages " << before << " -> " << after
                                                                   << " bytes)");
  }
}

TEST_CASE("huge pages: memory the kernel will not collapse still registers and round-trips",
          "[lib][integration]") {
  // A private mapping of a regular file: MADV_COLLAPSE refuses file pages it cannot put in the
  // page cache as huge pages (EINVAL), the pages written are anonymous copies.
  const Namespace ns = MakeNamespace(
      {KvLayout::kVllmFlashAttn, EngineKv::kHeads, KvDtype::kBFloat16, Codec::kNone}, "huge-file");
  char path[] = "/tmp/strata-huge-pages-test-XXXXXX";
  const int fd = ::mkstemp(path);
  REQUIRE(fd >= 0);
  ::unlink(path);
  {
    EngineKv kv(fd);
    ClientOptions options;
    options.kv_huge_pages = ClientOptions::KvHugePages::kCollapse;
    auto client = ConnectTo(nullptr, options);
    StoreAndLoadBack(*client, kv, ns);
  }
  ::close(fd);
  // And a refusing madvise alone (AdviseHugePages above) never reaches the caller as an error.
}

TEST_CASE("huge pages: STRATA_KV_HUGE_PAGES is read and checked at connect", "[lib]") {
  ::setenv("STRATA_KV_HUGE_PAGES", "sometimes", 1);
  auto bad = Client::Embedded({64ull << 20, "", 0, "lru"});
  ::unsetenv("STRATA_KV_HUGE_PAGES");
  REQUIRE(!bad.ok());
  CHECK(bad.status().IsInvalidArgument());
  CHECK(bad.status().message().find("STRATA_KV_HUGE_PAGES") != std::string::npos);
  ::setenv("STRATA_KV_HUGE_PAGES", "off", 1);
  auto off = Client::Embedded({64ull << 20, "", 0, "lru"});
  ::unsetenv("STRATA_KV_HUGE_PAGES");
  CHECK(off.ok());
}

}  // namespace
}  // namespace strata
