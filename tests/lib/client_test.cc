// The engine API (strata/client.h) end to end: embedded, against an in-process daemon, and
// against real `strata serve` processes (restart with the disk tier, a client SIGKILLed mid-store,
// malformed messages on the socket).
#include "strata/client.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "client/channel.h"
#include "client/pool_filler.h"
#include "daemon/daemon.h"
#include "daemon/metrics.h"
#include "ipc/ipc_protocol.h"
#include "ipc/unix_socket.h"
#include "node/node.h"
#include "strata/key_chain.h"
#include "tests/lib/client_test_util.h"
#include "tests/lib/disk_serve.h"
#include "tests/lib/raw_session.h"
#include "tests/lib/scratch_files.h"
#include "tools/strata/serve_process.h"

namespace strata {
namespace {

using testing::Outputs;
using testing::Prompt;
using testing::RawSession;
using testing::ScratchDir;

Namespace TestNamespace(const std::string& salt = "", size_t block_bytes = 8192) {
  return testing::SmallNamespace("test/model", block_bytes, salt);
}

// Exercises one client: store, lookup, load bit-exact, idempotent store, bad buffers, clear.
void RoundTrip(Client& client) {
  Namespace ns = TestNamespace();
  Prompt p(ns, 12, 1);
  auto stored = client.Store(ns, p.keys, p.in).Wait();
  REQUIRE(stored.ok());
  CHECK(*stored == 12);

  auto look = client.Lookup(ns, p.tokens);
  REQUIRE(look.ok());
  CHECK(look->matched_blocks == 12);
  CHECK(look->matched_tokens == 12 * 16);
  CHECK(look->tiers.size() == 12);
  CHECK(look->tiers[0] == Tier::kHost);

  Outputs o(12, 8192);
  auto loaded = client.Load(ns, p.keys, o.out).Wait();
  REQUIRE(loaded.ok());
  CHECK(*loaded == 12);
  for (size_t i = 0; i < 12; ++i) CHECK(o.bufs[i] == p.blocks[i]);

  // Storing again stores nothing new; a longer prompt with the same prefix stores only its tail.
  CHECK(*client.Store(ns, p.keys, p.in).Wait() == 0);
  Prompt longer(ns, 12, 1);  // same seed: same prefix
  Prompt tail(ns, 4, 2);
  std::vector<uint32_t> toks = p.tokens;
  toks.insert(toks.end(), tail.tokens.begin(), tail.tokens.end());
  std::vector<BlockKey> keys = ComputeBlockKeys(ns, toks);
  std::vector<ConstBuffer> bufs = p.in;
  bufs.insert(bufs.end(), tail.in.begin(), tail.in.end());
  CHECK(*client.Store(ns, keys, bufs).Wait() == 4);
  CHECK(client.Lookup(keys)->matched_blocks == 16);

  // A prompt that diverges after block 5 matches 6 blocks.
  std::vector<uint32_t> diverged = p.tokens;
  diverged[6 * 16 + 3] ^= 1;
  CHECK(client.Lookup(ns, diverged)->matched_blocks == 6);

  // Loading into a buffer that is too small is a clear error.
  Outputs small(2, 100);
  auto bad = client.Load(ns, std::span<const BlockKey>(p.keys).first(2), small.out).Wait();
  CHECK(bad.status().IsInvalidArgument());
  // Mismatched lengths.
  CHECK(client.Store(ns, p.keys, std::span<const ConstBuffer>(p.in).first(3)).Wait().status()
            .IsInvalidArgument());
  // A buffer that is not one block of the namespace is refused (it was once stored as a 100-byte
  // block, and a later Load reported success with the rest of the caller's buffer untouched).
  Prompt odd(ns, 2, 77, 100);
  auto refused = client.Store(ns, odd.keys, odd.in).Wait();
  CHECK(refused.status().IsInvalidArgument());
  CHECK(client.Lookup(odd.keys)->matched_blocks == 0);

  // Another namespace (tenant salt) sees none of it.
  Namespace other = TestNamespace("tenant-b");
  CHECK(client.Lookup(other, p.tokens)->matched_blocks == 0);

  auto stats = client.Stats();
  REQUIRE(stats.ok());
  auto j = nlohmann::json::parse(*stats);
  CHECK(j["host"]["blocks"] == 16);
  CHECK(j["pins"] == 0);

  auto cleared = client.Clear(ns.id());
  REQUIRE(cleared.ok());
  CHECK(*cleared == 16);
  CHECK(client.Lookup(keys)->matched_blocks == 0);
}

TEST_CASE("Embedded client: store then lookup then load then clear", "[lib]") {
  auto client = Client::Embedded({64ull << 20, "", 0, "prefix"});
  REQUIRE(client.ok());
  RoundTrip(**client);
}

TEST_CASE("Embedded client: no policy named runs the node's default, a wrong name is refused",
          "[lib]") {
  EmbeddedOptions options;
  options.host_pool_bytes = 64ull << 20;
  auto client = Client::Embedded(options);  // eviction_policy "": NodeOptions' default
  REQUIRE(client.ok());
  RoundTrip(**client);
  options.eviction_policy = "no-such-policy";
  auto refused = Client::Embedded(options);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.status().ToString().find("eviction_policy") != std::string::npos);
}

TEST_CASE("Embedded client: a call made for its waiter starts only when asked for - Ready, "
          "dropping or replacing its Completion, or closing the client runs it", "[lib]") {
  auto client = Client::Embedded({64ull << 20, "", 0, "prefix"});
  REQUIRE(client.ok());
  const Namespace ns = TestNamespace("waiter");
  Prompt p(ns, 6, 11);
  auto store = [&](size_t i) {  // one block: one round, a call for its waiter (in_caller)
    return (*client)->Store(ns, std::span(p.keys).subspan(i, 1), std::span(p.in).subspan(i, 1));
  };
  auto cached = [&](size_t i) {
    return (*client)->Lookup(std::span(p.keys).subspan(i, 1))->matched_blocks == 1;
  };
  auto poll_until = [](auto done) {
    for (int i = 0; i < 500 && !done(); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return done();
  };

  // Held, neither waited for nor polled: no worker takes it up (no worker keeps time for such
  // calls: a caller that waits at once wakes no thread).
  Completion<size_t> held = store(0);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  CHECK_FALSE(cached(0));
  // Ready() hands it to a worker: it completes without a Wait().
  CHECK(poll_until([&] { return held.Ready(); }));
  CHECK(cached(0));
  CHECK(*held.Wait() == 1);
  CHECK_FALSE(held.Ready());  // waited for: nothing left to start

  // Dropped unwaited: a worker runs it.
  { Completion<size_t> dropped = store(1); }
  CHECK(poll_until([&] { return cached(1); }));

  // Replaced by another call's Completion: the call it held still runs; the new one is waited.
  Completion<size_t> replaced = store(2);
  replaced = store(3);
  CHECK(*replaced.Wait() == 1);
  CHECK(cached(3));
  CHECK(poll_until([&] { return cached(2); }));

  // Waited for at once: runs in the waiting thread, done when Wait() returns.
  CHECK(*store(4).Wait() == 1);
  CHECK(cached(4));

  // Held while the client closes: the closing client runs it, and Wait() afterwards has its
  // result; a Completion dropped after the close starts nothing.
  Completion<size_t> last = store(5);
  Completion<size_t> never_waited = (*client)->Load(ns, std::span(p.keys).subspan(0, 1),
                                                    std::span<const MutableBuffer>());
  client->reset();
  CHECK(*last.Wait() == 1);
}

struct InProcessDaemon {
  std::unique_ptr<Node> node;
  std::unique_ptr<Daemon> daemon;
  std::string socket;

  explicit InProcessDaemon(const std::string& name, uint64_t pool_bytes = 64ull << 20) {
    NodeOptions opts;
    opts.host_pool_bytes = pool_bytes;
    opts.data_dir.clear();
    opts.default_pin_ms = 1000;
    auto n = Node::Open(opts);
    REQUIRE(n.ok());
    node = std::move(n).value();
    socket = "/tmp/strata-test-" + name + "-" + std::to_string(getpid()) + ".sock";
    DaemonOptions d;
    d.socket_path = socket;
    auto dm = Daemon::Start(node.get(), d);
    REQUIRE(dm.ok());
    daemon = std::move(dm).value();
  }
};

TEST_CASE("Daemon client: the same round trip over the socket", "[lib]") {
  InProcessDaemon d("roundtrip");
  auto client = Client::Connect(d.socket);
  REQUIRE(client.ok());
  RoundTrip(**client);
}

// The client maps each pool slab at its offset in an address range it reserves at Hello: the
// range starts on a 2 MiB boundary, so every slab (a multiple of 2 MiB) does too (a hugetlbfs
// slab can be mapped nowhere else; a huge shmem page gets one page-table entry only there).
// Reserved after mappings of odd sizes, which leave the next free address unaligned.
TEST_CASE("Daemon client: the pool's address space starts on a 2 MiB boundary", "[lib]") {
  constexpr uint64_t k2MiB = uint64_t{2} << 20, kBytes = uint64_t{64} << 20;
  std::vector<std::pair<void*, size_t>> odd;
  for (size_t pages = 1; pages <= 5; ++pages) {
    void* m = ::mmap(nullptr, pages * 4096 + 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(m != MAP_FAILED);
    odd.emplace_back(m, pages * 4096 + 4096);
    auto reserved = ReservePoolAddressSpace(kBytes);
    REQUIRE(reserved.ok());
    const auto at = reinterpret_cast<uintptr_t>(*reserved);
    CHECK(at % k2MiB == 0);
    // Exactly [at, at + kBytes) is reserved: mapping a page just past it, or over its last page,
    // at a fixed address succeeds without replacing anything of another mapping.
    void* past = ::mmap(reinterpret_cast<void*>(at + kBytes), 4096, PROT_READ,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    CHECK(past == reinterpret_cast<void*>(at + kBytes));
    if (past != MAP_FAILED) ::munmap(past, 4096);
    void* last = ::mmap(reinterpret_cast<void*>(at + kBytes - 4096), 4096, PROT_READ,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    CHECK(last == MAP_FAILED);  // still reserved
    CHECK(::munmap(*reserved, kBytes) == 0);
  }
  for (auto [m, n] : odd) ::munmap(m, n);
  InProcessDaemon d("aligned");
  auto ch = SocketChannel::Open(d.socket, 5000, 1 << 20);
  REQUIRE(ch.ok());
  CHECK(reinterpret_cast<uintptr_t>((*ch)->pool_base()) % k2MiB == 0);
}

// Issue 16: a Load of more than 64 MiB goes in pipelined chunks (the daemon pins chunk k+1 while
// the client copies chunk k). Every block arrives bit-exact across the chunk boundaries, and a
// prefix that ends inside a later chunk, or exactly at a chunk boundary, loads exactly its
// blocks and leaves no pin behind.
TEST_CASE("Daemon client: a long Load goes in chunks and stops where the prefix ends", "[lib]") {
  InProcessDaemon d("chunkedload", 256ull << 20);
  auto c = Client::Connect(d.socket);
  REQUIRE(c.ok());
  Client& client = **c;
  constexpr size_t kBytes = 1 << 20;  // 64 blocks per 64 MiB chunk
  Namespace ns = TestNamespace("", kBytes);
  auto pins = [&] { return nlohmann::json::parse(*client.Stats())["pins"].get<int>(); };
  {
    Prompt p(ns, 80, 201, kBytes);  // chunks of 64 + 16
    REQUIRE(*client.Store(ns, p.keys, p.in).Wait() == 80);
    Outputs o(80, kBytes);
    auto loaded = client.Load(ns, p.keys, o.out).Wait();
    REQUIRE(loaded.ok());
    CHECK(*loaded == 80);
    for (size_t i = 0; i < 80; ++i) CHECK(o.bufs[i] == p.blocks[i]);
    CHECK(pins() == 0);
    REQUIRE(client.Clear(ns.id()).ok());
  }
  for (size_t stored : {size_t{70}, size_t{64}}) {  // ends inside the second chunk, or before it
    INFO("stored " << stored);
    Prompt p(ns, 100, 202 + static_cast<uint32_t>(stored), kBytes);
    REQUIRE(*client.Store(ns, std::span<const BlockKey>(p.keys).first(stored),
                          std::span<const ConstBuffer>(p.in).first(stored))
                 .Wait() == stored);
    Outputs o(100, kBytes);
    auto loaded = client.Load(ns, p.keys, o.out).Wait();
    REQUIRE(loaded.ok());
    CHECK(*loaded == stored);
    for (size_t i = 0; i < stored; ++i) CHECK(o.bufs[i] == p.blocks[i]);
    CHECK(pins() == 0);
    REQUIRE(client.Clear(ns.id()).ok());
  }
}

// Issue 15: an operator computes hit ratios from the daemon's own counters.
TEST_CASE("Daemon counters: lookups that match nothing are misses of their namespace and every "
          "served block is counted by tier",
          "[lib]") {
  InProcessDaemon d("counters");
  auto c = Client::Connect(d.socket);
  REQUIRE(c.ok());
  Namespace ns = TestNamespace("counted");
  Prompt p(ns, 4, 31);
  for (int i = 0; i < 10; ++i) CHECK((*c)->Lookup(ns, p.tokens)->matched_blocks == 0);
  REQUIRE(*(*c)->Store(ns, p.keys, p.in).Wait() == 4);
  CHECK((*c)->Lookup(ns, p.tokens)->matched_blocks == 4);
  Outputs o(4, 8192);
  REQUIRE(*(*c)->Load(ns, p.keys, o.out).Wait() == 4);
  auto j = nlohmann::json::parse(*(*c)->Stats());
  INFO(j.dump(1));
  CHECK(j["lookups"]["requests"] == 11);
  CHECK(j["lookups"]["empty"] == 10);
  CHECK(j["lookups"]["miss_blocks"] == 40);
  CHECK(j["lookups"]["hit_blocks"] == 4);
  const auto& mine = j["namespaces"][ns.id().ToHex()];
  CHECK(mine["misses"] == 40);
  CHECK(mine["hits"] == 4);
  CHECK(mine["blocks_stored"] == 4);
  CHECK(mine["bytes_stored"] == 4 * 8192);
  CHECK(mine["blocks_served"] == 4);
  CHECK(mine["bytes_served"] == 4 * 8192);
  CHECK(j["host"]["served_blocks"] == 4);
  CHECK(j["host"]["served_bytes"] == 4 * 8192);
  CHECK(j["namespaces"]["unattributed"]["misses"] == 0);
}

TEST_CASE("Two clients share a prefix through one daemon", "[lib]") {
  InProcessDaemon d("share");
  auto a = Client::Connect(d.socket);
  auto b = Client::Connect(d.socket);
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  Namespace ns = TestNamespace();
  Prompt p(ns, 8, 5);
  REQUIRE(*(*a)->Store(ns, p.keys, p.in).Wait() == 8);
  auto look = (*b)->Lookup(ns, p.tokens);
  CHECK(look->matched_blocks == 8);
  Outputs o(8, 8192);
  CHECK(*(*b)->Load(ns, p.keys, o.out).Wait() == 8);
  for (size_t i = 0; i < 8; ++i) CHECK(o.bufs[i] == p.blocks[i]);
  CHECK(d.daemon->active_sessions() == 2);
}

TEST_CASE("Pins of a client that disconnects are released and pins expire", "[lib]") {
  InProcessDaemon d("pins");
  Namespace ns = TestNamespace();
  Prompt p(ns, 4, 9);
  auto stats_pins = [&] {
    auto c = Client::Connect(d.socket);
    return nlohmann::json::parse(*(*c)->Stats())["pins"].get<int>();
  };
  {
    auto c = Client::Connect(d.socket);
    REQUIRE(*(*c)->Store(ns, p.keys, p.in).Wait() == 4);
    REQUIRE(*(*c)->Pin(ns, p.keys, 60000) == 4);
    CHECK(stats_pins() == 4);
  }  // disconnects
  for (int i = 0; i < 100 && stats_pins() != 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  CHECK(stats_pins() == 0);
  // A pin of a connected client expires after its pin_ms.
  auto c = Client::Connect(d.socket);
  REQUIRE(*(*c)->Pin(ns, p.keys, 200) == 4);
  CHECK(stats_pins() == 4);
  std::this_thread::sleep_for(std::chrono::milliseconds(800));
  CHECK(stats_pins() == 0);
}

// Regression (issue 14, "pin time capped by the daemon"): a client that pinned every block for
// 0xFFFFFFFF ms held them for 49 days, so no other store could evict them. `strata serve
// --max-pin-ms` caps every pin; the pinning client stays connected throughout.
TEST_CASE("strata serve: a pin of 0xFFFFFFFF ms lasts only --max-pin-ms", "[lib][integration]") {
  const std::string dir = ScratchDir("pin-cap");
  const std::string socket = dir + "/s.sock";
  auto serve = testing::StartServe({"serve", "--socket", socket, "--no-disk", "--host-pool",
                                    "64MiB", "--max-pin-ms", "300"},
                                   socket);
  auto c = Client::Connect(socket);
  REQUIRE(c.ok());
  Namespace ns = TestNamespace("pin-cap");
  Prompt p(ns, 4, 10);
  REQUIRE(*(*c)->Store(ns, p.keys, p.in).Wait() == 4);
  REQUIRE(*(*c)->Pin(ns, p.keys, 0xFFFFFFFFu) == 4);
  auto pins = [&] { return nlohmann::json::parse(*(*c)->Stats())["pins"].get<int>(); };
  int held = pins();
  CHECK(held == 4);
  for (int i = 0; i < 500 && held != 0; ++i) {  // expected after 300 ms; 10 s on a loaded host
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    held = pins();
  }
  CHECK(held == 0);
  std::filesystem::remove_all(dir);
}

// Regression (issue 14, "reservations expire"): an uncommitted StoreBegin reserved pool space,
// so one that asked for the whole pool blocked every other store until its client disconnected.
// A StoreBegin now only asks which keys are cached; space is taken by the commit that fills it.
TEST_CASE("strata serve: a StoreBegin for most of the pool, never committed, holds no space",
          "[lib][integration]") {
  const std::string dir = ScratchDir("begin");
  const std::string socket = dir + "/s.sock";
  auto serve = testing::StartServe(
      {"serve", "--socket", socket, "--no-disk", "--host-pool", "32MiB"}, socket);
  Namespace ns = TestNamespace("begin", 65536);  // 512 blocks fill the 32 MiB pool
  RawSession raw(socket);
  Prompt hog(ns, 384, 12, 8);  // keys of 24 MiB of blocks (the bytes are never sent)
  CHECK(raw.Call(ipc::StoreBeginRequest{ns.id(), hog.keys,
                                        std::vector<uint64_t>(hog.keys.size(), ns.block_bytes())})
            .status.ok());
  // The begun store's connection stays open and idle; another client stores half the pool.
  auto c = Client::Connect(socket);
  REQUIRE(c.ok());
  Prompt p(ns, 256, 13, ns.block_bytes());  // 16 MiB: with the 24 begun, more than the pool
  auto stored = (*c)->Store(ns, p.keys, p.in).Wait();
  INFO(stored.status().ToString());
  REQUIRE(stored.ok());
  CHECK(*stored == 256);
  Outputs o(256, ns.block_bytes());
  auto loaded = (*c)->Load(ns, p.keys, o.out).Wait();
  REQUIRE(loaded.ok());
  CHECK(*loaded == 256);
  const bool exact = o.bufs == p.blocks;  // not CHECKed whole: Catch would print 16 MiB
  CHECK(exact);
  std::filesystem::remove_all(dir);
}

// Issue 18: the per-call cost of small stores and loads. Counted with the daemon's own request
// counters (the daemon runs in this process): a store that fits one round goes in one round trip
// (no StoreBegin), a load's Unpin is posted without waiting for its answer and is in effect for
// every later request, a load that pins nothing sends no Unpin.
TEST_CASE("Small stores and loads: one round trip per store, posted Unpin after a load", "[lib]") {
  InProcessDaemon d("smallcall");
  auto count = [](metrics::Request r) {
    return metrics::Requests().latency[static_cast<size_t>(r)].count();
  };
  Namespace ns = TestNamespace("smallcall");
  Prompt p(ns, 4, 41);
  Outputs o(4, 8192);
  {
    // Loads over IPC (a Load and its Unpin): the pool is mapped at the first load, not at
    // connect, so the first load is not served through the load index.
    ClientOptions first_load;
    first_load.map_pool = ClientOptions::MapPool::kFirstLoad;
    auto c = Client::Connect(d.socket, first_load);
    REQUIRE(c.ok());
    const uint64_t begins = count(metrics::Request::kStoreBegin);
    const uint64_t commits = count(metrics::Request::kStoreCommit);
    REQUIRE(*(*c)->Store(ns, std::span(p.keys).first(2), std::span(p.in).first(2)).Wait() == 2);
    // Again, with two blocks more: the daemon skips the two it holds, from the same round trip.
    REQUIRE(*(*c)->Store(ns, p.keys, p.in).Wait() == 2);
    CHECK(count(metrics::Request::kStoreBegin) == begins);
    CHECK(count(metrics::Request::kStoreCommit) == commits + 2);
    CHECK((*c)->Lookup(p.keys)->matched_blocks == 4);

    const uint64_t loads = count(metrics::Request::kLoad);
    const uint64_t unpins = count(metrics::Request::kUnpin);
    REQUIRE(*(*c)->Load(ns, p.keys, o.out).Wait() == 4);
    for (size_t i = 0; i < 4; ++i) CHECK(o.bufs[i] == p.blocks[i]);
    // The Unpin went out behind the Load; the Stats after it on this connection sees it done.
    CHECK(nlohmann::json::parse(*(*c)->Stats())["pins"] == 0);
    CHECK(count(metrics::Request::kLoad) == loads + 1);
    CHECK(count(metrics::Request::kUnpin) == unpins + 1);
    // A load that pins nothing has nothing to unpin.
    Prompt absent(ns, 2, 42);
    Outputs none(2, 8192);
    CHECK(*(*c)->Load(ns, absent.keys, none.out).Wait() == 0);
    CHECK(nlohmann::json::parse(*(*c)->Stats())["pins"] == 0);
    CHECK(count(metrics::Request::kUnpin) == unpins + 1);
    // A call nobody waits for at once still completes on a worker thread once polled.
    auto pending = (*c)->Load(ns, p.keys, o.out);
    for (int i = 0; i < 500 && !pending.Ready(); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    CHECK(pending.Ready());
    CHECK(*pending.Wait() == 4);
    // A burst of such calls, held while callers wait for others, completes too once polled,
    // each with the whole prefix.
    std::vector<Outputs> bursts;
    bursts.reserve(16);  // `out` of each points into its own buffers
    std::vector<Completion<size_t>> unwaited;
    for (int k = 0; k < 16; ++k) {
      const Outputs& b = bursts.emplace_back(4, p.blocks[0].size());
      unwaited.push_back((*c)->Load(ns, p.keys, b.out));
      REQUIRE(*(*c)->Load(ns, p.keys, o.out).Wait() == 4);
    }
    for (auto& u : unwaited)
      for (int i = 0; i < 500 && !u.Ready(); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    for (size_t k = 0; k < unwaited.size(); ++k) {
      CHECK(unwaited[k].Ready());
      CHECK(*unwaited[k].Wait() == 4);
      for (size_t i = 0; i < 4; ++i) CHECK(bursts[k].bufs[i] == p.blocks[i]);
    }
    // The last Unpin is posted; the client leaves right after its load.
  }
  // A departed client's posted Unpin was answered before it went: another connection sees no pin.
  auto other = Client::Connect(d.socket);
  REQUIRE(other.ok());
  CHECK(nlohmann::json::parse(*(*other)->Stats())["pins"] == 0);
  // A store that does not fit one round (a codec's blocks) still asks StoreBegin first.
  NamespaceSpec lz = ns.spec();
  lz.codec = Codec::kShuffleLz4;
  Namespace compressed = std::move(Namespace::Create(lz)).value();
  Prompt q(compressed, 4, 43);
  const uint64_t begins = count(metrics::Request::kStoreBegin);
  REQUIRE(*(*other)->Store(compressed, q.keys, q.in).Wait() == 4);
  CHECK(count(metrics::Request::kStoreBegin) == begins + 1);
}

TEST_CASE("Malformed or oversized or out-of-order messages get errors and the daemon keeps serving",
          "[lib]") {
  InProcessDaemon d("malformed");
  auto raw = ipc::UnixConnection::Connect(d.socket);
  REQUIRE(raw.ok());
  std::string reply;
  auto response = [&]() {
    REQUIRE(raw->Receive(&reply).ok());
    auto r = ipc::DecodeResponse(std::as_bytes(std::span<const char>(reply)));
    REQUIRE(r.ok());
    return *r;
  };
  // Garbage.
  REQUIRE(raw->Send("\x01\x02garbage").ok());
  CHECK(response().status.IsInvalidArgument());
  // A valid request before Hello.
  REQUIRE(raw->Send(ipc::EncodeRequest({7, ipc::StatsRequest{}})).ok());
  auto r = response();
  CHECK(r.status.IsInvalidArgument());
  CHECK(std::string(r.status.message()).find("Hello") != std::string::npos);
  // A Hello without a staging memfd is refused (and the connection closed); with one, a commit
  // outside it is refused.
  REQUIRE(raw->Send(ipc::EncodeRequest({8, ipc::Hello{}})).ok());
  CHECK(response().status.IsInvalidArgument());
  RawSession session(d.socket);
  CHECK(session.hello_fd < 0);  // the pool comes slab by slab (MapSlab), not with the HelloReply
  const Namespace ns = TestNamespace();
  const BlockKey key = Prompt(ns, 1, 3).keys[0];
  const ipc::Response outside = session.Call(
      ipc::StoreCommitRequest{ns.id(), Codec::kNone, {key}, {BlockKey{}}, {(1 << 20) - 100}, {8192}});
  CHECK(outside.status.IsInvalidArgument());
  CHECK(std::string(outside.status.message()).find("outside") != std::string::npos);
  // Wrong protocol version: error, then the daemon closes the connection.
  auto v2 = ipc::UnixConnection::Connect(d.socket);
  REQUIRE(v2->Send(ipc::EncodeRequest({1, ipc::Hello{99, "future"}})).ok());
  REQUIRE(v2->Receive(&reply).ok());
  CHECK(ipc::DecodeResponse(std::as_bytes(std::span<const char>(reply)))->status.code() ==
        StatusCode::kNotSupported);
  CHECK(v2->Receive(&reply).code() == StatusCode::kUnavailable);
  // A client of protocol 3 (keys without the namespace tag) is told why at Hello.
  auto v3 = ipc::UnixConnection::Connect(d.socket);
  REQUIRE(v3->Send(ipc::EncodeRequest({1, ipc::Hello{3, "before the tag"}})).ok());
  REQUIRE(v3->Receive(&reply).ok());
  const Status old = ipc::DecodeResponse(std::as_bytes(std::span<const char>(reply)))->status;
  CHECK(old.code() == StatusCode::kNotSupported);
  CHECK(std::string(old.message()).find("protocol 3, daemon speaks 4") != std::string::npos);
  CHECK(std::string(old.message()).find("namespace tag") != std::string::npos);
  // An oversized length prefix: the connection is dropped.
  auto big = ipc::UnixConnection::Connect(d.socket);
  const uint32_t huge = 0x7FFFFFFF;
  REQUIRE(::write(big->fd(), &huge, 4) == 4);
  REQUIRE(big->Receive(&reply).ok());  // the error reply
  CHECK(big->Receive(&reply).code() == StatusCode::kUnavailable);
  // The daemon still serves a well-behaved client.
  auto good = Client::Connect(d.socket);
  REQUIRE(good.ok());
  CHECK((*good)->Stats().ok());
}

// ---- real `strata serve` processes ----


// Write-back (the default): the blocks are only in host memory until the clean shutdown writes
// them to disk.
TEST_CASE("strata serve: restart with the disk tier keeps blocks and SIGTERM exits cleanly",
          "[lib][integration]") {
  const std::string dir = ScratchDir("restart");
  const std::string socket = dir + "/s.sock";
  const std::vector<std::string> args = {"serve", "--socket", socket, "--data-dir", dir + "/data",
                                         "--host-pool", "64MiB", "--disk", "256MiB"};
  Namespace ns = TestNamespace("", 65536);
  Prompt p(ns, 10, 11, 65536);
  auto serve = testing::StartServe(args, socket);
  {
    auto c = Client::Connect(socket);
    REQUIRE(c.ok());
    REQUIRE(*(*c)->Store(ns, p.keys, p.in).Wait() == 10);
  }
  int status = serve->Stop();
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK_FALSE(std::filesystem::exists(socket));  // removed on clean shutdown

  serve = testing::StartServe(args, socket);
  {
    auto c = Client::Connect(socket);
    REQUIRE(c.ok());
    auto look = (*c)->Lookup(p.keys);
    CHECK(look->matched_blocks == 10);
    if (!look->tiers.empty()) CHECK(look->tiers[0] == Tier::kDisk);
    Outputs o(10, 65536);
    CHECK(*(*c)->Load(ns, p.keys, o.out).Wait() == 10);
    for (size_t i = 0; i < 10; ++i) CHECK(o.bufs[i] == p.blocks[i]);
  }
  serve->Stop();
  std::filesystem::remove_all(dir);
}

// Regression (issue 14, "keys computed in another namespace"): a store named one namespace but
// carried keys of another, and the daemon stored them (a later Load through the right namespace
// refused them, but the blocks took the pool). Each key carries its namespace's tag (docs/keys.md,
// "Namespace tag"), which the daemon checks on StoreBegin and on the commit.
TEST_CASE("strata serve: a store whose keys were computed in another namespace is refused",
          "[lib][integration]") {
  const std::string dir = ScratchDir("keys-ns");
  const std::string socket = dir + "/s.sock";
  auto serve = testing::StartServe(
      {"serve", "--socket", socket, "--no-disk", "--host-pool", "64MiB"}, socket);
  Namespace ns = TestNamespace("keys-a");
  Namespace other = TestNamespace("keys-b");  // same model and block bytes, another tenant salt
  Prompt mine(ns, 3, 51), theirs(other, 3, 52);
  auto c = Client::Connect(socket);
  REQUIRE(c.ok());
  // Through the client: the whole store is refused, naming the cause, nothing is stored.
  auto refused = (*c)->Store(ns, theirs.keys, theirs.in).Wait();
  CHECK(refused.status().IsInvalidArgument());
  const std::string msg = refused.status().ToString();
  INFO(msg);
  CHECK(msg.find("was not computed in namespace " + ns.id().ToHex()) != std::string::npos);
  std::vector<BlockKey> mixed = mine.keys;
  mixed[1] = theirs.keys[1];
  auto mixed_refused = (*c)->Store(ns, mixed, mine.in).Wait();
  CHECK(mixed_refused.status().IsInvalidArgument());
  CHECK(mixed_refused.status().ToString().find("block 1's key " + theirs.keys[1].ToHex()) !=
        std::string::npos);
  CHECK((*c)->Lookup(theirs.keys)->matched_blocks == 0);
  CHECK((*c)->Lookup(mine.keys)->matched_blocks == 0);  // its good keys were not stored either

  // Spoken by hand: a StoreBegin and a commit (without a StoreBegin) are each refused.
  RawSession raw(socket);
  const ipc::Response begin = raw.Call(ipc::StoreBeginRequest{ns.id(), theirs.keys, {}});
  CHECK(begin.status.IsInvalidArgument());
  CHECK(std::string(begin.status.message()).find("StoreBegin") != std::string::npos);
  std::memcpy(raw.staging.base(), theirs.blocks[0].data(), 8192);
  const ipc::Response commit = raw.Call(
      ipc::StoreCommitRequest{ns.id(), Codec::kNone, {theirs.keys[0]}, {BlockKey{}}, {0}, {8192}});
  CHECK(commit.status.IsInvalidArgument());
  CHECK(std::string(commit.status.message()).find("not computed in namespace") !=
        std::string::npos);
  CHECK((*c)->Lookup(theirs.keys)->matched_blocks == 0);
  // The same session, and the daemon, keep serving: the key of its own namespace is stored.
  const ipc::Response good = raw.Call(
      ipc::StoreCommitRequest{other.id(), Codec::kNone, {theirs.keys[0]}, {BlockKey{}}, {0}, {8192}});
  REQUIRE(good.status.ok());
  CHECK(std::get<ipc::StoreCommitReply>(good.body).committed == 1);
  REQUIRE(*(*c)->Store(ns, mine.keys, mine.in).Wait() == 3);
  Outputs o(3, 8192);
  REQUIRE(*(*c)->Load(ns, mine.keys, o.out).Wait() == 3);
  CHECK(o.bufs == mine.blocks);
  CHECK(nlohmann::json::parse(*(*c)->Stats())["host"]["blocks"] == 4);
  int status = serve->Stop();
  CHECK(WIFEXITED(status));
  std::filesystem::remove_all(dir);
}

// The trust boundary (docs/data-plane.md): a second local process, with its own staging memory,
// can neither write the pool nor make the daemon publish bytes other than those it hashed.
TEST_CASE("strata serve: clients cannot write the pool or forge a published block",
          "[lib][integration]") {
  const std::string dir = ScratchDir("forge");
  const std::string socket = dir + "/s.sock";
  auto serve = testing::StartServe(
      {"serve", "--socket", socket, "--no-disk", "--host-pool", "64MiB"}, socket);
  Namespace ns = TestNamespace("tenant-a");
  Prompt p(ns, 6, 13);
  auto a = Client::Connect(socket);
  REQUIRE(a.ok());
  REQUIRE(*(*a)->Store(ns, p.keys, p.in).Wait() == 6);

  // An attacker speaks the protocol itself: it gets a pool slab's descriptor...
  RawSession raw(socket);
  const uint64_t slab = raw.hello.slab_bytes;
  REQUIRE(slab > 0);
  int fd = -1;
  REQUIRE(raw.Call(ipc::MapSlabRequest{0}, -1, &fd).status.ok());
  REQUIRE(fd >= 0);
  // ... which maps for reading only, cannot be upgraded, reopened read-write or resized.
  CHECK(::mmap(nullptr, slab, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) == MAP_FAILED);
  void* ro = ::mmap(nullptr, slab, PROT_READ, MAP_SHARED, fd, 0);
  REQUIRE(ro != MAP_FAILED);
  CHECK(::mprotect(ro, slab, PROT_READ | PROT_WRITE) != 0);
  const int rw = ::open(("/proc/self/fd/" + std::to_string(fd)).c_str(), O_RDWR);
  if (rw >= 0) {  // root passes the mode check; the seal still refuses a writable mapping
    CHECK(::mmap(nullptr, slab, PROT_READ | PROT_WRITE, MAP_SHARED, rw, 0) == MAP_FAILED);
    ::close(rw);
  }
  CHECK(::ftruncate(fd, 4096) != 0);
  ::munmap(ro, slab);
  ::close(fd);

  // A commit whose staging bytes change right after: what was published is what the daemon
  // hashed while copying, and a load verifies against the daemon's checksum.
  Namespace mine = TestNamespace("tenant-b");
  Prompt q(mine, 1, 21);
  std::memcpy(raw.staging.base(), q.blocks[0].data(), 8192);
  const ipc::Response done = raw.Call(
      ipc::StoreCommitRequest{mine.id(), Codec::kNone, {q.keys[0]}, {BlockKey{}}, {0}, {8192}});
  REQUIRE(done.status.ok());
  CHECK(std::get<ipc::StoreCommitReply>(done.body).committed == 1);
  std::memset(raw.staging.base(), 0xAB, 8192);  // too late: the pool holds its own copy
  // Raw bytes labelled with a codec they are not encoded with are refused, never published.
  const BlockKey unpublished = Prompt(mine, 1, 22).keys[0];
  const ipc::Response refused = raw.Call(ipc::StoreCommitRequest{
      mine.id(), Codec::kFp8E4M3, {unpublished}, {BlockKey{}}, {0}, {8192}});
  CHECK(refused.status.IsInvalidArgument());
  CHECK(std::string(refused.status.message()).find("payload") != std::string::npos);
  CHECK((*a)->Lookup(std::vector<BlockKey>{unpublished})->matched_blocks == 0);
  Outputs qo(1, 8192);
  CHECK(*(*a)->Load(mine, q.keys, qo.out).Wait() == 1);
  CHECK(qo.bufs[0] == q.blocks[0]);

  // Tenant A's blocks, loaded through another namespace's name, are not served.
  Outputs wrong(6, 8192);
  CHECK(*(*a)->Load(mine, p.keys, wrong.out).Wait() == 0);
  // Tenant A still loads exactly what it stored.
  Outputs o(6, 8192);
  CHECK(*(*a)->Load(ns, p.keys, o.out).Wait() == 6);
  for (size_t i = 0; i < 6; ++i) CHECK(o.bufs[i] == p.blocks[i]);
  int status = serve->Stop();
  CHECK(WIFEXITED(status));
  std::filesystem::remove_all(dir);
}

// Cross-memory stores (docs/data-plane.md): the daemon reads the engine's buffers itself with
// process_vm_readv, hashing what it wrote into the pool. Both paths round-trip; an address the
// client does not have mapped is a clear InvalidArgument with nothing of the call published and
// the daemon still serving; a buffer rewritten during the copy publishes exactly what was hashed
// (every load verifies); a connection that did not offer its memory cannot name addresses.
TEST_CASE("strata serve: cross-memory and staging stores round-trip and a bad address or a buffer "
          "changed mid-copy never publishes unverified bytes",
          "[lib][integration]") {
  const std::string dir = ScratchDir("cma");
  const std::string socket = dir + "/s.sock";
  auto serve = testing::StartServe(
      {"serve", "--socket", socket, "--no-disk", "--host-pool", "256MiB"}, socket);
  ClientOptions cma;
  cma.store_path = ClientOptions::StorePath::kCrossMemory;
  ClientOptions staging;
  staging.store_path = ClientOptions::StorePath::kStaging;
  for (const ClientOptions& o : {cma, staging}) {
    auto client = Client::Connect(socket, o);
    REQUIRE(client.ok());
    RoundTrip(**client);
  }

  auto client = Client::Connect(socket, cma);
  REQUIRE(client.ok());
  Client& c = **client;
  Namespace ns = TestNamespace("cma");
  // A buffer unmapped before the call: InvalidArgument, and neither it nor the good block of the
  // same call is published.
  Prompt p(ns, 2, 5);
  void* gone = ::mmap(nullptr, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  REQUIRE(gone != MAP_FAILED);
  REQUIRE(::munmap(gone, 8192) == 0);
  std::vector<ConstBuffer> bad = {p.in[0], {gone, 8192}};
  auto refused = c.Store(ns, p.keys, bad).Wait();
  CHECK(refused.status().IsInvalidArgument());
  CHECK(refused.status().ToString().find("EFAULT") != std::string::npos);
  CHECK(c.Lookup(p.keys)->matched_blocks == 0);
  // The daemon keeps serving, this connection included.
  REQUIRE(*c.Store(ns, p.keys, p.in).Wait() == 2);
  Outputs po(2, 8192);
  CHECK(*c.Load(ns, p.keys, po.out).Wait() == 2);
  CHECK(po.bufs[1] == p.blocks[1]);

  // Blocks rewritten by another thread while the daemon copies them: whatever mix of old and new
  // bytes was published, its checksum is of exactly those bytes, so every load verifies.
  Namespace big = TestNamespace("cma-big", 1 << 20);
  Prompt q(big, 16, 9, 1 << 20);
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    uint8_t v = 0;
    while (!stop.load())
      for (auto& b : q.blocks) {
        const uint8_t page = v++ % 64;
        std::memset(b.data() + page * 4096, v, 4096);
      }
  });
  for (int round = 0; round < 5; ++round) {
    REQUIRE(*c.Store(big, q.keys, q.in).Wait() == 16);
    Outputs qo(16, 1 << 20);
    CHECK(*c.Load(big, q.keys, qo.out).Wait() == 16);
    REQUIRE(c.Clear(big.id()).ok());
  }
  stop.store(true);
  writer.join();

  // A raw connection that did not offer its memory in its Hello cannot name addresses.
  RawSession raw(socket);
  CHECK_FALSE(raw.hello.cross_memory);
  Prompt r(ns, 1, 31);
  ipc::StoreCommitRequest commit{ns.id(), Codec::kNone, {r.keys[0]}, {BlockKey{}}, {}, {8192}};
  commit.source_addresses = {reinterpret_cast<uint64_t>(r.blocks[0].data())};
  CHECK(raw.Call(commit).status.IsInvalidArgument());
  CHECK(c.Lookup(r.keys)->matched_blocks == 0);

  int status = serve->Stop();
  CHECK(WIFEXITED(status));
  std::filesystem::remove_all(dir);
}

// Regression (issue 14): a call that timed out left its response on the socket, and every later
// call on that connection failed with "daemon answered request N instead of N+1". The slow call
// here is a legitimate one: a 1 ms receive timeout against a StoreCommit of 256 MiB, which the
// daemon copies and hashes. The store still completes in the daemon; later calls skip its late
// response and get their own.
TEST_CASE("strata serve: a client whose call timed out resynchronises and later calls succeed",
          "[lib][integration]") {
  const std::string dir = ScratchDir("resync");
  const std::string socket = dir + "/s.sock";
  auto serve = testing::StartServe(
      {"serve", "--socket", socket, "--no-disk", "--host-pool", "512MiB"}, socket);
  constexpr size_t kBlocks = 64, kBlockBytes = size_t{4} << 20;
  Namespace ns = TestNamespace("resync", kBlockBytes);
  std::vector<uint32_t> tokens(kBlocks * ns.block_size());
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<uint32_t>(i * 2654435761u);
  const std::vector<BlockKey> keys = ComputeBlockKeys(ns, tokens);
  // Connecting is fast, but a 1 ms timeout may still catch a busy daemon's Hello: retry it.
  std::unique_ptr<SocketChannel> ch;
  for (int attempt = 0; attempt < 100 && ch == nullptr; ++attempt) {
    auto opened = SocketChannel::Open(socket, 1, kBlocks * kBlockBytes);
    if (opened.ok()) ch = std::move(opened).value();
  }
  REQUIRE(ch != nullptr);
  std::memset(ch->staging_base(), 0x5A, kBlocks * kBlockBytes);
  ipc::StoreCommitRequest commit{ns.id(), Codec::kNone, keys, {}, {}, {}};
  for (size_t i = 0; i < kBlocks; ++i) {
    commit.parents.push_back(i == 0 ? BlockKey{} : keys[i - 1]);
    commit.staging_offsets.push_back(i * kBlockBytes);
    commit.lengths.push_back(kBlockBytes);
  }
  auto slow = ch->Call(commit);
  INFO(slow.status().ToString());
  REQUIRE(slow.status().IsTimedOut());

  // The daemon finishes the store and answers it; then Lookups on the same connection succeed
  // (each may itself time out on a busy machine: retried, but no other error is accepted).
  std::this_thread::sleep_for(std::chrono::seconds(1));
  bool answered = false;
  for (int attempt = 0; attempt < 200 && !answered; ++attempt) {
    auto look = ch->Call(ipc::LookupRequest{.keys = keys, .ns = std::nullopt});
    if (look.status().IsTimedOut()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      continue;
    }
    INFO(look.status().ToString());
    REQUIRE(look.ok());
    const auto* reply = std::get_if<ipc::LookupReply>(&*look);
    REQUIRE(reply != nullptr);
    CHECK(reply->matched == kBlocks);  // the timed-out store did complete
    answered = true;
  }
  CHECK(answered);
  auto stats = ch->Call(ipc::StatsRequest{});
  CHECK((stats.ok() || stats.status().IsTimedOut()));
  int status = serve->Stop();
  CHECK(WIFEXITED(status));
  std::filesystem::remove_all(dir);
}

// Steady-state eviction through the daemon (what `strata bench client` does without Clear): a
// small pool, several clients storing chained prompts (a shared 2-block system prompt, then their
// own blocks) and loading them right back, far more bytes than the pool holds, then a phase of
// another block size. Every Store must succeed: a full pool evicts to make room. NoSpace is
// right only for a request larger than the pool.
void SteadyStateEviction(const std::vector<std::string>& extra_args, bool require_whole_loads) {
  const std::string dir = ScratchDir("steady");
  const std::string socket = dir + "/s.sock";
  std::vector<std::string> args = {"serve", "--socket", socket, "--host-pool", "64MiB"};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  for (std::string& a : args)
    if (a == "DIR") a = dir + "/data";
  auto serve = testing::StartServe(args, socket);
  struct Phase {
    size_t block_bytes, blocks, prompts;
  };
  size_t short_loads = 0;
  for (const Phase& ph : {Phase{64 << 10, 16, 30}, Phase{256 << 10, 8, 16}}) {
    // A namespace per block size: no key is shared across the phases.
    Namespace ns = TestNamespace("steady-" + std::to_string(ph.block_bytes), ph.block_bytes);
    constexpr int kClients = 4;
    std::atomic<size_t> failed{0}, bad{0}, shorter{0};
    std::mutex mu;
    std::string first_failure;
    std::vector<std::thread> clients;
    for (int c = 0; c < kClients; ++c) {
      clients.emplace_back([&, c] {
        auto fail = [&](const std::string& what) {
          if (failed.fetch_add(1) == 0) {
            std::lock_guard lock(mu);
            first_failure = what;
          }
        };
        auto client = Client::Connect(socket);
        if (!client.ok()) return fail(client.status().ToString());
        std::mt19937 rng(c + 1);
        for (size_t n = 0; n < ph.prompts; ++n) {
          std::vector<uint32_t> tokens(ph.blocks * ns.block_size());
          for (size_t t = 0; t < tokens.size(); ++t)
            tokens[t] = t < 2 * ns.block_size() ? static_cast<uint32_t>(t) : rng() % 128000;
          const std::vector<BlockKey> keys = ComputeBlockKeys(ns, tokens);
          std::vector<std::vector<std::byte>> blocks(ph.blocks);
          std::vector<ConstBuffer> in;
          Outputs out(ph.blocks, ph.block_bytes);
          for (size_t i = 0; i < ph.blocks; ++i) {
            blocks[i].resize(ph.block_bytes);
            for (size_t j = 0; j < ph.block_bytes; ++j)
              blocks[i][j] = static_cast<std::byte>((keys[i].low >> (j % 8 * 8)) ^ j);
            in.push_back({blocks[i].data(), blocks[i].size()});
          }
          auto stored = (*client)->Store(ns, keys, in).Wait();
          if (!stored.ok()) return fail("store: " + stored.status().ToString());
          auto loaded = (*client)->Load(ns, keys, out.out).Wait();
          if (!loaded.ok()) return fail("load: " + loaded.status().ToString());
          if (*loaded < ph.blocks) shorter.fetch_add(1);
          for (size_t i = 0; i < *loaded; ++i)
            if (out.bufs[i] != blocks[i]) bad.fetch_add(1);
        }
      });
    }
    for (auto& t : clients) t.join();
    INFO(ph.block_bytes << "-byte blocks: first failure: " << first_failure);
    CHECK(failed == 0);
    CHECK(bad == 0);
    short_loads += shorter;
  }
  auto c = Client::Connect(socket);
  REQUIRE(c.ok());
  auto stats = nlohmann::json::parse(*(*c)->Stats());
  CHECK(stats["host"]["evictions"].get<uint64_t>() > 100);
  CHECK(stats["pins"] == 0);
  if (require_whole_loads)
    CHECK(short_loads == 0);
  else if (short_loads)
    WARN(short_loads << " loads right after their store came back short");
  // A request larger than the pool is refused with NoSpace; the daemon keeps serving.
  Namespace huge_ns = TestNamespace("huge", 1 << 20);
  Prompt huge(huge_ns, 80, 17, 1 << 20);
  auto refused = (*c)->Store(huge_ns, huge.keys, huge.in).Wait();
  CHECK(refused.status().IsNoSpace());
  Namespace small_ns = TestNamespace("small");
  Prompt small(small_ns, 4, 18);
  CHECK(*(*c)->Store(small_ns, small.keys, small.in).Wait() == 4);
  int status = serve->Stop();
  CHECK(WIFEXITED(status));
  std::filesystem::remove_all(dir);
}

// One mapping of this process, as /proc/self/smaps shows it.
struct Vma {
  uintptr_t start = 0, end = 0;
  std::string perms;
  std::string path;
  uint64_t rss_bytes = 0;
};

std::vector<Vma> SelfMappings() {
  std::vector<Vma> vmas;
  std::ifstream in("/proc/self/smaps");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream f(line);
    if (line.rfind("Rss:", 0) == 0 && !vmas.empty()) {
      std::string key;
      uint64_t kb = 0;
      f >> key >> kb;
      vmas.back().rss_bytes = kb * 1024;
      continue;
    }
    const size_t dash = line.find('-');
    if (dash == std::string::npos || dash == 0 ||
        !std::isxdigit(static_cast<unsigned char>(line[0])))
      continue;
    std::string range, perms, offset, dev;
    uint64_t inode = 0;
    if (!(f >> range >> perms >> offset >> dev >> inode)) continue;
    if (range.find(':') != std::string::npos) continue;  // a "Key: value" line
    Vma v;
    v.start = std::stoull(range.substr(0, dash), nullptr, 16);
    v.end = std::stoull(range.substr(dash + 1), nullptr, 16);
    v.perms = perms;
    std::getline(f >> std::ws, v.path);
    vmas.push_back(std::move(v));
  }
  return vmas;
}

// This process's mappings of the daemon's pool slabs (its memfds; not the load index's).
std::vector<Vma> PoolSlabMappings() {
  std::vector<Vma> slabs;
  for (Vma& v : SelfMappings())
    if (v.path == "/memfd:strata-host-pool (deleted)") slabs.push_back(std::move(v));
  return slabs;
}

// Waits (up to 30 s) until the daemon says its pool is populated (`pool_populating` false in its
// stats); the pool is faulted in by the daemon after it listens.
void WaitPoolPopulated(Client& c) {
  bool populated = false;
  for (int i = 0; i < 1500 && !populated; ++i) {
    populated = !nlohmann::json::parse(*c.Stats()).value("pool_populating", false);
    if (!populated) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  REQUIRE(populated);
}

// ClientOptions::map_pool kConnect: Connect maps every slab of the pool read-only with its page
// table filled (every page resident in the mapping before any load), the mapping cannot be made
// writable, and loads read the blocks right through it; kFirstLoad maps nothing at connect.
TEST_CASE("strata serve: map_pool connect maps the whole pool read-only and filled before any "
          "load and first_load maps nothing at connect", "[lib][integration]") {
  constexpr uint64_t kSlab = uint64_t{2} << 20, kBlock = uint64_t{1} << 20;
  constexpr size_t kBlocks = 6;
  const std::string dir = ScratchDir("map-pool");
  const std::string socket = dir + "/s.sock";
  auto serve = testing::StartServe({"serve", "--socket", socket, "--no-disk", "--host-pool",
                                    "8MiB", "--host-slab", "2MiB"},
                                   socket);
  ClientOptions lazy;
  lazy.map_pool = ClientOptions::MapPool::kFirstLoad;
  auto first = Client::Connect(socket, lazy);
  REQUIRE(first.ok());
  CHECK(PoolSlabMappings().empty());
  WaitPoolPopulated(**first);  // so that a filled slab mapping holds every one of its pages

  ClientOptions eager;
  eager.map_pool = ClientOptions::MapPool::kConnect;
  auto c = Client::Connect(socket, eager);
  REQUIRE(c.ok());
  std::vector<Vma> slabs = PoolSlabMappings();
  REQUIRE(slabs.size() == 4);  // the whole 8 MiB pool, before any store or load
  for (const Vma& v : slabs) {
    CHECK(v.perms == "r--s");
    CHECK(v.end - v.start == kSlab);
    CHECK(v.rss_bytes == kSlab);  // page table filled at connect
    CHECK(::mprotect(reinterpret_cast<void*>(v.start), kSlab, PROT_READ | PROT_WRITE) != 0);
  }
  Namespace ns = TestNamespace("map-pool", kBlock);
  Prompt p(ns, kBlocks, 41, kBlock);
  REQUIRE(*(*c)->Store(ns, p.keys, p.in).Wait() == kBlocks);
  Outputs all(kBlocks, kBlock);
  REQUIRE(*(*c)->Load(ns, p.keys, all.out).Wait() == kBlocks);
  for (size_t i = 0; i < kBlocks; ++i) CHECK(all.bufs[i] == p.blocks[i]);
  CHECK(PoolSlabMappings().size() == 4);  // no slab mapped again
  // A setting that is no value: Connect fails and says so.
  ::setenv("STRATA_MAP_POOL", "always", 1);
  auto bad = Client::Connect(socket);
  ::unsetenv("STRATA_MAP_POOL");
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.status().message().find("STRATA_MAP_POOL") != std::string::npos);
  c->reset();
  first->reset();
  int status = serve->Stop();
  CHECK(WIFEXITED(status));
  std::filesystem::remove_all(dir);
}

// Minor faults of the calling thread so far: the page-table entries it made, by its own faults or
// by a MAP_POPULATE (the kernel counts those to the thread that asked).
uint64_t ThreadMinorFaults() {
  rusage u{};
  ::getrusage(RUSAGE_THREAD, &u);
  return static_cast<uint64_t>(u.ru_minflt);
}

// True while a thread of this process has the pool filler's name.
bool PoolFillerRunning() {
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream comm(e.path() / "comm");
    std::string name;
    if (std::getline(comm, name) && name == PoolFiller::kThreadName) return true;
  }
  return false;
}

// ClientOptions::map_pool kBackground: Connect maps every slab read-only and returns without
// filling the page table (the connecting thread makes a handful of page-table entries, where
// kConnect makes one per 16 pool pages), a thread of the client then fills every slab the daemon
// has populated, and loads read the blocks through the mapping.
TEST_CASE("strata serve: map_pool background maps the whole pool read-only at connect and fills "
          "it from a thread of its own, not the connecting thread", "[lib][integration]") {
  constexpr uint64_t kPool = uint64_t{64} << 20, kSlab = uint64_t{4} << 20;
  constexpr uint64_t kBlock = uint64_t{1} << 20;
  constexpr size_t kBlocks = 6;
  const std::string dir = ScratchDir("map-pool-bg");
  const std::string socket = dir + "/s.sock";
  auto serve = testing::StartServe({"serve", "--socket", socket, "--no-disk", "--host-pool",
                                    "64MiB", "--host-slab", "4MiB"},
                                   socket);
  ClientOptions lazy;
  lazy.map_pool = ClientOptions::MapPool::kFirstLoad;
  auto first = Client::Connect(socket, lazy);
  REQUIRE(first.ok());
  WaitPoolPopulated(**first);  // the daemon's pages, so that the filler may fill every slab
  const uint64_t fill_faults = kPool / (uint64_t{64} << 10);  // 16 pages a fault

  ClientOptions background;
  background.map_pool = ClientOptions::MapPool::kBackground;
  uint64_t faults = ThreadMinorFaults();
  auto c = Client::Connect(socket, background);
  faults = ThreadMinorFaults() - faults;
  REQUIRE(c.ok());
  INFO("connecting thread's minor faults " << faults);
  CHECK(faults < fill_faults / 8);
  std::vector<Vma> slabs = PoolSlabMappings();
  REQUIRE(slabs.size() == kPool / kSlab);  // the whole pool, before any store or load
  for (const Vma& v : slabs) {
    CHECK(v.perms == "r--s");
    CHECK(v.end - v.start == kSlab);
    CHECK(::mprotect(reinterpret_cast<void*>(v.start), kSlab, PROT_READ | PROT_WRITE) != 0);
  }
  // The filler ends once every slab is filled.
  for (int i = 0; i < 3000 && PoolFillerRunning(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  REQUIRE_FALSE(PoolFillerRunning());
  slabs = PoolSlabMappings();
  REQUIRE(slabs.size() == kPool / kSlab);
  for (const Vma& v : slabs) CHECK(v.rss_bytes == kSlab);

  Namespace ns = TestNamespace("map-pool-bg", kBlock);
  Prompt p(ns, kBlocks, 43, kBlock);
  REQUIRE(*(*c)->Store(ns, p.keys, p.in).Wait() == kBlocks);
  Outputs all(kBlocks, kBlock);
  REQUIRE(*(*c)->Load(ns, p.keys, all.out).Wait() == kBlocks);
  for (size_t i = 0; i < kBlocks; ++i) CHECK(all.bufs[i] == p.blocks[i]);
  CHECK(PoolSlabMappings().size() == kPool / kSlab);  // no slab mapped again
  c->reset();
  CHECK(PoolSlabMappings().empty());

  // The reference: kConnect fills on the connecting thread, one fault per 16 pages.
  ClientOptions eager;
  eager.map_pool = ClientOptions::MapPool::kConnect;
  faults = ThreadMinorFaults();
  auto e = Client::Connect(socket, eager);
  faults = ThreadMinorFaults() - faults;
  REQUIRE(e.ok());
  INFO("kConnect: connecting thread's minor faults " << faults);
  CHECK(faults >= fill_faults);
  e->reset();
  first->reset();
  int status = serve->Stop();
  CHECK(WIFEXITED(status));
  std::filesystem::remove_all(dir);
}

// ClientOptions::map_pool kAuto at a pool over 1 GiB (here 2 GiB, connected while the daemon is
// still populating it): kBackground. Connect maps every slab read-only without making the page
// tables of the pool on the connecting thread (kConnect: 32768 faults, and the daemon's missing
// pages allocated by this client), and loads right after are bit-exact.
TEST_CASE("strata serve: map_pool auto maps a 2 GiB pool at connect without filling it on the "
          "connecting thread", "[lib][integration]") {
  constexpr uint64_t kPool = uint64_t{2} << 30, kSlab = uint64_t{16} << 20;
  constexpr uint64_t kBlock = uint64_t{2} << 20;
  constexpr size_t kBlocks = 8;
  const std::string dir = ScratchDir("map-pool-auto");
  const std::string socket = dir + "/s.sock";
  auto serve = testing::StartServe(
      {"serve", "--socket", socket, "--no-disk", "--host-pool", "2GiB", "--host-slab", "16MiB"},
      socket);
  uint64_t faults = ThreadMinorFaults();
  auto c = Client::Connect(socket);
  faults = ThreadMinorFaults() - faults;
  REQUIRE(c.ok());
  INFO("connecting thread's minor faults " << faults);
  CHECK(faults < kPool / (uint64_t{64} << 10) / 64);
  std::vector<Vma> slabs = PoolSlabMappings();
  CHECK(slabs.size() == kPool / kSlab);
  for (const Vma& v : slabs) CHECK(v.perms == "r--s");
  Namespace ns = TestNamespace("map-pool-auto", kBlock);
  Prompt p(ns, kBlocks, 47, kBlock);
  REQUIRE(*(*c)->Store(ns, p.keys, p.in).Wait() == kBlocks);
  Outputs all(kBlocks, kBlock);
  REQUIRE(*(*c)->Load(ns, p.keys, all.out).Wait() == kBlocks);
  for (size_t i = 0; i < kBlocks; ++i) CHECK(all.bufs[i] == p.blocks[i]);
  CHECK(PoolSlabMappings().size() == kPool / kSlab);  // no slab mapped again
  c->reset();
  int status = serve->Stop();
  CHECK(WIFEXITED(status));
  std::filesystem::remove_all(dir);
}

TEST_CASE("strata serve: stores succeed through steady-state eviction of a small pool",
          "[lib][integration]") {
  SECTION("lru, no disk: every load right after its store is whole") {
    SteadyStateEviction({"--no-disk", "--eviction-policy", "lru"}, true);
  }
  SECTION("prefix, no disk: every load right after its store is whole") {
    SteadyStateEviction({"--no-disk"}, true);
  }
  SECTION("regret (LeCaR's mixing of learned's arc and fifo experts), no disk: loads whole") {
    SteadyStateEviction({"--no-disk", "--eviction-policy", "regret"}, true);
  }
  SECTION("prefix, write-back to a disk tier") {
    SteadyStateEviction({"--data-dir", "DIR", "--disk", "256MiB"}, true);
  }
}

}  // namespace
}  // namespace strata
