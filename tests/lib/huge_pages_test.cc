// Engine KV in huge pages (lib/client/huge_pages.h, ClientOptions::kv_huge_pages): the advice
// covers exactly the 2 MiB-aligned part of the merged ranges, a kernel that refuses it never fails
// a registration, RegisterKvCache with kCollapse puts an engine's already-zeroed KV into huge pages
// (AnonHugePages of /proc/self/smaps_rollup), and what is stored from it loads back bit for bit.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "lib/client/huge_page_collapser.h"
#include "lib/client/huge_pages.h"
#include "strata/client.h"
#include "strata/key_chain.h"
#include "tests/lib/engine_kv_util.h"
#include "tests/lib/client_test_util.h"
#include "tests/lib/paged_test_util.h"
#include "tests/skip.h"

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif

namespace strata {
namespace {

using namespace paged_test;  // NOLINT: the shared fixtures of the paged tests
using engine_kv::EngineKv;
using engine_kv::StorePaths;
using engine_kv::StorePathsOf;

constexpr uint64_t kMiB = uint64_t{1} << 20;

using testing::SkipTest;

// The one fake madvise of these tests: it records every call (from any thread) and answers with
// the errno set for its advice (0: success). With `hold` set, an MADV_COLLAPSE waits inside the
// call until Release(), so a test can act while a collapse is in flight. One instance at a time.
class FakeMadvise {
 public:
  struct Call {
    uintptr_t at;
    size_t length;
    int advice;
  };
  int refuse_hugepage = 0, refuse_collapse = 0;  // errno to fail with, 0: succeed

  FakeMadvise() { current = this; }
  ~FakeMadvise() {
    Release();
    current = nullptr;
  }
  static int Fn(void* p, size_t n, int advice) { return current->Call_(p, n, advice); }

  std::vector<Call> Calls() {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_;
  }
  size_t Count(int advice) {
    size_t n = 0;
    for (const Call& c : Calls()) n += c.advice == advice;
    return n;
  }
  void Clear() {
    std::lock_guard<std::mutex> lock(mu_);
    calls_.clear();
  }
  void Hold() {
    std::lock_guard<std::mutex> lock(mu_);
    hold_ = true;
  }
  // Returns once an MADV_COLLAPSE is waiting inside the call (REQUIRES: Hold()).
  void WaitHeld() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return held_ > 0; });
  }
  void Release() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      hold_ = false;
    }
    cv_.notify_all();
  }

 private:
  int Call_(void* p, size_t n, int advice) {
    std::unique_lock<std::mutex> lock(mu_);
    calls_.push_back({reinterpret_cast<uintptr_t>(p), n, advice});
    if (advice == MADV_COLLAPSE && hold_) {
      ++held_;
      cv_.notify_all();
      cv_.wait(lock, [&] { return !hold_; });
      --held_;
    }
    const int err = advice == MADV_HUGEPAGE ? refuse_hugepage : refuse_collapse;
    if (err == 0) return 0;
    errno = err;
    return -1;
  }
  static inline FakeMadvise* current = nullptr;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Call> calls_;  // GUARDED_BY(mu_)
  bool hold_ = false;        // GUARDED_BY(mu_)
  int held_ = 0;             // GUARDED_BY(mu_)
};

std::byte* At(uintptr_t a) { return reinterpret_cast<std::byte*>(a); }

const uintptr_t kBase = uintptr_t{1} << 40;  // never dereferenced: the fake madvise records
// Three layers back to back from 1 MiB past a boundary (one tensor of every layer), one apart.
const MemoryRange kRanges[] = {{At(kBase + 1 * kMiB), 3 * kMiB},
                               {At(kBase + 4 * kMiB), 3 * kMiB},
                               {At(kBase + 7 * kMiB), 40 * kMiB},
                               {At(kBase + 100 * kMiB + 4096), kMiB}};  // no whole huge page

// Waits for the collapser's thread to finish `job` (the fake answers at once unless held).
void WaitFinished(const CollapseJob& job) {
  while (!job.finished()) std::this_thread::yield();
}

