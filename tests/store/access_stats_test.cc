// AccessStats: every key a lookup asks about is a hit (by tier) or a miss; per-tier misses
// cascade; per-namespace counts are bounded by the cap; served and stored counts add up.
#include "store/access_stats.h"

#include <catch2/catch.hpp>

#include <thread>
#include <vector>

namespace strata::store {
namespace {

NamespaceId Ns(uint64_t i) { return BlockKey{i, ~i}; }

uint64_t Find(const AccessSnapshot& s, const NamespaceId& ns, uint64_t NamespaceCounts::*field) {
  for (const auto& [id, c] : s.namespaces)
    if (id == ns) return c.*field;
  FAIL("namespace not tracked");
  return 0;
}

TEST_CASE("access stats: lookups that match nothing are misses and hits by tier add up", "[store]") {
  AccessStats a;
  // Ten lookups of 4 keys that match nothing.
  for (int i = 0; i < 10; ++i) a.RecordLookup(std::nullopt, {}, 4);
  AccessSnapshot s = a.Snapshot();
  CHECK(s.lookups == 10);
  CHECK(s.empty_lookups == 10);
  CHECK(s.lookup_blocks == 40);
  CHECK(s.hit_blocks == 0);
  CHECK(s.miss_blocks == 40);
  CHECK(s.unattributed.misses == 40);
  CHECK(s.Misses(::strata::Tier::kHost) == 40);
  CHECK(s.Misses(::strata::Tier::kDisk) == 40);

  // 6 keys: 2 in host, 1 on disk, 1 at a peer, 2 missing.
  const std::vector<::strata::Tier> where = {::strata::Tier::kHost, ::strata::Tier::kHost, ::strata::Tier::kDisk, ::strata::Tier::kRemote};
  a.RecordLookup(Ns(1), where, 6);
  s = a.Snapshot();
  CHECK(s.lookups == 11);
  CHECK(s.empty_lookups == 10);
  CHECK(s.lookup_blocks == 46);
  CHECK(s.hit_blocks == 4);
  CHECK(s.miss_blocks == 42);
  CHECK(s.hits[TierRank(::strata::Tier::kHost)] == 2);
  CHECK(s.hits[TierRank(::strata::Tier::kDisk)] == 1);
  CHECK(s.hits[TierRank(::strata::Tier::kRemote)] == 1);
  CHECK(s.Misses(::strata::Tier::kHost) == 44);  // not in device or host
  CHECK(s.Misses(::strata::Tier::kDisk) == 43);
  CHECK(s.Misses(::strata::Tier::kRemote) == s.miss_blocks);
  CHECK(Find(s, Ns(1), &NamespaceCounts::hits) == 4);
  CHECK(Find(s, Ns(1), &NamespaceCounts::misses) == 2);
}

TEST_CASE("access stats: served and stored by tier and namespace", "[store]") {
  AccessStats a;
  a.RecordStored(Ns(1), 100);
  a.RecordStored(Ns(1), 50);
  a.RecordStored(Ns(2), 7);
  a.RecordServed(Ns(1), ::strata::Tier::kHost, 100);
  a.RecordServed(Ns(1), ::strata::Tier::kDisk, 50);
  a.RecordServed(Ns(1), ::strata::Tier::kDisk, 50);
  const AccessSnapshot s = a.Snapshot();
  CHECK(s.served_blocks[TierRank(::strata::Tier::kHost)] == 1);
  CHECK(s.served_bytes[TierRank(::strata::Tier::kHost)] == 100);
  CHECK(s.served_blocks[TierRank(::strata::Tier::kDisk)] == 2);
  CHECK(s.served_bytes[TierRank(::strata::Tier::kDisk)] == 100);
  CHECK(Find(s, Ns(1), &NamespaceCounts::blocks_stored) == 2);
  CHECK(Find(s, Ns(1), &NamespaceCounts::bytes_stored) == 150);
  CHECK(Find(s, Ns(1), &NamespaceCounts::blocks_served) == 3);
  CHECK(Find(s, Ns(2), &NamespaceCounts::bytes_stored) == 7);
}

TEST_CASE("access stats: namespaces past the cap are summed in 'other'", "[store]") {
  AccessStats a(/*max_namespaces=*/4);
  for (uint64_t i = 0; i < 100; ++i) a.RecordStored(Ns(i), 10);
  a.RecordLookup(Ns(0), std::vector<::strata::Tier>{::strata::Tier::kHost}, 1);
  a.RecordLookup(Ns(50), std::vector<::strata::Tier>{::strata::Tier::kHost}, 3);
  const AccessSnapshot s = a.Snapshot();
  CHECK(s.namespaces.size() == 4);
  CHECK(Find(s, Ns(0), &NamespaceCounts::hits) == 1);
  CHECK(s.other.blocks_stored == 96);
  CHECK(s.other.bytes_stored == 960);
  CHECK(s.other.hits == 1);
  CHECK(s.other.misses == 2);
}

TEST_CASE("access stats: concurrent lookups keep the totals exact", "[store]") {
  AccessStats a(8);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      const std::vector<::strata::Tier> where(size_t(t), ::strata::Tier::kHost);
      for (int i = 0; i < 10000; ++i) a.RecordLookup(Ns(uint64_t(i % 16)), where, 5);
    });
  for (auto& th : threads) th.join();
  const AccessSnapshot s = a.Snapshot();
  CHECK(s.lookups == 40000);
  CHECK(s.lookup_blocks == 200000);
  CHECK(s.hit_blocks == 10000 * (0 + 1 + 2 + 3));
  uint64_t ns_hits = s.other.hits, ns_misses = s.other.misses;
  for (const auto& [id, c] : s.namespaces) {
    ns_hits += c.hits;
    ns_misses += c.misses;
  }
  CHECK(ns_hits == s.hit_blocks);
  CHECK(ns_misses == s.miss_blocks);
}

}  // namespace
}  // namespace strata::store
