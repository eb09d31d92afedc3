// Concurrent readers and writers on the host tier and the whole hierarchy. Every read is checked
// against the bytes its key determines, so a race that serves a reused or half-written chunk
// fails here; run it under ThreadSanitizer (docs/store.md, "Testing") to catch the races that do
// not corrupt bytes visibly.
#include <catch2/catch.hpp>

#include <atomic>
#include <random>
#include <thread>
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

}  // namespace
}  // namespace strata::store
