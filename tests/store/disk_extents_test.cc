// The slab file's free space (store/disk_extents.h) against a byte map: best
// fit, coalescing, exhaustion, and a random churn that never loses or
// double-counts a byte.
#include "store/disk_extents.h"

#include <catch2/catch.hpp>
#include <cstdint>
#include <random>
#include <utility>
#include <vector>

namespace strata::store::disk {
namespace {

TEST_CASE("extent allocator: best fit, lowest offset among equals", "[store]") {
  ExtentAllocator a;
  CHECK(a.Allocate(1) == ExtentAllocator::kNone);
  a.Free(0, 100);
  a.Free(200, 30);
  a.Free(300, 30);
  a.Free(400, 50);
  CHECK(a.free_bytes() == 210);
  CHECK(a.extents() == 4);
  CHECK(a.Allocate(30) == 200);  // exact fit, lowest of the two
  CHECK(a.Allocate(40) == 400);  // smallest that holds it (50), not the first (100)
  CHECK(a.Allocate(30) == 300);
  CHECK(a.Allocate(101) == ExtentAllocator::kNone);
  CHECK(a.Allocate(100) == 0);
  CHECK(a.Allocate(10) == 440);  // the rest of the 50
  CHECK(a.free_bytes() == 0);
  CHECK(a.extents() == 0);
}

TEST_CASE("extent allocator: frees coalesce with both neighbours", "[store]") {
  ExtentAllocator a;
  a.Free(0, 10);
  a.Free(20, 10);
  CHECK(a.extents() == 2);
  a.Free(10, 10);  // joins both
  CHECK(a.extents() == 1);
  CHECK(a.free_bytes() == 30);
  CHECK(a.Allocate(30) == 0);
  a.Free(50, 10);
  a.Free(40, 10);  // joins the next only
  a.Free(60, 5);   // joins the previous only
  CHECK(a.extents() == 1);
  CHECK(a.Allocate(25) == 40);
}

TEST_CASE("extent allocator: random churn matches a byte map", "[store]") {
  constexpr uint64_t kSize = 1 << 16;
  ExtentAllocator a;
  a.Free(0, kSize);
  std::vector<uint8_t> used(kSize, 0);
  std::vector<std::pair<uint64_t, uint64_t>> live;
  std::mt19937_64 rng(17);
  uint64_t free = kSize;
  for (int step = 0; step < 20000; ++step) {
    if (live.empty() || rng() % 3 != 0) {
      const uint64_t len = 1 + rng() % 700;
      const uint64_t off = a.Allocate(len);
      if (off == ExtentAllocator::kNone) continue;
      REQUIRE(off + len <= kSize);
      for (uint64_t i = off; i < off + len; ++i) REQUIRE(used[i]++ == 0);  // never twice
      free -= len;
      live.emplace_back(off, len);
    } else {
      const size_t k = rng() % live.size();
      const auto [off, len] = live[k];
      live[k] = live.back();
      live.pop_back();
      for (uint64_t i = off; i < off + len; ++i) used[i] = 0;
      free += len;
      a.Free(off, len);
    }
    REQUIRE(a.free_bytes() == free);
  }
  // Everything back: one extent again.
  for (const auto& [off, len] : live) a.Free(off, len);
  CHECK(a.extents() == 1);
  CHECK(a.Allocate(kSize) == 0);
}

}  // namespace
}  // namespace strata::store::disk
