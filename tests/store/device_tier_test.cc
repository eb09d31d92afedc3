// DeviceTier (CUDA builds): round trip through GPU memory, eviction, pins. Says plainly when it
// cannot run: without a CUDA build, or without a device.
#include <catch2/catch.hpp>

#include <vector>

#include "store_test_util.h"

#if defined(STRATA_WITH_DEVICE_TIER)
#include "store/device_tier.h"
#endif

namespace strata::store {
namespace {

TEST_CASE("device tier stores blocks in GPU memory behind the tier interface", "[store][gpu]") {
#if !defined(STRATA_WITH_DEVICE_TIER)
  WARN("SKIPPED: device tier not built (no CUDA toolkit in this build)");
#else
  if (DeviceTier::DeviceCount() == 0) {
    WARN("SKIPPED: no CUDA device");
    return;
  }
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
#endif
}

}  // namespace
}  // namespace strata::store