TEST_CASE("huge pages: the aligned part of merged ranges is advised, refusals are reported",
          "[lib]") {
  REQUIRE(HugePageBytes() == 2 * kMiB);  // x86-64 and arm64 with 4 KiB base pages
  FakeMadvise fake;
  HugePageAdvice a = AdviseHugePages(kRanges, &FakeMadvise::Fn);
  const auto calls = fake.Calls();
  REQUIRE(calls.size() == 1);  // advice only: the collapse is the collapser's
  CHECK(calls[0].at == kBase + 2 * kMiB);
  CHECK(calls[0].length == 44 * kMiB);  // [2, 46) MiB of the merged [1, 47) MiB
  CHECK(calls[0].advice == MADV_HUGEPAGE);
  CHECK(a.aligned_bytes == 44 * kMiB);
  CHECK(a.advised_bytes == 44 * kMiB);
  REQUIRE(a.advised.size() == 1);
  CHECK(reinterpret_cast<uintptr_t>(a.advised[0].begin) == kBase + 2 * kMiB);
  CHECK(a.advised[0].bytes == 44 * kMiB);

  SECTION("MADV_HUGEPAGE refused: nothing advised, the errno reported") {
    fake.Clear();
    fake.refuse_hugepage = EINVAL;
    a = AdviseHugePages(kRanges, &FakeMadvise::Fn);
    CHECK(fake.Calls().size() == 1);
    CHECK(a.advised_bytes == 0);
    CHECK(a.advised.empty());
    CHECK(a.advise_errno == EINVAL);
  }
}

TEST_CASE("huge pages: the collapse runs on the collapser's thread, 32 MiB at a time", "[lib]") {
  FakeMadvise fake;
  const HugePageAdvice advice = AdviseHugePages(kRanges, &FakeMadvise::Fn);
  fake.Clear();
  HugePageCollapser collapser(&FakeMadvise::Fn);

  SECTION("Start returns while the first piece is still being collapsed") {
    fake.Hold();
    auto job = collapser.Start(advice.advised);  // returns: the caller is not the one collapsing
    fake.WaitHeld();
    CHECK(!job->finished());
    CHECK(job->collapsed_bytes() == 0);
    fake.Release();
    WaitFinished(*job);
    const auto calls = fake.Calls();
    REQUIRE(calls.size() == 2);
    CHECK((calls[0].advice == MADV_COLLAPSE && calls[0].at == kBase + 2 * kMiB &&
           calls[0].length == 32 * kMiB));
    CHECK((calls[1].at == kBase + 34 * kMiB && calls[1].length == 12 * kMiB));
    CHECK(job->collapsed_bytes() == 44 * kMiB);
    CHECK(job->total_bytes() == 44 * kMiB);
    CHECK(job->collapse_errno() == 0);
  }
  SECTION("MADV_COLLAPSE busy (EAGAIN): the next piece is still tried") {
    fake.refuse_collapse = EAGAIN;
    auto job = collapser.Start(advice.advised);
    WaitFinished(*job);
    CHECK(fake.Count(MADV_COLLAPSE) == 2);
    CHECK(job->collapsed_bytes() == 0);
    CHECK(job->collapse_errno() == EAGAIN);
  }
  SECTION("MADV_COLLAPSE refused otherwise (ENOMEM, EINVAL): no further piece") {
    fake.refuse_collapse = ENOMEM;
    auto job = collapser.Start(advice.advised);
    WaitFinished(*job);
    CHECK(fake.Count(MADV_COLLAPSE) == 1);
    CHECK(job->collapse_errno() == ENOMEM);
  }
  SECTION("Cancel waits for the piece in flight, and no piece follows it") {
    fake.Hold();
    auto job = collapser.Start(advice.advised);
    auto queued = collapser.Start(advice.advised);  // behind it, never started
    fake.WaitHeld();
    std::thread cancel([&] {
      collapser.Cancel(queued);  // not started: returns at once, and never starts
      collapser.Cancel(job);     // waits for its piece in flight
    });
    while (!job->cancelled()) std::this_thread::yield();
    CHECK(!job->finished());  // its piece is still in the (held) call
    fake.Release();
    cancel.join();
    CHECK(job->finished());
    CHECK(queued->finished());
    CHECK(fake.Count(MADV_COLLAPSE) == 1);  // the piece in flight, nothing after the Cancel
    CHECK(job->collapsed_bytes() == 32 * kMiB);
    CHECK(queued->collapsed_bytes() == 0);
  }
  SECTION("Cancel of a finished job returns at once and changes nothing") {
    auto job = collapser.Start(advice.advised);
    WaitFinished(*job);
    collapser.Cancel(job);
    CHECK(job->collapsed_bytes() == 44 * kMiB);
  }
}

