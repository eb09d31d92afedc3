// DeviceTier (CUDA builds) on a GPU: round trip through GPU memory, eviction, pins, batch copies
// from registered (page-locked) host memory, and the tier under TieredStore (copies of loaded
// blocks, promotion back to host). A test that cannot run - no CUDA in this build, or no device -
// prints "SKIPPED: <why>" and exits 77, which ctest reports as skipped (SKIP_RETURN_CODE), never
// as passed: this binary holds only [gpu] tests and ctest runs each in its own process.
#include <catch2/catch.hpp>

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "store/tiered_store.h"
#include "store_test_util.h"
#include "tests/skip.h"

#if defined(STRATA_WITH_DEVICE_TIER)
#include "store/device_tier.h"
#endif

namespace strata::store {
namespace {

using ::strata::testing::SkipTest;

// Skips the calling test unless DeviceTier can run here.
void RequireDevice() {
#if !defined(STRATA_WITH_DEVICE_TIER)
  SkipTest("device tier not built (this build has no CUDA)");
#else
  if (Status st = DeviceTier::CheckDevice(0); !st.ok()) SkipTest(st.ToString());
#endif
}

#if !defined(STRATA_WITH_DEVICE_TIER)
TEST_CASE("device tier stores blocks in GPU memory behind the tier interface", "[store][gpu]") {
  RequireDevice();
}
TEST_CASE("device tier batch copies from page-locked host memory", "[store][gpu]") {
  RequireDevice();
}
TEST_CASE("device tier under TieredStore survives host eviction and promotes back",
          "[store][gpu]") {
  RequireDevice();
}
TEST_CASE("device tier follows a host slab that gets fresh memory at the same address",
          "[store][gpu]") {
  RequireDevice();
}
#else
TEST_CASE("device tier stores blocks in GPU memory behind the tier interface", "[store][gpu]") {
  RequireDevice();
  using testing::IsTestPayload;
  using testing::TestHeader;
  using testing::TestKey;
  using testing::TestPayload;
  DeviceTierOptions o;
  o.capacity_bytes = 4 << 20;  // 64 blocks of 64 KiB
  o.pool.slab_bytes = 2 << 20;
  auto t = DeviceTier::Open(o);
  INFO(t.status().ToString());
  REQUIRE(t.ok());
  REQUIRE((*t)->kind() == TierKind::kDevice);
  const size_t kBlock = 65536;
  for (uint64_t i = 0; i < 200; ++i) {
    const BlockKey k = TestKey(i);
    const auto p = TestPayload(k, kBlock);
    REQUIRE((*t)->Put(TestHeader(k, p), p).ok());
    if (i == 0) REQUIRE((*t)->Pin(k, std::chrono::seconds(60)).ok());
  }
  REQUIRE((*t)->Stats().evictions > 0);
  std::vector<std::byte> out(kBlock);
  auto h = (*t)->Get(TestKey(0), out);  // pinned: survived the evictions
  REQUIRE(h.ok());
  REQUIRE(IsTestPayload(TestKey(0), out.data(), kBlock));
  h = (*t)->Get(TestKey(199), out);
  REQUIRE(h.ok());
  REQUIRE(IsTestPayload(TestKey(199), out.data(), kBlock));
  REQUIRE((*t)->Acquire(TestKey(199)).status().code() == StatusCode::kNotSupported);
  REQUIRE(DeviceTier::Open(
              DeviceTierOptions{.device = 999, .capacity_bytes = uint64_t{1} << 30, .pool = {}})
              .status()
              .code() == StatusCode::kUnavailable);
}

TEST_CASE("device tier batch copies from page-locked host memory", "[store][gpu]") {
  RequireDevice();
  using testing::IsTestPayload;
  using testing::TestHeader;
  using testing::TestKey;
  using testing::TestPayload;
  DeviceTierOptions o;
  o.capacity_bytes = 16 << 20;
  o.pool.slab_bytes = 2 << 20;
  auto t = DeviceTier::Open(o);
  INFO(t.status().ToString());
  REQUIRE(t.ok());
  const size_t kBlock = 65536, kN = 128;
  // One host region for the sources and one for the destinations, registered as the node
  // registers its host pool (only one region per tier: sources and destinations share it).
  std::vector<std::byte> host(2 * kN * kBlock);
  REQUIRE((*t)->RegisterHostMemory(host.data(), host.size()).ok());
  CHECK((*t)->RegisterHostMemory(host.data(), host.size()).code() ==
        StatusCode::kAlreadyExists);
  std::vector<BatchPut> puts;
  for (size_t i = 0; i < kN; ++i) {
    const auto p = TestPayload(TestKey(i), kBlock);
    std::copy(p.begin(), p.end(), host.begin() + i * kBlock);
    puts.push_back({TestHeader(TestKey(i), p), {host.data() + i * kBlock, kBlock}, nullptr});
  }
  auto n = (*t)->PutBatch(puts);
  INFO(n.status().ToString());
  REQUIRE(n.ok());
  CHECK(*n == kN);
  std::vector<BatchGet> gets;
  for (size_t i = 0; i < kN; ++i)
    gets.push_back({TestKey(i), {host.data() + (kN + i) * kBlock, kBlock}, {}, {}});
  REQUIRE((*t)->GetBatch(gets).ok());
  for (size_t i = 0; i < kN; ++i) {
    INFO(i);
    REQUIRE(gets[i].status.ok());
    CHECK(IsTestPayload(TestKey(i), host.data() + (kN + i) * kBlock, kBlock));
  }
  // Through the per-block path too: the batch put the same bytes.
  std::vector<std::byte> out(kBlock);
  REQUIRE((*t)->Get(TestKey(7), out).ok());
  CHECK(IsTestPayload(TestKey(7), out.data(), kBlock));
}

TEST_CASE("device tier under TieredStore survives host eviction and promotes back",
          "[store][gpu]") {
  RequireDevice();
  using testing::IsTestPayload;
  using testing::TestKey;
  using testing::TestPayload;
  TieredStoreOptions so;
  so.host.capacity_bytes = 4 << 20;  // 64 blocks of 64 KiB
  so.host.pool.slab_bytes = 2 << 20;
  so.host.hugetlb = false;
  DeviceTierOptions o;
  o.capacity_bytes = 8 << 20;
  o.pool.slab_bytes = 2 << 20;
  o.pool.verify_on_put = false;
  auto d = DeviceTier::Open(o);
  REQUIRE(d.ok());
  DeviceTier* gpu = d->get();
  auto s = TieredStore::Open(so, std::move(d).value());
  REQUIRE(s.ok());
  REQUIRE(gpu->RegisterHostMemory((*s)->host().base(), (*s)->host().size()).ok());
  const NamespaceId ns{1, 2};
  const size_t kBlock = 65536;
  std::vector<BlockKey> chain;
  for (uint64_t i = 0; i < 16; ++i) chain.push_back(TestKey(i));
  for (const BlockKey& k : chain) REQUIRE((*s)->Put(k, ns, TestPayload(k, kBlock)).ok());
  (*s)->CopyToDevice(chain);
  (*s)->WaitDeviceCopies();
  CHECK((*s)->Stats().device.blocks == 16);
  CHECK((*s)->Stats().device_copy_batches == 1);
  for (uint64_t i = 100; i < 300; ++i)
    REQUIRE((*s)->Put(TestKey(i), ns, TestPayload(TestKey(i), kBlock)).ok());
  CHECK((*s)->Lookup(chain).where == std::vector<TierKind>(16, TierKind::kDevice));
  CHECK((*s)->PromoteFromDevice(chain) == 16);
  CHECK((*s)->Stats().device_corrupt == 0);
  for (const BlockKey& k : chain) {
    auto block = (*s)->host().Acquire(k);
    REQUIRE(block.ok());
    CHECK(IsTestPayload(k, block->payload().data(), kBlock));
  }
}
// The node registers the host pool slab by slab and registers a slab again when it gets a fresh
// memfd for another tenant (HostTier::RenewSlab maps it over the old one, MAP_FIXED). Without
// that, CUDA keeps the old registration's pages: a copy to the GPU would read the old memory and
// a copy from it would land where no process reads any more.
TEST_CASE("device tier follows a host slab that gets fresh memory at the same address",
          "[store][gpu]") {
  RequireDevice();
  using testing::IsTestPayload;
  using testing::TestHeader;
  using testing::TestKey;
  using testing::TestPayload;
  DeviceTierOptions o;
  o.capacity_bytes = 8 << 20;
  o.pool.slab_bytes = 2 << 20;
  auto t = DeviceTier::Open(o);
  REQUIRE(t.ok());
  constexpr size_t kUnit = 2 << 20, kBlock = 65536;
  auto map_unit = [](std::byte* at) {
    const int fd = memfd_create("strata-device-tier-test", MFD_CLOEXEC);
    REQUIRE(fd >= 0);
    REQUIRE(ftruncate(fd, kUnit) == 0);
    void* p = mmap(at, kUnit, PROT_READ | PROT_WRITE, MAP_SHARED | (at ? MAP_FIXED : 0), fd, 0);
    close(fd);
    REQUIRE(p != MAP_FAILED);
    return static_cast<std::byte*>(p);
  };
  // Two units, reserved together so that they are adjacent.
  void* area = mmap(nullptr, 2 * kUnit, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  REQUIRE(area != MAP_FAILED);
  auto* base = static_cast<std::byte*>(area);
  map_unit(base);
  map_unit(base + kUnit);
  REQUIRE((*t)->RegisterHostMemory(base, 2 * kUnit, kUnit).ok());
  CHECK((*t)->ReregisterHostUnit(base + 4096).code() == StatusCode::kInvalidArgument);

  // Unit 1 gets a fresh memfd; its new bytes go to the GPU and come back into unit 0.
  map_unit(base + kUnit);
  REQUIRE((*t)->ReregisterHostUnit(base + kUnit).ok());
  const BlockKey k = TestKey(5);
  const auto p = TestPayload(k, kBlock);
  std::copy(p.begin(), p.end(), base + kUnit);
  std::vector<BatchPut> puts{{TestHeader(k, p), {base + kUnit, kBlock}, nullptr}};
  auto n = (*t)->PutBatch(puts);
  REQUIRE(n.ok());
  REQUIRE(*n == 1);
  std::vector<BatchGet> gets{{k, {base, kBlock}, {}, {}}};
  REQUIRE((*t)->GetBatch(gets).ok());
  REQUIRE(gets[0].status.ok());
  CHECK(IsTestPayload(k, base, kBlock));
  // And from the GPU into the renewed unit.
  std::fill(base + kUnit, base + kUnit + kBlock, std::byte{0});
  gets = {{k, {base + kUnit, kBlock}, {}, {}}};
  REQUIRE((*t)->GetBatch(gets).ok());
  REQUIRE(gets[0].status.ok());
  CHECK(IsTestPayload(k, base + kUnit, kBlock));
  t->reset();  // unregisters before the memory goes
  munmap(area, 2 * kUnit);
}
#endif

}  // namespace
}  // namespace strata::store
