// A request larger than the host pool: CheckFits refuses it up front saying how large the pool
// must be, and the NoSpace of a reservation that cannot fit says what holds the space (stores not
// yet committed) instead of claiming that blocks are pinned.
#include <catch2/catch.hpp>

#include <vector>

#include "store/host_tier.h"
#include "store_test_util.h"

namespace strata::store {
namespace {

using testing::TestKey;

constexpr uint64_t kMiB = 1 << 20;

std::unique_ptr<HostTier> OpenHost(uint64_t capacity) {
  HostTierOptions o;
  o.capacity_bytes = capacity;
  o.pool.slab_bytes = 2 * kMiB;
  o.hugetlb = false;
  auto t = HostTier::Open(o);
  REQUIRE(t.ok());
  return std::move(t).value();
}

TEST_CASE("host pool: a store larger than the pool is refused up front with the size it needs",
          "[store]") {
  auto pool = OpenHost(8 * kMiB);
  // 96 KiB blocks: 8 MiB holds fewer than 90 of them.
  const std::vector<uint64_t> fits(40, 96 << 10);
  CHECK(pool->CheckFits(fits).ok());
  const std::vector<uint64_t> too_many(200, 96 << 10);
  Status st = pool->CheckFits(too_many);
  INFO(st.ToString());
  CHECK(st.IsNoSpace());
  CHECK(st.ToString().find("200 blocks") != std::string::npos);
  CHECK(st.ToString().find("make it at least 20 MiB") != std::string::npos);  // 200 x 96 KiB
  CHECK(st.ToString().find("pinned") == std::string::npos);
  const std::vector<uint64_t> huge = {3 * kMiB};
  CHECK(pool->CheckFits(huge).IsInvalidArgument());
}

TEST_CASE("host pool: reservations that fill the pool are reported as such, not as pins",
          "[store]") {
  auto pool = OpenHost(4 * kMiB);
  std::vector<WriteReservation> held;
  Status last;
  for (uint64_t i = 0; i < 100; ++i) {
    auto r = pool->Reserve(TestKey(i), 96 << 10);
    if (!r.ok()) {
      last = r.status();
      break;
    }
    held.push_back(*r);
  }
  INFO(last.ToString());
  REQUIRE(last.IsNoSpace());
  CHECK(held.size() < 100);
  CHECK(last.ToString().find("nothing is pinned or read") != std::string::npos);
  CHECK(last.ToString().find("being written by stores not yet committed") != std::string::npos);
  CHECK(last.ToString().find("larger than the largest request") != std::string::npos);
  for (const auto& r : held) pool->Abort(r);
  CHECK(pool->Reserve(TestKey(1000), 96 << 10).ok());
}

}  // namespace
}  // namespace strata::store
