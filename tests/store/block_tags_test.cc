// Block tags (PutOptions::tag): kept with a block through host, demotion to disk, promotion,
// write-through and a restart of the store, handed to on_tier_change with every change, and
// forgotten once no tier holds the block. The KV-event publisher keeps the engine's block hash
// there (lib/events/block_tag.h, docs/kv-events.md "Engine hashes").
#include <catch2/catch.hpp>

#include <mutex>
#include <string>
#include <vector>

#include "store/block_tags.h"
#include "store/tiered_store.h"
#include "store_test_util.h"

namespace strata::store {
namespace {

using testing::TempDir;
using testing::TestKey;
using testing::TestPayload;

constexpr uint64_t kMiB = 1 << 20;
constexpr size_t kBlock = 64 * 1024;
const NamespaceId kNs{3, 4};

struct Change {
  TierKind tier;
  BlockKey key;
  bool added;
  std::string tag;
};

struct Recorder {
  std::mutex mu;
  std::vector<Change> changes;
  std::vector<Change> Of(const BlockKey& key) {
    std::lock_guard lock(mu);
    std::vector<Change> out;
    for (const Change& c : changes)
      if (c.key == key) out.push_back(c);
    return out;
  }
};

std::unique_ptr<TieredStore> OpenStore(const std::string& dir, Recorder* rec,
                                       WritePolicy wp = WritePolicy::kWriteBack) {
  TieredStoreOptions o;
  o.host.capacity_bytes = 4 * kMiB;  // 64 blocks
  o.host.pool.slab_bytes = 2 * kMiB;
  o.host.hugetlb = false;
  DiskTierOptions d;
  d.path = dir;
  d.capacity_bytes = 64 * kMiB;
  d.extend_bytes = 4 * kMiB;
  o.disk = d;
  o.write_policy = wp;
  o.disk_admission_min_frequency = 0;  // every evicted block is demoted
  o.on_tier_change = [rec](TierKind tier, const BlockKey& key, bool added, std::string_view tag) {
    std::lock_guard lock(rec->mu);
    rec->changes.push_back({tier, key, added, std::string(tag)});
  };
  auto s = TieredStore::Open(o);
  INFO(s.status().ToString());
  REQUIRE(s.ok());
  return std::move(s).value();
}

std::string TagOf(uint64_t i) { return "engine-hash-of-block-" + std::to_string(i); }

Status PutTagged(TieredStore& s, uint64_t i) {
  const BlockKey k = TestKey(i);
  const std::string tag = TagOf(i);
  PutOptions po;
  po.tag = tag;
  return s.Put(k, kNs, TestPayload(k, kBlock), po);
}

TEST_CASE("a block's tag survives demotion to disk, promotion and a restart", "[store]") {
  TempDir dir;
  {
    Recorder rec;
    auto s = OpenStore(dir.path(), &rec, WritePolicy::kWriteBack);
    for (uint64_t i = 0; i < 8; ++i) REQUIRE(PutTagged(*s, i).ok());
    // Untagged blocks push the tagged ones out of host; they are demoted.
    for (uint64_t i = 100; i < 400; ++i)
      REQUIRE(s->Put(TestKey(i), kNs, TestPayload(TestKey(i), kBlock)).ok());
    s->DrainDemotions();
    for (uint64_t i = 0; i < 8; ++i) {
      const auto changes = rec.Of(TestKey(i));
      REQUIRE(changes.size() >= 3);
      CHECK(changes[0].tier == TierKind::kHost);
      CHECK(changes[0].added);
      CHECK(changes[1].tier == TierKind::kHost);
      CHECK_FALSE(changes[1].added);
      CHECK(changes[2].tier == TierKind::kDisk);
      CHECK(changes[2].added);
      for (const Change& c : changes) CHECK(c.tag == TagOf(i));
      CHECK(s->TagOf(TestKey(i)) == TagOf(i));
    }
    CHECK(rec.Of(TestKey(150)).front().tag.empty());
    // Promotion from disk keeps it.
    std::vector<std::byte> out(kBlock);
    REQUIRE(s->Get(TestKey(3), out).ok());
    const auto promoted = rec.Of(TestKey(3)).back();
    CHECK(promoted.tier == TierKind::kHost);
    CHECK(promoted.added);
    CHECK(promoted.tag == TagOf(3));
  }
  // After a restart the disk's records give the tags back: removals name them.
  Recorder rec;
  auto s = OpenStore(dir.path(), &rec, WritePolicy::kWriteBack);
  for (uint64_t i = 0; i < 8; ++i) CHECK(s->TagOf(TestKey(i)) == TagOf(i));
  CHECK(s->TagOf(TestKey(150)).empty());
  REQUIRE(s->Erase(TestKey(5)).ok());
  const auto removed = rec.Of(TestKey(5));
  REQUIRE(removed.size() == 1);
  CHECK(removed[0].tier == TierKind::kDisk);
  CHECK_FALSE(removed[0].added);
  CHECK(removed[0].tag == TagOf(5));
  // Gone from every tier: forgotten.
  CHECK(s->TagOf(TestKey(5)).empty());
}

TEST_CASE("write-through writes the tag to disk with the block", "[store]") {
  TempDir dir;
  {
    Recorder rec;
    auto s = OpenStore(dir.path(), &rec, WritePolicy::kWriteThrough);
    REQUIRE(PutTagged(*s, 7).ok());
    const auto changes = rec.Of(TestKey(7));
    REQUIRE(changes.size() == 2);
    CHECK(changes[0].tier == TierKind::kDisk);
    CHECK(changes[1].tier == TierKind::kHost);
    CHECK(changes[0].tag == TagOf(7));
    CHECK(changes[1].tag == TagOf(7));
  }
  Recorder rec;
  auto s = OpenStore(dir.path(), &rec, WritePolicy::kWriteThrough);
  CHECK(s->TagOf(TestKey(7)) == TagOf(7));
}

TEST_CASE("a tag is forgotten when its block leaves the last tier, kept while a demotion carries it",
          "[store]") {
  BlockTags tags;
  const BlockKey k = TestKey(1);
  tags.Set(k, "t");
  CHECK(tags.Changed(TierKind::kHost, k, true) == "t");
  tags.Hold(k);  // host evicts it, a demotion carries it
  CHECK(tags.Changed(TierKind::kHost, k, false) == "t");
  CHECK(tags.Get(k) == "t");
  CHECK(tags.Changed(TierKind::kDisk, k, true) == "t");
  tags.Release(k);
  CHECK(tags.Get(k) == "t");
  CHECK(tags.Changed(TierKind::kDisk, k, false) == "t");
  CHECK(tags.Get(k).empty());
  CHECK(tags.size() == 0);
  // A put that failed leaves nothing behind.
  tags.Set(k, "u");
  tags.DropIfUnheld(k);
  CHECK(tags.size() == 0);
  // Untagged blocks are not tracked.
  tags.Set(k, "");
  CHECK(tags.Changed(TierKind::kHost, k, true).empty());
  CHECK(tags.size() == 0);
}

TEST_CASE("a tag longer than kMaxBlockTagBytes is refused", "[store]") {
  TempDir dir;
  Recorder rec;
  auto s = OpenStore(dir.path(), &rec);
  const std::string tag(kMaxBlockTagBytes + 1, 'x');
  PutOptions po;
  po.tag = tag;
  CHECK(s->Put(TestKey(9), kNs, TestPayload(TestKey(9), kBlock), po).IsInvalidArgument());
  CHECK(s->TagOf(TestKey(9)).empty());
}

}  // namespace
}  // namespace strata::store
