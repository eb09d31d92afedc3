// TieredStore: write-back with frequency-aware admission, write-through, promotion on get,
// prefetch, lookup of the longest local prefix.
#include <catch2/catch.hpp>

#include <cstring>
#include <random>
#include <vector>

#include "store/tiered_store.h"
#include "store_test_util.h"

namespace strata::store {
namespace {

using testing::IsTestPayload;
using testing::TempDir;
using testing::TestKey;
using testing::TestPayload;

constexpr uint64_t kMiB = 1 << 20;
constexpr size_t kBlock = 64 * 1024;
const NamespaceId kNs{1, 2};

// min_frequency: the seen-twice filter most cases here exercise; the store's default (0) admits
// every victim.
std::unique_ptr<TieredStore> OpenStore(const std::string& dir, WritePolicy wp,
                                       uint64_t host_bytes = 4 * kMiB, uint32_t min_frequency = 2) {
  TieredStoreOptions o;
  o.disk_admission_min_frequency = min_frequency;
  o.host.capacity_bytes = host_bytes;
  o.host.pool.slab_bytes = 2 * kMiB;
  o.host.hugetlb = false;
  DiskTierOptions d;
  d.path = dir;
  d.capacity_bytes = 64 * kMiB;
  d.extend_bytes = 4 * kMiB;
  o.disk = d;
  o.write_policy = wp;
  auto s = TieredStore::Open(o);
  INFO(s.status().ToString());
  REQUIRE(s.ok());
  return std::move(s).value();
}

Status Put(TieredStore& s, uint64_t i, const BlockKey* parent = nullptr) {
  const BlockKey k = TestKey(i);
  PutOptions po;
  po.parent = parent;
  return s.Put(k, kNs, TestPayload(k, kBlock), po);
}

TEST_CASE("write-back demotes evicted blocks that were seen twice, not one-hit wonders",
          "[store]") {
  TempDir dir;
  auto s = OpenStore(dir.path(), WritePolicy::kWriteBack);  // host: 64 blocks
  std::vector<std::byte> out(kBlock);
  // Blocks 0..39 are read once after their put (seen twice); 1000.. are one-hit wonders.
  for (uint64_t i = 0; i < 40; ++i) {
    REQUIRE(Put(*s, i).ok());
    REQUIRE(s->Get(TestKey(i), out).ok());
  }
  for (uint64_t i = 1000; i < 1200; ++i) REQUIRE(Put(*s, i).ok());
  // Then 100 more blocks seen twice: under a scan-resistant ordering (the default's S3-FIFO
  // expert) one-hit wonders alone never displace reused blocks; these push 0..39 out.
  for (uint64_t i = 2000; i < 2100; ++i) {
    REQUIRE(Put(*s, i).ok());
    REQUIRE(s->Get(TestKey(i), out).ok());
  }
  s->DrainDemotions();  // demotion is asynchronous: wait for the writer before counting
  const auto st = s->Stats();
  REQUIRE(st.demotions >= 40);
  REQUIRE(st.demotions_rejected > 50);
  for (uint64_t i = 0; i < 40; ++i) {
    auto h = s->Get(TestKey(i), out);  // from host or, promoted, from disk
    REQUIRE(h.ok());
    REQUIRE(IsTestPayload(TestKey(i), out.data(), kBlock));
  }
  REQUIRE(s->Stats().promotions > 0);
  // A one-hit wonder that left host is gone from every tier.
  REQUIRE(s->Get(TestKey(1000), out).status().IsNotFound());
  REQUIRE(s->disk()->Find(TestKey(1000)).status().IsNotFound());
}

TEST_CASE("write-back by default demotes every victim, one-hit wonders too", "[store]") {
  REQUIRE(TieredStoreOptions{}.disk_admission_min_frequency == 0);
  TempDir dir;
  auto s = OpenStore(dir.path(), WritePolicy::kWriteBack, 4 * kMiB,
                     TieredStoreOptions{}.disk_admission_min_frequency);  // host: 64 blocks
  for (uint64_t i = 1000; i < 1200; ++i) REQUIRE(Put(*s, i).ok());  // each stored once
  s->DrainDemotions();
  const auto st = s->Stats();
  REQUIRE(st.demotions_rejected == 0);
  REQUIRE(st.demotions >= 136);  // every block host evicted (200 stored, 64 held)
  // The first block, stored once and evicted long ago, is read back from disk.
  std::vector<std::byte> out(kBlock);
  REQUIRE(s->host().Find(TestKey(1000)).status().IsNotFound());
  REQUIRE(s->Get(TestKey(1000), out).ok());
  REQUIRE(IsTestPayload(TestKey(1000), out.data(), kBlock));
}

TEST_CASE("write-back keeps a shared system prompt on disk, not the one-off tails", "[store]") {
  TempDir dir;
  auto s = OpenStore(dir.path(), WritePolicy::kWriteBack, 2 * kMiB);  // host: 32 blocks
  // Two requests share the prompt 0 -> 1 -> 2 and end in tails 10 and 11.
  for (uint64_t tail : {10, 11}) {
    for (uint64_t i = 0; i < 3; ++i) {
      const BlockKey parent = TestKey(i - 1);
      REQUIRE(Put(*s, i, i ? &parent : nullptr).ok());
    }
    const BlockKey parent = TestKey(2);
    REQUIRE(Put(*s, tail, &parent).ok());
  }
  for (uint64_t i = 100; i < 400; ++i) REQUIRE(Put(*s, i).ok());  // 10x the host's capacity
  s->DrainDemotions();  // a prompt block may still be queued for disk (in neither tier's index)
  // The prompt survives (kept in host as an interior, frequently used prefix, or written back to
  // disk when it left); the tails, used once, were evicted and not admitted to disk.
  for (uint64_t i = 0; i < 3; ++i)
    REQUIRE((s->host().Find(TestKey(i)).ok() || s->disk()->Find(TestKey(i)).ok()));
  for (uint64_t tail : {10, 11}) {
    REQUIRE(s->host().Find(TestKey(tail)).status().IsNotFound());
    REQUIRE(s->disk()->Find(TestKey(tail)).status().IsNotFound());
  }
  std::vector<BlockKey> chain = {TestKey(0), TestKey(1), TestKey(2), TestKey(10)};
  REQUIRE(s->Lookup(chain).prefix_blocks == 3);
}

TEST_CASE("write-through puts every block on disk at once", "[store]") {
  TempDir dir;
  auto s = OpenStore(dir.path(), WritePolicy::kWriteThrough);
  for (uint64_t i = 0; i < 10; ++i) REQUIRE(Put(*s, i).ok());
  for (uint64_t i = 0; i < 10; ++i) {
    REQUIRE(s->host().Find(TestKey(i)).ok());
    REQUIRE(s->disk()->Find(TestKey(i)).ok());
  }
}

TEST_CASE("lookup returns the longest local prefix and where each block is", "[store]") {
  TempDir dir;
  auto s = OpenStore(dir.path(), WritePolicy::kWriteBack);
  std::vector<BlockKey> chain;
  for (uint64_t i = 0; i < 6; ++i) chain.push_back(TestKey(i));
  for (uint64_t i = 0; i < 3; ++i) REQUIRE(Put(*s, i).ok());
  // Block 3 only on disk, block 4 missing, block 5 present (but after the gap).
  const auto p3 = TestPayload(chain[3], kBlock);
  REQUIRE(s->disk()->Put(MakeBlockHeader(chain[3], kNs, Codec::kNone, p3), p3).ok());
  REQUIRE(Put(*s, 5).ok());
  const LookupResult r = s->Lookup(chain);
  REQUIRE(r.prefix_blocks == 4);
  REQUIRE(r.where == std::vector<TierKind>{TierKind::kHost, TierKind::kHost, TierKind::kHost,
                                           TierKind::kDisk});
  REQUIRE(s->Lookup(std::span<const BlockKey>(chain).subspan(4)).prefix_blocks == 0);
}

TEST_CASE("prefetch brings disk blocks to host asynchronously", "[store]") {
  TempDir dir;
  auto s = OpenStore(dir.path(), WritePolicy::kWriteBack);
  std::vector<BlockKey> keys;
  for (uint64_t i = 0; i < 20; ++i) {
    keys.push_back(TestKey(i));
    const auto p = TestPayload(keys.back(), kBlock);
    REQUIRE(s->disk()->Put(MakeBlockHeader(keys.back(), kNs, Codec::kNone, p), p).ok());
  }
  keys.push_back(TestKey(999));  // on no tier: handled as not loadable at once
  auto ticket = s->Prefetch(keys);
  REQUIRE(ticket->Wait() == 20);
  REQUIRE(ticket->done());
  std::vector<std::byte> out(kBlock);
  for (uint64_t i = 0; i < 20; ++i) {
    REQUIRE(s->host().Find(TestKey(i)).ok());
    auto view = s->host().Acquire(TestKey(i));
    REQUIRE(view.ok());
    REQUIRE(IsTestPayload(TestKey(i), view->payload().data(), kBlock));
  }
  REQUIRE(s->Stats().prefetched == 20);
  // Nothing left to do: a ticket that is done at once.
  REQUIRE(s->Prefetch(keys)->Wait() == 0);
}

TEST_CASE("a holding prefetch keeps what it brought: a later block never evicts an earlier one",
          "[store]") {
  TempDir dir;
  auto s = OpenStore(dir.path(), WritePolicy::kWriteBack);  // host: 64 blocks
  std::vector<BlockKey> keys;
  for (uint64_t i = 0; i < 80; ++i) {  // more than host holds: the tail finds no room
    keys.push_back(TestKey(i));
    const auto p = TestPayload(keys.back(), kBlock);
    REQUIRE(s->disk()->Put(MakeBlockHeader(keys.back(), kNs, Codec::kNone, p), p).ok());
  }
  {
    auto ticket = s->Prefetch(keys, /*hold=*/true);
    const size_t loaded = ticket->Wait();
    REQUIRE(loaded >= 32);  // the pool's room, less what its slab classes cost
    REQUIRE(loaded + ticket->failed() == keys.size());
    for (size_t i = 0; i < loaded; ++i) {  // the first `loaded` blocks, every one still in host
      auto view = s->host().Acquire(keys[i]);
      REQUIRE(view.ok());
      REQUIRE(IsTestPayload(keys[i], view->payload().data(), kBlock));
    }
    for (size_t i = loaded; i < keys.size(); ++i) REQUIRE_FALSE(s->host().Find(keys[i]).ok());
  }
  // The ticket gone, nothing is held: a plain prefetch of the tail evicts the head.
  std::vector<BlockKey> tail(keys.end() - 16, keys.end());
  REQUIRE(s->Prefetch(tail)->Wait() == 16);
}

TEST_CASE("pin, unpin and erase go to the tier that holds the block", "[store]") {
  TempDir dir;
  auto s = OpenStore(dir.path(), WritePolicy::kWriteThrough);
  REQUIRE(Put(*s, 1).ok());
  REQUIRE(s->Pin(TestKey(1), std::chrono::seconds(10)).ok());
  REQUIRE(s->Erase(TestKey(1)).code() == StatusCode::kUnavailable);
  REQUIRE(s->Unpin(TestKey(1)).ok());
  REQUIRE(s->Erase(TestKey(1)).ok());
  REQUIRE(s->Lookup(std::vector<BlockKey>{TestKey(1)}).prefix_blocks == 0);
  REQUIRE(s->Erase(TestKey(1)).IsNotFound());
  REQUIRE(s->Pin(TestKey(1), std::chrono::seconds(1)).IsNotFound());
}

TEST_CASE("tiered store keeps storing chained prompts through host eviction with write-back",
          "[store]") {
  TempDir dir;
  auto s = OpenStore(dir.path(), WritePolicy::kWriteBack, 8 * kMiB);
  std::mt19937_64 rng(3);
  const size_t sizes[] = {kBlock, 4 * kBlock};
  for (uint64_t n = 0; n < 300; ++n) {
    const size_t size = sizes[rng() % 2];
    // A system prompt of 2 blocks (one of 4 per size), then 1 to 8 blocks of the prompt's own.
    const uint64_t system = rng() % 4;
    std::vector<BlockKey> chain;
    for (size_t i = 0; i < 2 + 1 + rng() % 8; ++i)
      chain.push_back(i < 2 ? TestKey(system * 2 + i, size) : TestKey(n * 16 + i, size + 1));
    INFO("prompt " << n << " of " << chain.size() << " blocks of " << size << " bytes");
    for (size_t i = 0; i < chain.size(); ++i) {
      const auto p = TestPayload(chain[i], size);
      PutOptions po;
      if (i > 0) po.parent = &chain[i - 1];
      if (i % 2) {  // as the daemon stores: reserve, write in place, commit
        auto r = s->host().Reserve(chain[i], size);
        if (r.status().code() == StatusCode::kAlreadyExists) continue;
        REQUIRE(r.ok());
        std::memcpy(s->host().payload_base() + r->offset, p.data(), size);
        REQUIRE(
            s->CommitReserved(*r, MakeBlockHeader(chain[i], kNs, Codec::kNone, p), po, true).ok());
      } else {
        REQUIRE(s->Put(chain[i], kNs, p, po).ok());
      }
    }
  }
  const auto st = s->Stats();
  REQUIRE(st.host.evictions > 500);
  REQUIRE(st.demotions > 0);
  REQUIRE(st.demotion_errors == 0);
  // The shared system prompts are kept: in host, or written back when they left it.
  std::vector<std::byte> out(4 * kBlock);
  for (size_t size : sizes) {
    for (uint64_t i = 0; i < 8; ++i) {
      const BlockKey k = TestKey(i, size);
      auto h = s->Get(k, out);
      INFO("system block " << i << " of " << size << " bytes");
      REQUIRE(h.ok());
      REQUIRE(IsTestPayload(k, out.data(), size));
    }
  }
}

}  // namespace
}  // namespace strata::store
