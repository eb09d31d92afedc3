// Concurrent readers and writers on the host tier and the whole hierarchy. Every read is checked
// against the bytes its key determines, so a race that serves a reused or half-written chunk
// fails here; run it under ThreadSanitizer (docs/store.md, "Testing") to catch the races that do
// not corrupt bytes visibly.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "store/tiered_store.h"
#include "store_test_util.h"

namespace strata::store {
namespace {

using testing::IsTestPayload;
using testing::TempDir;
using testing::TestHeader;
using testing::TestKey;
using testing::TestPayload;

constexpr uint64_t kMiB = 1 << 20;
const NamespaceId kNs{3, 4};

size_t SizeOf(uint64_t i) { return 4096 + (i * 2654435761u) % (96 * 1024); }

TEST_CASE("concurrent put/get/pin/erase/lookup/prefetch on the tiered store", "[store][stress]") {
  TempDir dir;
  TieredStoreOptions o;
  o.host.capacity_bytes = 8 * kMiB;
  o.host.pool.slab_bytes = 2 * kMiB;
  o.host.hugetlb = false;
  DiskTierOptions d;
  d.path = dir.path();
  d.capacity_bytes = 24 * kMiB;
  d.extend_bytes = 4 * kMiB;
  o.disk = d;
  o.prefetch_threads = 2;
  auto store = TieredStore::Open(o);
  REQUIRE(store.ok());
  TieredStore& s = **store;

  constexpr int kThreads = 4;
  constexpr uint64_t kKeys = 600;  // ~30 MiB of distinct blocks: host and disk both evict
  const int ops = 3000;
  std::atomic<uint64_t> bad{0}, hits{0}, errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(t * 7 + 1);
      std::vector<std::byte> out(128 * 1024);
      for (int op = 0; op < ops; ++op) {
        const uint64_t i = rng() % kKeys;
        const BlockKey k = TestKey(i);
        const int what = static_cast<int>(rng() % 100);
        if (what < 35) {
          const BlockKey parent = TestKey(i - 1);
          PutOptions po;
          if (i % 8) po.parent = &parent;
          Status st = s.Put(k, kNs, TestPayload(k, SizeOf(i)), po);
          if (!st.ok() && !st.IsNoSpace()) errors.fetch_add(1);
        } else if (what < 75) {
          auto h = s.Get(k, out);
          if (h.ok()) {
            hits.fetch_add(1);
            if (h->payload_length != SizeOf(i) || !IsTestPayload(k, out.data(), SizeOf(i)))
              bad.fetch_add(1);
          } else if (!h.status().IsNotFound()) {
            errors.fetch_add(1);
          }
        } else if (what < 85) {
          auto view = s.host().Acquire(k);
          if (view.ok()) {
            if (!IsTestPayload(k, view->payload().data(), view->payload().size())) bad.fetch_add(1);
          }
        } else if (what < 90) {
          if (s.Pin(k, std::chrono::milliseconds(5)).ok()) (void)s.Unpin(k);
        } else if (what < 94) {
          Status st = s.Erase(k);
          if (!st.ok() && !st.IsNotFound() && st.code() != StatusCode::kUnavailable)
            errors.fetch_add(1);
        } else if (what < 97) {
          std::vector<BlockKey> chain;
          for (uint64_t j = i & ~uint64_t{7}; j <= i; ++j) chain.push_back(TestKey(j));
          (void)s.Lookup(chain);
        } else {
          std::vector<BlockKey> keys = {k, TestKey((i + 1) % kKeys)};
          if (rng() % 2) s.Prefetch(keys)->Wait(); else (void)s.Prefetch(keys);
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  const auto st = s.Stats();
  INFO("hits " << hits << ", host evictions " << st.host.evictions << ", demotions "
               << st.demotions << ", promotions " << st.promotions << ", prefetched "
               << st.prefetched);
  REQUIRE(bad == 0);
  REQUIRE(errors == 0);
  REQUIRE(hits > 0);
  REQUIRE(st.host.evictions > 0);
  // The pool's accounting is consistent after the storm.
  REQUIRE(st.host.payload_bytes <= st.host.capacity_bytes);
  REQUIRE(st.disk.payload_bytes <= d.capacity_bytes);
}

// Steady-state eviction from many threads: each thread stores prompts (chains of up to 4 blocks,
// one size per prompt, sizes mixed across prompts) two-phase as the daemon does (reserve all,
// write in place, commit with the chain parent), reads blocks back and pins some. At most 4 x (4
// reservations + 1 reader or pin) = 20 blocks are busy at once, fewer than the pool's 32 slabs, so
// every reservation must find room by evicting: NoSpace here is a bug.
TEST_CASE("chained prompts of mixed sizes stored two-phase from many threads always find room",
          "[store][stress]") {
  for (PolicyKind kind : {PolicyKind::kPrefix, PolicyKind::kLru}) {
    INFO("policy " << PolicyKindName(kind));
    HostTierOptions o;
    o.capacity_bytes = 64 * kMiB;
    o.pool.slab_bytes = 2 * kMiB;
    o.pool.max_blocks = 8192;
    o.pool.policy.kind = kind;
    o.hugetlb = false;
    auto opened = HostTier::Open(o);
    REQUIRE(opened.ok());
    HostTier& t = **opened;
    constexpr int kThreads = 4;
    const size_t sizes[] = {4096, 12288, 24576, 65536, 300000};  // ~75 KiB a block on average
    std::atomic<uint64_t> failed{0}, bad{0}, stored{0};
    std::mutex first_failure_mu;
    std::string first_failure;
    std::vector<std::thread> threads;
    for (int th = 0; th < kThreads; ++th) {
      threads.emplace_back([&, th] {
        std::mt19937_64 rng(th * 31 + static_cast<int>(kind));
        for (uint64_t n = 0; n < 300; ++n) {
          const size_t size = sizes[rng() % 5];
          std::vector<BlockKey> chain;
          const uint64_t system = rng() % 4;  // shared by every thread's prompts of this size
          for (size_t i = 0; i < 1 + rng() % 4; ++i)
            chain.push_back(i == 0 ? TestKey(system, size) : TestKey(n * 8 + i, th * 1000 + size));
          std::vector<WriteReservation> made;
          std::vector<std::vector<std::byte>> payloads;
          bool ok = true;
          for (const BlockKey& k : chain) {
            auto r = t.Reserve(k, size);
            if (r.status().code() == StatusCode::kAlreadyExists) continue;
            if (!r.ok()) {
              ok = false;
              if (failed.fetch_add(1) == 0) {  // Catch's macros are not for other threads
                std::lock_guard lock(first_failure_mu);
                first_failure = r.status().ToString();
              }
              break;
            }
            payloads.push_back(TestPayload(k, size));
            std::memcpy(t.payload_base() + r->offset, payloads.back().data(), size);
            made.push_back(*r);
          }
          for (size_t j = 0; j < made.size(); ++j) {
            const WriteReservation& r = made[j];
            if (!ok) {
              t.Abort(r);
              continue;
            }
            const auto it = std::find(chain.begin(), chain.end(), r.key);
            PutOptions po;
            if (it != chain.begin()) po.parent = &*(it - 1);
            if (!t.Commit(r, TestHeader(r.key, payloads[j]), po, true).ok()) bad.fetch_add(1);
            stored.fetch_add(1);
          }
          const BlockKey& probe = chain[rng() % chain.size()];
          if (rng() % 4 == 0) {
            if (t.Pin(probe, std::chrono::milliseconds(50)).ok()) (void)t.Unpin(probe);
          } else if (auto view = t.Acquire(probe); view.ok()) {
            if (!IsTestPayload(probe, view->payload().data(), view->payload().size()))
              bad.fetch_add(1);
          }
        }
      });
    }
    for (auto& th : threads) th.join();
    const auto st = t.Stats();
    INFO("stored " << stored << ", evictions " << st.evictions
                   << ", first failure: " << first_failure);
    REQUIRE(failed == 0);
    REQUIRE(bad == 0);
    REQUIRE(st.evictions > 0);
    REQUIRE(st.payload_bytes <= st.capacity_bytes);
    REQUIRE(t.Keys(std::nullopt).size() == st.blocks);
  }
}

}  // namespace
}  // namespace strata::store
