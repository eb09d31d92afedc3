// The device tier's place in TieredStore and the batch copies of BlockPool, on the CPU: a host
// pool stands in for the GPU pool (TieredStore takes any BlockPool as its device tier and reports
// it as TierKind::kDevice), so the bookkeeping - copies of loaded blocks, survival of host
// evictions, promotion back with verification, erase and keys - runs here; the same paths with a
// real DeviceTier are in device_tier_test.cc ([gpu]).
#include <catch2/catch.hpp>

#include <vector>

#include "store/host_tier.h"
#include "store/tiered_store.h"
#include "store_test_util.h"

namespace strata::store {
namespace {

using testing::IsTestPayload;
using testing::TestHeader;
using testing::TestKey;
using testing::TestPayload;

constexpr uint64_t kMiB = 1 << 20;
constexpr size_t kBlock = 64 * 1024;
const NamespaceId kNs{1, 2};

std::unique_ptr<HostTier> OpenPool(uint64_t bytes, bool verify_on_put = true) {
  HostTierOptions o;
  o.capacity_bytes = bytes;
  o.pool.slab_bytes = 2 * kMiB;
  o.pool.verify_on_put = verify_on_put;
  o.hugetlb = false;
  o.populate = HostTierOptions::Populate::kOnDemand;
  o.name = "strata-test-device-standin";
  auto p = HostTier::Open(o);
  INFO(p.status().ToString());
  REQUIRE(p.ok());
  return std::move(p).value();
}

// Host: 4 MiB (64 blocks of 64 KiB), no disk; device: a host pool of `device_bytes`.
std::unique_ptr<TieredStore> OpenStore(uint64_t device_bytes = 8 * kMiB) {
  TieredStoreOptions o;
  o.host.capacity_bytes = 4 * kMiB;
  o.host.pool.slab_bytes = 2 * kMiB;
  o.host.hugetlb = false;
  auto s = TieredStore::Open(o, OpenPool(device_bytes, /*verify_on_put=*/false));
  INFO(s.status().ToString());
  REQUIRE(s.ok());
  return std::move(s).value();
}

std::vector<BlockKey> Keys(uint64_t from, uint64_t to) {
  std::vector<BlockKey> keys;
  for (uint64_t i = from; i < to; ++i) keys.push_back(TestKey(i));
  return keys;
}

TEST_CASE("BlockPool PutBatch and GetBatch move many blocks per call with an outcome per block",
          "[store]") {
  auto pool = OpenPool(8 * kMiB);
  std::vector<std::vector<std::byte>> payloads;
  std::vector<BatchPut> puts;
  for (uint64_t i = 0; i < 10; ++i) payloads.push_back(TestPayload(TestKey(i), kBlock - i * 100));
  for (uint64_t i = 0; i < 10; ++i)
    puts.push_back({TestHeader(TestKey(i), payloads[i]), payloads[i], nullptr});
  REQUIRE(pool->Put(puts[3].header, payloads[3]).ok());  // cached already: skipped
  auto n = pool->PutBatch(puts);
  REQUIRE(n.ok());
  CHECK(*n == 9);
  CHECK(pool->Stats().blocks == 10);

  std::vector<std::vector<std::byte>> outs(12, std::vector<std::byte>(kBlock));
  std::vector<BatchGet> gets;
  for (uint64_t i = 0; i < 10; ++i) gets.push_back({TestKey(i), outs[i], {}, {}});
  gets.push_back({TestKey(99), outs[10], {}, {}});                        // not cached
  gets.push_back({TestKey(0), std::span(outs[11]).first(100), {}, {}});  // too short
  REQUIRE(pool->GetBatch(gets).ok());
  for (uint64_t i = 0; i < 10; ++i) {
    INFO(i);
    REQUIRE(gets[i].status.ok());
    CHECK(gets[i].header.key == TestKey(i));
    CHECK(gets[i].header.payload_length == kBlock - i * 100);
    CHECK(IsTestPayload(TestKey(i), outs[i].data(), kBlock - i * 100));
  }
  CHECK(gets[10].status.IsNotFound());
  CHECK(gets[11].status.code() == StatusCode::kInvalidArgument);
}

TEST_CASE("BlockPool PutBatch refuses a payload that fails its checksum and stops at a full pool",
          "[store]") {
  auto pool = OpenPool(4 * kMiB);  // 64 blocks of 64 KiB
  std::vector<std::vector<std::byte>> payloads;
  std::vector<BatchPut> puts;
  for (uint64_t i = 0; i < 100; ++i) payloads.push_back(TestPayload(TestKey(i), kBlock));
  for (uint64_t i = 0; i < 100; ++i)
    puts.push_back({TestHeader(TestKey(i), payloads[i]), payloads[i], nullptr});

  std::vector<std::byte> bad = payloads[5];
  bad[17] ^= std::byte{1};
  std::vector<BatchPut> with_bad(puts.begin(), puts.begin() + 10);
  with_bad[5].payload = bad;
  CHECK(pool->PutBatch(with_bad).status().IsCorruption());
  CHECK(pool->Stats().blocks == 0);  // nothing of that batch

  // 100 blocks reserved together cannot all fit in 64 slots' worth of payload: the batch
  // publishes what it reserved and says how many.
  auto n = pool->PutBatch(puts);
  REQUIRE(n.ok());
  CHECK(*n == 64);
  CHECK(pool->Stats().blocks == 64);
  for (uint64_t i = 0; i < 64; ++i) CHECK(pool->Find(TestKey(i)).ok());
}

TEST_CASE("the device tier keeps loaded blocks after host evicts them and gives them back "
          "verified",
          "[store]") {
  auto s = OpenStore();
  const std::vector<BlockKey> chain = Keys(0, 10);
  for (const BlockKey& k : chain) REQUIRE(s->Put(k, kNs, TestPayload(k, kBlock)).ok());
  CHECK(s->Lookup(chain).where == std::vector<TierKind>(10, TierKind::kHost));

  s->CopyToDevice(chain);
  s->CopyToDevice(chain);  // queued twice: the second finds them on the device
  s->WaitDeviceCopies();
  StoreStats st = s->Stats();
  CHECK(st.device_copies == 10);
  CHECK(st.device.blocks == 10);
  CHECK(st.device_copy_batches >= 1);
  CHECK(st.device_copy_batches <= 2);
  // Host serves what it holds: Lookup names host while both hold a block.
  CHECK(s->Lookup(chain).where == std::vector<TierKind>(10, TierKind::kHost));

  // Fill host (64 blocks) with others, each read as often as the chain was (a scan of blocks
  // read once would not displace it under a scan-resistant policy such as the default's S3-FIFO
  // ordering): the chain leaves host and stays on the device.
  for (uint64_t i = 100; i < 300; ++i) {
    REQUIRE(s->Put(TestKey(i), kNs, TestPayload(TestKey(i), kBlock)).ok());
    for (int read = 0; read < 3; ++read) REQUIRE(s->host().Acquire(TestKey(i)).ok());
  }
  for (const BlockKey& k : chain) REQUIRE_FALSE(s->host().Find(k).ok());
  LookupResult look = s->Lookup(chain);
  CHECK(look.prefix_blocks == 10);
  CHECK(look.where == std::vector<TierKind>(10, TierKind::kDevice));
  CHECK(s->NamespaceOf(chain[0]) == kNs);

  CHECK(s->PromoteFromDevice(chain) == 10);
  CHECK(s->Stats().device_promotions == 10);
  CHECK(s->Lookup(chain).where == std::vector<TierKind>(10, TierKind::kHost));
  std::vector<std::byte> out(kBlock);
  for (const BlockKey& k : chain) {
    auto block = s->host().Acquire(k);
    REQUIRE(block.ok());
    CHECK(block->header().ns == kNs);
    CHECK(IsTestPayload(k, block->payload().data(), kBlock));
  }
  CHECK(s->PromoteFromDevice(chain) == 0);  // in host already

  // Keys and Erase cover the device: erasing leaves no copy anywhere.
  size_t listed = 0;
  for (const BlockKey& k : s->Keys(kNs)) listed += k == chain[0];
  CHECK(listed == 2);  // host and device
  REQUIRE(s->Erase(chain[0]).ok());
  CHECK_FALSE(s->device()->Find(chain[0]).ok());
  CHECK(s->Lookup(chain).prefix_blocks == 0);
}

TEST_CASE("a device copy that fails verification is dropped, never promoted", "[store]") {
  auto s = OpenStore();
  const std::vector<BlockKey> chain = Keys(0, 4);
  for (const BlockKey& k : chain) REQUIRE(s->Put(k, kNs, TestPayload(k, kBlock)).ok());
  s->CopyToDevice(chain);
  s->WaitDeviceCopies();
  REQUIRE(s->Stats().device.blocks == 4);
  // Fill host with blocks read more often than the chain (a scan of blocks read once does not
  // displace it under the default's S3-FIFO ordering): the chain leaves host, stays on the device.
  for (uint64_t i = 100; i < 300; ++i) {
    REQUIRE(s->Put(TestKey(i), kNs, TestPayload(TestKey(i), kBlock)).ok());
    for (int read = 0; read < 3; ++read) REQUIRE(s->host().Acquire(TestKey(i)).ok());
  }
  for (const BlockKey& k : chain) REQUIRE_FALSE(s->host().Find(k).ok());
  // Damage the device copy of block 1 (the stand-in pool is host memory).
  auto loc = s->device()->Find(chain[1]);
  REQUIRE(loc.ok());
  s->device()->payload_base()[loc->offset + 4000] ^= std::byte{0x40};

  CHECK(s->PromoteFromDevice(chain) == 3);
  const StoreStats st = s->Stats();
  CHECK(st.device_corrupt == 1);
  CHECK(st.device_promotions == 3);
  CHECK_FALSE(s->host().Find(chain[1]).ok());
  CHECK_FALSE(s->device()->Find(chain[1]).ok());  // dropped, not left to fail again
  const LookupResult look = s->Lookup(chain);
  CHECK(look.prefix_blocks == 1);  // block 1 is gone: the chain's prefix ends there
  CHECK(s->host().Find(chain[2]).ok());
}

TEST_CASE("a store without a device tier promotes and copies nothing", "[store]") {
  TieredStoreOptions o;
  o.host.capacity_bytes = 4 * kMiB;
  o.host.pool.slab_bytes = 2 * kMiB;
  o.host.hugetlb = false;
  auto s = TieredStore::Open(o);
  REQUIRE(s.ok());
  const std::vector<BlockKey> chain = Keys(0, 4);
  for (const BlockKey& k : chain) REQUIRE((*s)->Put(k, kNs, TestPayload(k, kBlock)).ok());
  (*s)->CopyToDevice(chain);
  (*s)->WaitDeviceCopies();
  CHECK((*s)->PromoteFromDevice(chain) == 0);
  CHECK((*s)->device() == nullptr);
  CHECK((*s)->Stats().device_copies == 0);
}

}  // namespace
}  // namespace strata::store
