// Write-back off the eviction path: a stalled disk never blocks an evicting put (the queue
// refuses at once when full), staged blocks stay readable, and everything staged reaches disk.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <thread>
#include <condition_variable>
#include <mutex>
#include <vector>

#include "store/demotion_queue.h"
#include "store/tiered_store.h"
#include "store_test_util.h"

namespace strata::store {
namespace {

using testing::IsTestPayload;
using testing::TempDir;
using testing::TestHeader;
using testing::TestKey;
using testing::TestPayload;

BlockHeader Header(uint64_t i, size_t len) {
  BlockHeader h{};
  h.key = BlockKey{i, ~i};
  h.payload_length = static_cast<uint32_t>(len);
  return h;
}

// A disk that stalls until Release() (a full or hung device).
class StalledSink {
 public:
  Status Write(const BlockHeader& h, std::span<const std::byte> p) {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return released_; });
    written_.push_back({h.key, std::vector<std::byte>(p.begin(), p.end())});
    return Status::OK();
  }
  void Release() {
    std::lock_guard lock(mu_);
    released_ = true;
    cv_.notify_all();
  }
  std::vector<std::pair<BlockKey, std::vector<std::byte>>> written() {
    std::lock_guard lock(mu_);
    return written_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool released_ = false;
  std::vector<std::pair<BlockKey, std::vector<std::byte>>> written_;
};

TEST_CASE("demotion queue never waits for a stalled disk and refuses when full", "[store]") {
  StalledSink sink;
  auto q = DemotionQueue::Open(1 << 20, [&](const BlockHeader& h, std::span<const std::byte> p) {
    return sink.Write(h, p);
  });
  REQUIRE(q.ok());
  const size_t len = 100 * 1024;  // 25 x 4 KiB in the ring: 10 fit in 1 MiB
  int accepted = 0, refused = 0;
  for (uint64_t i = 0; i < 40; ++i) {
    std::vector<std::byte> payload(len, std::byte(i));
    // The sink is stalled: if Enqueue waited for it, this loop would never end.
    if ((*q)->Enqueue(Header(i, len), payload)) ++accepted; else ++refused;
  }
  REQUIRE(accepted == 10);
  REQUIRE(refused == 30);
  REQUIRE((*q)->Stats().dropped_full == 30);
  // Staged blocks read back while their write is stalled; refused ones are not there.
  BlockHeader h;
  std::vector<std::byte> out;
  REQUIRE((*q)->Read(BlockKey{3, ~uint64_t{3}}, &h, &out));
  REQUIRE(out == std::vector<std::byte>(len, std::byte(3)));
  REQUIRE_FALSE((*q)->Contains(BlockKey{20, ~uint64_t{20}}));
  sink.Release();
  (*q)->Drain();
  const auto written = sink.written();
  REQUIRE(written.size() == 10);
  for (size_t i = 0; i < written.size(); ++i) {
    REQUIRE(written[i].first == BlockKey{i, ~uint64_t{i}});  // in order
    REQUIRE(written[i].second == std::vector<std::byte>(len, std::byte(i)));
  }
  REQUIRE((*q)->Stats().staged_bytes == 0);
  // Room again: the ring wraps and keeps accepting.
  for (uint64_t i = 100; i < 130; ++i) {
    std::vector<std::byte> payload(len, std::byte(i));
    REQUIRE((*q)->Enqueue(Header(i, len), payload));
    if (i % 5 == 4) (*q)->Drain();
  }
  (*q)->Drain();
  REQUIRE(sink.written().size() == 40);
}

TEST_CASE("tiered store: evicted blocks read back while staged and reach disk", "[store]") {
  TempDir dir;
  TieredStoreOptions o;
  o.host.capacity_bytes = 16 << 20;
  o.host.hugetlb = false;
  o.disk_admission_min_frequency = 0;  // admit every block
  DiskTierOptions d;
  d.path = dir.path();
  d.capacity_bytes = 256 << 20;
  o.disk = d;
  auto s = TieredStore::Open(o);
  REQUIRE(s.ok());
  TieredStore& store = **s;
  const size_t len = 256 * 1024;
  const uint64_t n = 200;  // 50 MiB through a 16 MiB host pool
  for (uint64_t i = 0; i < n; ++i) {
    auto payload = TestPayload(TestKey(i), len);
    REQUIRE(store.PutBlock(TestHeader(TestKey(i), payload), payload, {}).ok());
  }
  // Every block is somewhere readable: host, staged, or disk, without waiting for the writer.
  std::vector<std::byte> out(len);
  for (uint64_t i = 0; i < n; ++i) {
    INFO("block " << i);
    auto h = store.Get(TestKey(i), out);
    const auto st = store.Stats();
    if (!h.ok()) REQUIRE(st.demotions_dropped > 0);  // only a full ring may lose a block
    else REQUIRE(IsTestPayload(TestKey(i), out.data(), len));
  }
  store.DrainDemotions();
  const auto st = store.Stats();
  REQUIRE(st.demotion_staged_bytes == 0);
  REQUIRE(st.demotions + st.demotions_dropped + st.demotion_errors >= n - 64);
  REQUIRE(st.demotion_errors == 0);
}

TEST_CASE("demotion queue: WaitForRoom waits for the writer, a bounded time", "[store]") {
  using namespace std::chrono_literals;
  StalledSink sink;
  auto q = DemotionQueue::Open(1 << 20, [&](const BlockHeader& h, std::span<const std::byte> p) {
    return sink.Write(h, p);
  });
  REQUIRE(q.ok());
  const size_t len = 100 * 1024;
  REQUIRE((*q)->WaitForRoom(len, 0us));  // room now: no wait
  for (uint64_t i = 0; i < 10; ++i) {
    std::vector<std::byte> payload(len, std::byte(i));
    REQUIRE((*q)->Enqueue(Header(i, len), payload));
  }
  // Full and the disk stalled: the wait runs out after its bound, counted.
  auto t0 = std::chrono::steady_clock::now();
  REQUIRE_FALSE((*q)->WaitForRoom(len, 30ms));
  REQUIRE(std::chrono::steady_clock::now() - t0 >= 30ms);
  REQUIRE_FALSE((*q)->WaitForRoom(len, 0us));  // 0: never waits
  REQUIRE_FALSE((*q)->WaitForRoom(2 << 20, 10s));  // larger than the ring: refused at once
  REQUIRE((*q)->Stats().waits == 1);
  REQUIRE((*q)->Stats().wait_timeouts == 1);
  // The disk comes back while a put waits: the wait ends as the writer frees room.
  std::thread release([&] {
    std::this_thread::sleep_for(50ms);
    sink.Release();
  });
  t0 = std::chrono::steady_clock::now();
  REQUIRE((*q)->WaitForRoom(len, 30s));
  REQUIRE(std::chrono::steady_clock::now() - t0 < 20s);
  release.join();
  REQUIRE((*q)->Stats().waits == 2);
  REQUIRE((*q)->Stats().wait_timeouts == 1);
  std::vector<std::byte> payload(len, std::byte(99));
  REQUIRE((*q)->Enqueue(Header(99, len), payload));
  (*q)->Drain();
  REQUIRE(sink.written().size() == 11);
}

TEST_CASE("block pool: before_evict runs once per evicting put, never without eviction",
          "[store]") {
  HostTierOptions o;
  o.capacity_bytes = 16 << 20;
  o.hugetlb = false;
  o.pool.max_blocks = 64;
  std::atomic<int> calls{0};
  std::atomic<uint64_t> last{0};
  o.pool.before_evict = [&](uint64_t length) {
    ++calls;
    last = length;
  };
  auto host = HostTier::Open(o);
  REQUIRE(host.ok());
  const size_t len = 256 * 1024;  // 64 fill the pool
  for (uint64_t i = 0; i < 64; ++i) {
    auto payload = TestPayload(TestKey(i), len);
    REQUIRE((*host)->Put(TestHeader(TestKey(i), payload), payload).ok());
  }
  REQUIRE(calls == 0);
  REQUIRE((*host)->Stats().evictions == 0);
  for (uint64_t i = 64; i < 74; ++i) {
    auto payload = TestPayload(TestKey(i), len);
    REQUIRE((*host)->Put(TestHeader(TestKey(i), payload), payload).ok());
  }
  REQUIRE((*host)->Stats().evictions == 10);
  REQUIRE(calls == 10);
  REQUIRE(last == len);
  // TryReserve never evicts, so it never calls the hook either.
  REQUIRE_FALSE((*host)->TryReserve(TestKey(1000), len).ok());
  REQUIRE(calls == 10);
}

TEST_CASE("tiered store: with demotion_wait an evicting put waits for staging room and no "
          "admitted victim is dropped", "[store]") {
  TempDir dir;
  TieredStoreOptions o;
  o.host.capacity_bytes = 16 << 20;
  o.host.hugetlb = false;
  o.disk_admission_min_frequency = 0;  // admit every block
  o.demotion_queue_bytes = 1 << 20;    // four blocks: the disk cannot keep up without waits
  o.demotion_wait = std::chrono::seconds(30);
  DiskTierOptions d;
  d.path = dir.path();
  d.capacity_bytes = 256 << 20;
  o.disk = d;
  auto s = TieredStore::Open(o);
  REQUIRE(s.ok());
  TieredStore& store = **s;
  const size_t len = 256 * 1024;
  const uint64_t n = 200;
  for (uint64_t i = 0; i < n; ++i) {
    auto payload = TestPayload(TestKey(i), len);
    REQUIRE(store.PutBlock(TestHeader(TestKey(i), payload), payload, {}).ok());
  }
  store.DrainDemotions();
  const auto st = store.Stats();
  REQUIRE(st.host.evictions > 100);
  REQUIRE(st.demotions_dropped == 0);
  REQUIRE(st.demotion_wait_timeouts == 0);
  REQUIRE(st.demotions == st.host.evictions);
  std::vector<std::byte> out(len);
  for (uint64_t i = 0; i < n; ++i) {
    INFO("block " << i);
    auto h = store.Get(TestKey(i), out);
    REQUIRE(h.ok());
    REQUIRE(IsTestPayload(TestKey(i), out.data(), len));
  }
}

}  // namespace
}  // namespace strata::store