TEST_CASE("huge pages: a collapser destroyed mid-collapse stops after the piece in flight",
          "[lib]") {
  FakeMadvise fake;
  const HugePageAdvice advice = AdviseHugePages(kRanges, &FakeMadvise::Fn);
  fake.Clear();
  std::shared_ptr<const CollapseJob> job, queued;
  std::thread release;
  {
    HugePageCollapser collapser(&FakeMadvise::Fn);
    fake.Hold();
    job = collapser.Start(advice.advised);
    queued = collapser.Start(advice.advised);
    fake.WaitHeld();
    release = std::thread([&] {
      while (!job->cancelled()) std::this_thread::yield();  // the destructor has begun
      fake.Release();
    });
  }  // ~HugePageCollapser: cancels both, waits for the piece in flight, joins its thread
  release.join();
  CHECK(job->finished());
  CHECK(queued->finished());
  CHECK(fake.Count(MADV_COLLAPSE) == 1);
}

TEST_CASE("huge pages: a range that is not mapped is reported, not fatal", "[lib]") {
  void* m = ::mmap(nullptr, 8 * kMiB, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  REQUIRE(m != MAP_FAILED);
  REQUIRE(::munmap(m, 8 * kMiB) == 0);  // a hole the kernel answers ENOMEM for
  const MemoryRange r{static_cast<std::byte*>(m), 8 * kMiB};
  const HugePageAdvice a = AdviseHugePages({&r, 1});
  CHECK(a.advised_bytes == 0);
  CHECK(a.advise_errno == ENOMEM);
}

bool ThpNever() {
  std::ifstream f("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  return s.empty() || s.find("[never]") != std::string::npos;
}

// Stores 8 pages of registered cache `id` (over `kv`) and loads them into 8 others; every chunk
// comes back bit for bit. REQUIREs: a case may Skip after it.
void StoreAndLoadBack(Client& client, const EngineKv& kv, const Namespace& ns, KvCacheId id) {
  REQUIRE(client.Clear(std::nullopt).ok());
  const std::vector<BlockKey> keys = ComputeBlockKeys(ns, Tokens(8, 5));
  const std::vector<int32_t> from = {3, 250, 17, 100, 64, 201, 9, 128};
  const std::vector<int32_t> to = {4, 5, 6, 7, 8, 10, 11, 12};
  auto stored = client.StorePaged(id, keys, from).Wait();
  INFO(stored.status().ToString());
  REQUIRE(stored.ok());
  REQUIRE(*stored == 8 * EngineKv::kHeads);
  auto loaded = client.LoadPaged(id, keys, to).Wait();
  REQUIRE(loaded.ok());
  REQUIRE(*loaded == 8);
  for (uint32_t l = 0; l < kLayers; ++l)
    for (uint32_t p = 0; p < 2; ++p)
      for (size_t i = 0; i < from.size(); ++i)
        REQUIRE(std::memcmp(kv.Chunk(l, p, to[i]), kv.Chunk(l, p, from[i]), EngineKv::kChunk) == 0);
}

void StoreAndLoadBack(Client& client, const EngineKv& kv, const Namespace& ns) {
  auto id = client.RegisterKvCache(ns, kv.Spec());
  INFO(id.status().ToString());
  REQUIRE(id.ok());  // whatever the kernel made of the advice
  StoreAndLoadBack(client, kv, ns, *id);
  CHECK(client.UnregisterKvCache(*id).ok());
}

// Waits until AnonHugePages of this process reaches `bytes` (the background collapse is done);
// false after 60 s (a machine without free huge pages: the collapse cannot be required).
bool WaitAnonHugePages(uint64_t bytes) {
  for (int i = 0; i < 6000 && AnonHugePageBytes() < bytes; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  return AnonHugePageBytes() >= bytes;
}

TEST_CASE("huge pages: RegisterKvCache collapses an engine's zeroed KV in the background, stores "
          "load bit for bit during and after it",
          "[lib][integration]") {
  const Namespace ns = MakeNamespace(
      {KvLayout::kVllmFlashAttn, EngineKv::kHeads, KvDtype::kBFloat16, Codec::kNone}, "huge");
  Daemon daemon("strata-huge-pages-test");
  for (const auto store_path : {ClientOptions::StorePath::kAuto,
                                ClientOptions::StorePath::kCrossMemory,
                                ClientOptions::StorePath::kStaging}) {
    ClientOptions options;
    options.store_path = store_path;
    options.kv_huge_pages = ClientOptions::KvHugePages::kCollapse;
    INFO("store path " << static_cast<int>(store_path));
    auto client = ConnectTo(&daemon, options);
    EngineKv kv;
    const uint64_t before = AnonHugePageBytes();
    auto id = client->RegisterKvCache(ns, kv.Spec());  // returns before the collapse is done
    REQUIRE(id.ok());
    StoreAndLoadBack(*client, kv, ns, *id);  // while the collapser may still be at work
    const uint64_t cache_bytes = uint64_t{kLayers} * EngineKv::kLayerBytes;
    if (ThpNever()) {
      WARN("transparent huge pages are `never` here: the advice is refused, the store works");
    } else if (!WaitAnonHugePages(before + cache_bytes * 3 / 4)) {
      // MADV_COLLAPSE finds no free huge page on a machine whose memory is fragmented: the
      // registration must still work (checked above), the collapse cannot be required.
      WARN("MADV_COLLAPSE gave no huge page here (AnonHugePages " << before << " -> "
                                                                   << AnonHugePageBytes()
                                                                   << " bytes)");
    }
    StoreAndLoadBack(*client, kv, ns, *id);  // from collapsed pages (auto: cross-memory)
    CHECK(client->UnregisterKvCache(*id).ok());
  }
}

// Blocks (head shards) the daemon published so far by each path (Stats `store_paths`).
// Under `auto` a paged store follows the collapse: through staging while the cache is in 4 KiB
// pages, gathered by the daemon out of the engine's pages (cross-memory) once the client's
// collapser has put three quarters of it into huge pages. The daemon's count of blocks per path
// says which path each store took.
TEST_CASE("huge pages: under auto a paged store switches from staging to cross-memory once the "
          "collapser is done, as the daemon's store_paths counts",
          "[lib][integration]") {
  const Namespace ns = MakeNamespace(
      {KvLayout::kVllmFlashAttn, EngineKv::kHeads, KvDtype::kBFloat16, Codec::kNone}, "switch");
  Daemon daemon("strata-huge-switch-test");
  {
    ClientOptions forced;
    forced.store_path = ClientOptions::StorePath::kCrossMemory;
    if (!Client::Connect(daemon.serve->socket(), forced).ok())
      SkipTest("the daemon cannot read this process's memory here: every store goes through staging");
  }
  ClientOptions options;
  options.kv_huge_pages = ClientOptions::KvHugePages::kCollapse;
  options.store_path = ClientOptions::StorePath::kAuto;
  auto client = ConnectTo(&daemon, options);
  // Caches registered first are collapsed first (one job after another): with these 288 MiB
  // ahead of it (about 0.1 s of copying at the least), the cache under test is still in 4 KiB
  // pages during its first store, which takes a millisecond.
  std::vector<std::unique_ptr<EngineKv>> ahead;
  for (int i = 0; i < 24; ++i) ahead.push_back(std::make_unique<EngineKv>());
  EngineKv kv;
  std::vector<KvCacheId> ahead_ids;
  for (const auto& a : ahead) {
    auto id = client->RegisterKvCache(ns, a->Spec());
    REQUIRE(id.ok());
    ahead_ids.push_back(*id);
  }
  auto id = client->RegisterKvCache(ns, kv.Spec());
  REQUIRE(id.ok());
  const uint64_t shards = 8 * EngineKv::kHeads;  // 8 blocks stored each time

  StorePaths before = StorePathsOf(*client);
  const std::vector<BlockKey> keys = ComputeBlockKeys(ns, Tokens(8, 5));
  const std::vector<int32_t> pages = {3, 250, 17, 100, 64, 201, 9, 128};
  auto stored = client->StorePaged(*id, keys, pages).Wait();
  auto state = client->HugePagesOf(*id);
  REQUIRE(stored.ok());
  REQUIRE(*stored == shards);
  REQUIRE(state.ok());
  StorePaths after = StorePathsOf(*client);
  // The count only grows: not in huge pages now, not during the store either.
  REQUIRE_FALSE(state->in_huge_pages);
  REQUIRE(after.staging - before.staging == shards);
  REQUIRE(after.gather - before.gather == 0);

  for (int i = 0; i < 6000 && client->HugePagesOf(*id)->collapsing; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  state = client->HugePagesOf(*id);
  REQUIRE(state.ok());
  REQUIRE_FALSE(state->collapsing);
  REQUIRE(state->cache_bytes == uint64_t{kLayers} * EngineKv::kLayerBytes);
  before = StorePathsOf(*client);
  StoreAndLoadBack(*client, kv, ns, *id);
  after = StorePathsOf(*client);
  REQUIRE(after.cross_memory - before.cross_memory == 0);  // whole-block stores: none here
  if (!state->in_huge_pages) {
    // No free huge page (or THP `never`): the cache stays in 4 KiB pages and so does the path;
    // the switch itself cannot be checked here.
    REQUIRE(after.staging - before.staging == shards);
    SkipTest("MADV_COLLAPSE put " + std::to_string(state->collapsed_bytes) + " of " +
         std::to_string(state->cache_bytes) + " bytes into huge pages here: no switch to check");
  }
  CHECK(state->collapsed_bytes * 4 >= state->cache_bytes * 3);
  CHECK(after.gather - before.gather == shards);
  CHECK(after.staging - before.staging == 0);
  CHECK(client->UnregisterKvCache(*id).ok());
  CHECK(client->HugePagesOf(*id).status().IsNotFound());
  for (KvCacheId a : ahead_ids) CHECK(client->UnregisterKvCache(a).ok());
}

TEST_CASE("huge pages: a cache unregistered while it is being collapsed can be freed at once",
          "[lib][integration]") {
  // UnregisterKvCache cancels the collapse and waits for the piece in flight: the engine frees
  // the memory right after (a collapse of freed memory would at best fail, at worst collapse
  // whatever is mapped there next).
  const Namespace ns = MakeNamespace(
      {KvLayout::kVllmFlashAttn, EngineKv::kHeads, KvDtype::kBFloat16, Codec::kNone}, "huge-un");
  ClientOptions options;
  options.kv_huge_pages = ClientOptions::KvHugePages::kCollapse;
  auto client = ConnectTo(nullptr, options);
  for (int i = 0; i < 3; ++i) {
    EngineKv kv;
    auto id = client->RegisterKvCache(ns, kv.Spec());
    REQUIRE(id.ok());
    CHECK(client->UnregisterKvCache(*id).ok());
  }  // ~EngineKv unmaps
  EngineKv kv;
  StoreAndLoadBack(*client, kv, ns);  // the client still works
}

TEST_CASE("huge pages: memory the kernel will not collapse still registers and round-trips",
          "[lib][integration]") {
  // A private mapping of a regular file: MADV_COLLAPSE refuses file pages it cannot put in the
  // page cache as huge pages (EINVAL), the pages written are anonymous copies.
  const Namespace ns = MakeNamespace(
      {KvLayout::kVllmFlashAttn, EngineKv::kHeads, KvDtype::kBFloat16, Codec::kNone}, "huge-file");
  char path[] = "/tmp/strata-huge-pages-test-XXXXXX";
  const int fd = ::mkstemp(path);
  REQUIRE(fd >= 0);
  ::unlink(path);
  {
    EngineKv kv(fd);
    ClientOptions options;
    options.kv_huge_pages = ClientOptions::KvHugePages::kCollapse;
    auto client = ConnectTo(nullptr, options);
    StoreAndLoadBack(*client, kv, ns);
  }
  ::close(fd);
  // And a refusing madvise alone (AdviseHugePages above) never reaches the caller as an error.
}

}  // namespace
}  // namespace strata

namespace strata {
namespace {

// A field of a /proc file in kB (e.g. "ShmemPmdMapped:" of /proc/self/smaps_rollup), in bytes;
// 0 when absent.
uint64_t ProcKb(const char* path, const std::string& field) {
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);)
    if (line.rfind(field, 0) == 0) return std::strtoull(line.c_str() + field.size(), nullptr, 10) << 10;
  return 0;
}

// The host pool in huge pages (docs/operations.md, "Huge pages for the host pool"): the daemon
// asks for them (hugetlbfs, else MADV_HUGEPAGE before any page is faulted in), and a client maps
// each slab at a 2 MiB-aligned place, so that the huge pages the kernel gave the pool are mapped
// in the client by one page-table entry each (one fault per 2 MiB of a load instead of one per
// 64 KiB). Where the host gives shmem no huge pages (shmem THP `never`, no hugetlbfs pages:
// Stats pool_pages "4KiB"), or none came, the case round-trips and reports SKIPPED.
TEST_CASE("huge pages: where the host gives shmem huge pages, a client maps the pool's blocks "
          "in 2 MiB pages",
          "[lib][integration]") {
  paged_test::Daemon daemon("strata-huge-pool-test");
  auto c = Client::Connect(daemon.serve->socket());
  REQUIRE(c.ok());
  nlohmann::json stats;
  for (int i = 0; i < 1200; ++i) {  // the daemon populates its pool in the background
    stats = nlohmann::json::parse(*(*c)->Stats());
    if (!stats.value("pool_populating", false)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const std::string pages = stats.value("pool_pages", "");
  INFO("pool_pages " << pages);
  REQUIRE((pages == "hugetlb" || pages == "transparent" || pages == "4KiB"));
  constexpr size_t kBlock = size_t{2} << 20;
  const Namespace ns = testing::SmallNamespace("huge/pool", kBlock);
  testing::Prompt p(ns, 8, 77, kBlock);
  REQUIRE(*(*c)->Store(ns, p.keys, p.in).Wait() == 8);
  testing::Outputs o(8, kBlock);
  REQUIRE(*(*c)->Load(ns, p.keys, o.out).Wait() == 8);
  for (size_t i = 0; i < 8; ++i) REQUIRE(o.bufs[i] == p.blocks[i]);
  if (pages == "4KiB")
    SkipTest("shmem huge pages are off on this host (shmem_enabled never, no hugetlbfs pages): the "
         "pool is in 4 KiB pages");
  if (pages == "hugetlb") {
    CHECK(ProcKb("/proc/self/smaps_rollup", "Shared_Hugetlb:") >= kBlock);
    return;
  }
  if (ProcKb("/proc/meminfo", "ShmemHugePages:") == 0)
    SkipTest("shmem huge pages are allowed but the kernel gave the pool none (memory fragmented?)");
  // The client's read-only mapping of the loaded blocks' slabs: PMD-mapped shmem.
  CHECK(ProcKb("/proc/self/smaps_rollup", "ShmemPmdMapped:") >= kBlock);
}

}  // namespace
}  // namespace strata
