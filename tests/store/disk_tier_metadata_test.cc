// DiskTier metadata grows with the blocks stored, not with the configured bound: an empty tier
// bounded at 1 TiB holds next to nothing, its policy is rebuilt larger as blocks arrive (every
// block stays reachable and the recency order survives), and a restart sizes it from what it
// recovered.
#include <catch2/catch.hpp>

#include <vector>

#include "store/disk_tier.h"
#include "store_test_util.h"

namespace strata::store {
namespace {

using testing::IsTestPayload;
using testing::TempDir;
using testing::TestHeader;
using testing::TestKey;
using testing::TestPayload;

constexpr uint64_t kKiB = 1 << 10;
constexpr uint64_t kMiB = 1 << 20;

DiskTierOptions Opts(const std::string& path, uint64_t capacity, PolicyKind policy) {
  DiskTierOptions o;
  o.path = path;
  o.capacity_bytes = capacity;
  o.extend_bytes = 4 * kMiB;
  o.direct_io = false;  // tmpfs in CI
  o.policy.kind = policy;
  return o;
}

Status PutBlock(DiskTier& t, uint64_t i, size_t size) {
  const BlockKey k = TestKey(i);
  const auto p = TestPayload(k, size);
  const BlockKey parent = TestKey(i - 1);
  PutOptions po;
  if (i % 8 != 0) po.parent = &parent;  // chains of 8
  return t.Put(TestHeader(k, p), p, po);
}

bool Readable(DiskTier& t, uint64_t i, size_t size) {
  std::vector<std::byte> out(size);
  auto h = t.Get(TestKey(i), out);
  return h.ok() && IsTestPayload(TestKey(i), out.data(), size);
}

TEST_CASE("disk tier: an empty 1 TiB tier holds metadata for blocks stored, not for the bound",
          "[store]") {
  TempDir dir;
  auto t = DiskTier::Open(Opts(dir.path(), uint64_t{1} << 40, PolicyKind::kPrefix));
  REQUIRE(t.ok());
  const TierStats empty = (*t)->Stats();
  INFO("metadata of an empty 1 TiB tier: " << empty.metadata_bytes << " bytes");
  // The old sizing was 16 Mi slots x ~120 bytes = 1.9 GB for this bound.
  CHECK(empty.max_blocks == (uint64_t{1} << 40) / (64 * kKiB));
  CHECK(empty.metadata_bytes < 1 * kMiB);

  const int n = 10000;  // past the first policy sizes (4096, 8192)
  for (int i = 1; i <= n; ++i) REQUIRE(PutBlock(**t, i, 4 * kKiB).ok());
  const TierStats full = (*t)->Stats();
  INFO("metadata with " << n << " blocks: " << full.metadata_bytes << " bytes");
  CHECK(full.blocks == n);
  CHECK(full.evictions == 0);
  CHECK(full.metadata_bytes > empty.metadata_bytes);
  CHECK(full.metadata_bytes < uint64_t{n} * 400);  // a few hundred bytes per block stored
  for (int i = 1; i <= n; i += 97) CHECK(Readable(**t, i, 4 * kKiB));
  CHECK(Readable(**t, n, 4 * kKiB));
}

TEST_CASE("disk tier: growing the policy keeps eviction working and recency order", "[store]") {
  for (PolicyKind policy : {PolicyKind::kLru, PolicyKind::kPrefix}) {
    TempDir dir;
    // 6000 slots of 4 KiB blocks: the policy grows 4096 -> 6000 on the way.
    DiskTierOptions o = Opts(dir.path(), 6000 * 4 * kKiB, policy);
    o.max_blocks = 6000;
    auto t = DiskTier::Open(o);
    REQUIRE(t.ok());
    for (int i = 1; i <= 4000; ++i) REQUIRE(PutBlock(**t, i, 4 * kKiB).ok());
    // Touch the first chains so they are the most recent when the policy is rebuilt.
    for (int i = 1; i <= 400; ++i) REQUIRE(Readable(**t, i, 4 * kKiB));
    for (int i = 4001; i <= 9000; ++i) REQUIRE(PutBlock(**t, i, 4 * kKiB).ok());
    const TierStats st = (*t)->Stats();
    INFO(PolicyKindName(policy) << ": blocks " << st.blocks << ", evictions " << st.evictions);
    CHECK(st.blocks <= 6000);
    CHECK(st.evictions >= 3000);
    CHECK(Readable(**t, 9000, 4 * kKiB));  // the newest block stays
    if (policy == PolicyKind::kLru) {
      // Recency survived the rebuild: the blocks read before it outlived blocks 401..4000.
      int kept_touched = 0, kept_untouched = 0;
      for (int i = 1; i <= 400; ++i) kept_touched += Readable(**t, i, 4 * kKiB);
      for (int i = 401; i <= 800; ++i) kept_untouched += Readable(**t, i, 4 * kKiB);
      INFO("touched kept " << kept_touched << ", untouched kept " << kept_untouched);
      CHECK(kept_touched > kept_untouched);
    }
  }
}

TEST_CASE("disk tier: a restart sizes the metadata from the blocks recovered", "[store]") {
  TempDir dir;
  const DiskTierOptions o = Opts(dir.path(), uint64_t{1} << 40, PolicyKind::kPrefix);
  {
    auto t = DiskTier::Open(o);
    REQUIRE(t.ok());
    for (int i = 1; i <= 5000; ++i) REQUIRE(PutBlock(**t, i, 4 * kKiB).ok());
  }
  auto t = DiskTier::Open(o);
  REQUIRE(t.ok());
  CHECK((*t)->open_info().blocks_recovered == 5000);
  const TierStats st = (*t)->Stats();
  CHECK(st.blocks == 5000);
  CHECK(st.metadata_bytes < 5000 * 400);
  for (int i = 1; i <= 5000; i += 250) CHECK(Readable(**t, i, 4 * kKiB));
  // It keeps growing after the restart.
  for (int i = 5001; i <= 12000; ++i) REQUIRE(PutBlock(**t, i, 4 * kKiB).ok());
  CHECK((*t)->Stats().blocks == 12000);
  CHECK(Readable(**t, 12000, 4 * kKiB));
  CHECK(Readable(**t, 1, 4 * kKiB));
}

}  // namespace
}  // namespace strata::store
