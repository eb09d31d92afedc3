// Loads without a round trip (docs/data-plane.md, "Loads without a round trip"): a client of a
// real daemon loads host-tier blocks through the read-only load index, with no Load request, never
// returns wrong bytes while another client evicts under it, cannot map or write another tenant's
// segment or its own writable, and its access notices keep a hot block resident.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "client/channel.h"
#include "daemon/daemon.h"
#include "daemon/metrics.h"
#include "ipc/ipc_protocol.h"
#include "ipc/unix_socket.h"
#include "node/node.h"
#include "store/load_index.h"
#include "strata/client.h"
#include "tests/lib/client_test_util.h"
#include "tests/lib/disk_serve.h"
#include "tests/lib/paged_test_util.h"
#include "tests/lib/run_command.h"
#include "tests/lib/scratch_files.h"
#include "tools/strata/serve_process.h"

namespace strata {
namespace {

using testing::Outputs;
using testing::Prompt;
using testing::ScratchDir;

constexpr size_t kBlock = 64 << 10;

// Loads through the index are on by default (STRATA_LOAD_INDEX=off turns them off, read when a
// client connects): this file's clients run with it on whatever the environment of the run.
const bool kLoadIndexOn = (::unsetenv("STRATA_LOAD_INDEX"), true);

Namespace Ns(const std::string& salt = "") {
  return testing::SmallNamespace("loadindex/model", kBlock, salt);
}

uint64_t Count(metrics::Request r) {
  return metrics::Requests().latency[static_cast<size_t>(r)].count();
}

struct Daemon1 {
  std::unique_ptr<Node> node;
  std::unique_ptr<Daemon> daemon;
  std::string socket;
  explicit Daemon1(const std::string& name, uint64_t pool_bytes = 64ull << 20,
                   bool verify_loads = false) {
    NodeOptions opts;
    opts.host_pool_bytes = pool_bytes;
    opts.data_dir.clear();
    auto n = Node::Open(opts);
    REQUIRE(n.ok());
    node = std::move(n).value();
    socket = "/tmp/strata-test-" + name + "-" + std::to_string(getpid()) + ".sock";
    DaemonOptions d;
    d.socket_path = socket;
    d.verify_loads = verify_loads;
    auto dm = Daemon::Start(node.get(), d);
    REQUIRE(dm.ok());
    daemon = std::move(dm).value();
  }
};


nlohmann::json StatsOf(Client& c) { return nlohmann::json::parse(*c.Stats()); }

TEST_CASE("Daemon client: host-tier hits load through the load index with no Load request",
          "[lib]") {
  Daemon1 d("loadindex-hits");
  Namespace ns = Ns("hits");
  Prompt p(ns, 8, 501, kBlock);
  auto c = Client::Connect(d.socket);
  REQUIRE(c.ok());
  REQUIRE(*(*c)->Store(ns, p.keys, p.in).Wait() == 8);
  Outputs o(8, kBlock);
  // The pool was mapped at connect (ClientOptions::map_pool auto, a small pool): even the first
  // load needs no Load request.
  const uint64_t loads0 = Count(metrics::Request::kLoad);
  REQUIRE(*(*c)->Load(ns, p.keys, o.out).Wait() == 8);
  CHECK(Count(metrics::Request::kLoad) == loads0);
  const uint64_t noticed0 = StatsOf(**c)["load_index"]["noticed_blocks"].get<uint64_t>();
  const uint64_t unpins0 = Count(metrics::Request::kUnpin);
  for (int round = 0; round < 20; ++round) {
    Outputs r(8, kBlock);
    REQUIRE(*(*c)->Load(ns, p.keys, r.out).Wait() == 8);
    for (size_t i = 0; i < 8; ++i) REQUIRE(r.bufs[i] == p.blocks[i]);
  }
  CHECK(Count(metrics::Request::kLoad) == loads0);
  CHECK(Count(metrics::Request::kUnpin) == unpins0);
  auto j = StatsOf(**c);  // flushes the client's access notices first
  CHECK(j["load_index"]["noticed_blocks"].get<uint64_t>() == noticed0 + 160);
  CHECK(j["load_index"]["published"].get<uint64_t>() >= 8);
  CHECK(j["pins"] == 0);
  // A prefix that runs past the cached blocks: the index serves the cached part, the miss goes
  // over IPC and ends the prefix.
  Prompt tail(ns, 2, 502, kBlock);
  std::vector<BlockKey> keys = p.keys;
  keys.push_back(tail.keys[0]);  // not stored
  Outputs lo(9, kBlock);
  CHECK(*(*c)->Load(ns, keys, lo.out).Wait() == 8);
  CHECK(Count(metrics::Request::kLoad) == loads0 + 1);
  // Another namespace's name finds nothing through the index either.
  Namespace other = Ns("hits-other");
  Outputs wrong(8, kBlock);
  CHECK(*(*c)->Load(other, p.keys, wrong.out).Wait() == 0);
  // Cleared blocks are gone from the index at once.
  REQUIRE(*(*c)->Clear(ns.id()) == 8);
  CHECK(*(*c)->Load(ns, p.keys, o.out).Wait() == 0);
  CHECK(StatsOf(**c)["load_index"]["published"].get<uint64_t>() == 0);

  // STRATA_LOAD_INDEX=off: every load is a Load request again (the A/B switch of the benchmarks).
  REQUIRE(*(*c)->Store(ns, p.keys, p.in).Wait() == 8);
  ::setenv("STRATA_LOAD_INDEX", "off", 1);
  auto off = Client::Connect(d.socket);
  ::unsetenv("STRATA_LOAD_INDEX");
  REQUIRE(off.ok());
  const uint64_t loads1 = Count(metrics::Request::kLoad);
  for (int round = 0; round < 3; ++round) REQUIRE(*(*off)->Load(ns, p.keys, o.out).Wait() == 8);
  CHECK(Count(metrics::Request::kLoad) == loads1 + 3);
}

TEST_CASE(
    "strata serve: a client loading in a loop under a concurrent evictor gets its blocks "
    "bit-exact or a miss, never wrong bytes",
    "[lib][integration]") {
  const std::string dir = ScratchDir("loadindex-evict");
  const std::string socket = dir + "/s.sock";
  // 32 MiB: two 16 MiB slabs, 512 blocks of 64 KiB. Loads copy without hashing (verify_loads
  // off, the default, named here so that this stays the test of the seqlock alone): a copy that
  // read a reused chunk is caught by the entry's sequence number or not at all.
  auto serve = testing::StartServe({"serve", "--socket", socket, "--no-disk", "--host-pool",
                                    "32MiB", "--verify-loads", "false"},
                                   socket);
  Namespace ns = Ns();
  Prompt hot(ns, 4, 601, kBlock);
  auto reader = Client::Connect(socket);
  auto writer = Client::Connect(socket);
  REQUIRE(reader.ok());
  REQUIRE(writer.ok());
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> stores{0};
  std::atomic<uint32_t> latest{0};
  std::thread evictor([&] {
    // A pool's worth and more of other blocks, again and again: every slab is reused.
    for (uint32_t seed = 700; !stop.load(); ++seed) {
      Prompt cold(ns, 64, seed, kBlock);
      auto n = (*writer)->Store(ns, cold.keys, cold.in).Wait();
      if (n.ok()) stores.fetch_add(*n);
      latest.store(seed);
    }
  });
  uint64_t loads = 0, full = 0, partial = 0, blocks = 0;
  // 4 s, and on a loaded machine longer (up to 30 s) until the pool was turned over twice.
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(4);
  const auto at_most = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  Outputs o(4, kBlock);
  while (std::chrono::steady_clock::now() < until ||
         (stores.load() <= 1024 && std::chrono::steady_clock::now() < at_most)) {
    auto stored = (*reader)->Store(ns, hot.keys, hot.in).Wait();  // back after an eviction
    REQUIRE(stored.ok());
    for (int i = 0; i < 20; ++i) {
      for (auto& b : o.bufs) std::memset(b.data(), 0, b.size());
      auto n = (*reader)->Load(ns, hot.keys, o.out).Wait();
      REQUIRE(n.ok());
      ++loads;
      blocks += *n;
      if (*n == 4) ++full; else if (*n > 0) ++partial;
      for (size_t k = 0; k < *n; ++k) {
        if (o.bufs[k] != hot.blocks[k]) {
          size_t first = 0, diff = 0;
          while (o.bufs[k][first] == hot.blocks[k][first]) ++first;
          for (size_t b = 0; b < kBlock; ++b) diff += o.bufs[k][b] != hot.blocks[k][b];
          bool zero = true;
          for (size_t b = 0; b < kBlock; ++b) zero = zero && o.bufs[k][b] == std::byte{0};
          FAIL("n " << *n << " k " << k << " first diff " << first << " bytes differing " << diff
                    << " all zero " << zero << " xxh " << PayloadChecksum(o.bufs[k])
                    << " want " << PayloadChecksum(hot.blocks[k]));
        }
      }
    }
    // The writer's latest blocks, which its next stores evict while this client reads them.
    if (const uint32_t seed = latest.load(); seed != 0) {
      Prompt recent(ns, 64, seed, kBlock);
      Outputs ro(64, kBlock);
      for (int i = 0; i < 4; ++i) {
        auto n = (*reader)->Load(ns, recent.keys, ro.out).Wait();
        REQUIRE(n.ok());
        ++loads;
        if (*n > 0 && *n < 64) ++partial;
        for (size_t k = 0; k < *n; ++k) REQUIRE(ro.bufs[k] == recent.blocks[k]);
      }
    }
  }
  stop.store(true);
  evictor.join();
  INFO("loads " << loads << " full " << full << " partial " << partial << " stores "
                << stores.load());
  CHECK(stores.load() > 1024);  // the pool was turned over several times
  CHECK(full > 0);
  auto j = StatsOf(**reader);
  CHECK(j["load_index"]["noticed_blocks"].get<uint64_t>() > 0);
  CHECK(j["host"]["evictions"].get<uint64_t>() > 0);
  int status = serve->Stop();
  CHECK(WIFEXITED(status));
  std::filesystem::remove_all(dir);
}

TEST_CASE("Daemon client: LoadPaged of host-tier blocks goes through the load index with no Load "
          "request",
          "[lib]") {
  Daemon1 d("loadindex-paged");
  using paged_test::HostPages;
  const paged_test::Shape shape{KvLayout::kVllmFlashAttn, 4, KvDtype::kBFloat16, Codec::kNone};
  const Namespace ns = paged_test::MakeNamespace(shape, "index-paged");
  auto spec = [](HostPages& p) {
    KvCacheSpec s;
    s.layout = p.layout;
    for (auto& l : p.layers) s.layers.push_back(l.data());
    s.num_blocks = paged_test::kPages;
    return s;
  };
  HostPages src(shape.layout, shape.heads, shape.dtype), dst(shape.layout, shape.heads,
                                                             shape.dtype);
  src.Fill(11);
  auto c = Client::Connect(d.socket);
  REQUIRE(c.ok());
  auto src_id = (*c)->RegisterKvCache(ns, spec(src));
  auto dst_id = (*c)->RegisterKvCache(ns, spec(dst));
  REQUIRE(src_id.ok());
  REQUIRE(dst_id.ok());
  constexpr size_t kBlocks = 6;
  const std::vector<uint32_t> tokens = paged_test::Tokens(kBlocks, 5);
  const std::vector<BlockKey> keys = ComputeBlockKeys(ns, tokens);
  const std::vector<int32_t> from = paged_test::Pages(kBlocks, 1);
  const std::vector<int32_t> to = paged_test::Pages(kBlocks, 2);
  REQUIRE(*(*c)->StorePaged(*src_id, keys, from).Wait() == kBlocks * shape.heads);
  // The first load maps the slabs over IPC; the next ones need no Load request.
  REQUIRE(*(*c)->LoadPaged(*dst_id, keys, to).Wait() == kBlocks);
  const uint64_t loads0 = Count(metrics::Request::kLoad);
  const uint64_t noticed0 = StatsOf(**c)["load_index"]["noticed_blocks"].get<uint64_t>();
  for (int round = 0; round < 3; ++round) {
    dst.Zero();
    REQUIRE(*(*c)->LoadPaged(*dst_id, keys, to).Wait() == kBlocks);
    for (size_t i = 0; i < kBlocks; ++i)
      for (uint32_t h = 0; h < shape.heads; ++h)
        REQUIRE(dst.Shard(to[i], h) == src.Shard(from[i], h));
  }
  CHECK(Count(metrics::Request::kLoad) == loads0);
  auto j = StatsOf(**c);
  CHECK(j["load_index"]["noticed_blocks"].get<uint64_t>() == noticed0 + 3 * kBlocks * shape.heads);
  CHECK(j["pins"] == 0);
  // A prefix that diverges after block 3: three blocks through the index, the miss over IPC.
  std::vector<uint32_t> other = tokens;
  other[3 * paged_test::kBlockSize] ^= 1;
  CHECK(*(*c)->LoadPaged(*dst_id, ComputeBlockKeys(ns, other), to).Wait() == 3);
  CHECK(Count(metrics::Request::kLoad) == loads0 + 1);
  // Off: every paged load is a Load request again.
  ::setenv("STRATA_LOAD_INDEX", "off", 1);
  auto off = Client::Connect(d.socket);
  ::unsetenv("STRATA_LOAD_INDEX");
  REQUIRE(off.ok());
  auto off_id = (*off)->RegisterKvCache(ns, spec(dst));
  REQUIRE(off_id.ok());
  REQUIRE(*(*off)->LoadPaged(*off_id, keys, to).Wait() == kBlocks);
  REQUIRE(*(*off)->LoadPaged(*off_id, keys, to).Wait() == kBlocks);
  CHECK(Count(metrics::Request::kLoad) == loads0 + 3);
}

// Where `payload` lies in the daemon's pool (the first place its leading 256 bytes occur, which
// random bytes make unique); the test then writes there through the daemon's own writable mapping,
// as a fault of the daemon or of memory would, since no client can.
std::byte* PoolPlaceOf(Node& node, std::span<const std::byte> payload) {
  const auto* base = static_cast<const char*>(static_cast<const void*>(node.pool_base()));
  const void* at = ::memmem(base, node.pool_bytes(), payload.data(), 256);
  REQUIRE(at != nullptr);
  return node.pool_base() + (static_cast<const char*>(at) - base);
}

// Issue 18 with issue 14's trust model (docs/data-plane.md, "Verified at commit, copied at load"):
// with verify_loads on, every load path (through the load index and over IPC, whole blocks and
// paged) hashes what it copies and a block damaged in the pool ends the prefix; off (the
// default), loads copy the pool's bytes as they are: correct bytes for every block the daemon
// verified, and the damaged one too (what the setting trades: the check of the daemon's and the
// memory's faults).
TEST_CASE("Daemon client: verify_loads on catches a block damaged in the pool on every load path, "
          "off loads the pool's bytes as they are",
          "[lib]") {
  const bool verify = GENERATE(true, false);
  const bool index = GENERATE(true, false);
  INFO("verify_loads " << verify << ", load index " << index);
  Daemon1 d(std::string("verify-") + (verify ? "on" : "off") + (index ? "-index" : "-ipc"),
            64ull << 20, verify);
  ::setenv("STRATA_LOAD_INDEX", index ? "on" : "off", 1);
  auto c = Client::Connect(d.socket);
  ::unsetenv("STRATA_LOAD_INDEX");
  REQUIRE(c.ok());

  // Whole blocks (Load).
  Namespace ns = Ns(std::string("verify-") + (verify ? "on" : "off") + (index ? "i" : "p"));
  Prompt p(ns, 4, 801, kBlock);
  REQUIRE(*(*c)->Store(ns, p.keys, p.in).Wait() == 4);
  for (int round = 0; round < 2; ++round) {  // the first maps the slabs, the second is a hit
    Outputs o(4, kBlock);
    REQUIRE(*(*c)->Load(ns, p.keys, o.out).Wait() == 4);
    for (size_t i = 0; i < 4; ++i) REQUIRE(o.bufs[i] == p.blocks[i]);
  }
  std::byte* damaged = PoolPlaceOf(*d.node, p.blocks[2]) + 1000;
  *damaged ^= std::byte{0x40};
  {
    Outputs o(4, kBlock);
    const size_t n = *(*c)->Load(ns, p.keys, o.out).Wait();
    for (size_t i = 0; i < 2; ++i) CHECK(o.bufs[i] == p.blocks[i]);
    if (verify) {
      CHECK(n == 2);  // a block that fails verification is a miss: the prefix ends there
    } else {
      REQUIRE(n == 4);
      std::vector<std::byte> want = p.blocks[2];
      want[1000] ^= std::byte{0x40};
      CHECK(o.bufs[2] == want);
      CHECK(o.bufs[3] == p.blocks[3]);
    }
  }
  *damaged ^= std::byte{0x40};

  // Paged (LoadPaged of a host-memory cache, codec none).
  using paged_test::HostPages;
  const paged_test::Shape shape{KvLayout::kVllmFlashAttn, 2, KvDtype::kBFloat16, Codec::kNone};
  const Namespace pns = paged_test::MakeNamespace(shape, ns.spec().tenant_salt + "-paged");
  auto spec = [](HostPages& hp) {
    KvCacheSpec s;
    s.layout = hp.layout;
    for (auto& l : hp.layers) s.layers.push_back(l.data());
    s.num_blocks = paged_test::kPages;
    return s;
  };
  HostPages src(shape.layout, shape.heads, shape.dtype), dst(shape.layout, shape.heads,
                                                             shape.dtype);
  src.Fill(13);
  auto src_id = (*c)->RegisterKvCache(pns, spec(src));
  auto dst_id = (*c)->RegisterKvCache(pns, spec(dst));
  REQUIRE(src_id.ok());
  REQUIRE(dst_id.ok());
  constexpr size_t kBlocks = 4;
  const std::vector<BlockKey> keys = ComputeBlockKeys(pns, paged_test::Tokens(kBlocks, 7));
  const std::vector<int32_t> from = paged_test::Pages(kBlocks, 3);
  const std::vector<int32_t> to = paged_test::Pages(kBlocks, 4);
  REQUIRE(*(*c)->StorePaged(*src_id, keys, from).Wait() == kBlocks * shape.heads);
  for (int round = 0; round < 2; ++round) {
    dst.Zero();
    REQUIRE(*(*c)->LoadPaged(*dst_id, keys, to).Wait() == kBlocks);
    for (size_t i = 0; i < kBlocks; ++i)
      for (uint32_t h = 0; h < shape.heads; ++h)
        REQUIRE(dst.Shard(to[i], h) == src.Shard(from[i], h));
  }
  const std::vector<std::byte> shard = src.Shard(from[1], 1);
  std::byte* damaged_shard = PoolPlaceOf(*d.node, shard) + shard.size() / 2;
  *damaged_shard ^= std::byte{0x40};
  dst.Zero();
  const size_t n = *(*c)->LoadPaged(*dst_id, keys, to).Wait();
  CHECK(dst.Shard(to[0], 0) == src.Shard(from[0], 0));
  if (verify) {
    CHECK(n == 1);
  } else {
    REQUIRE(n == kBlocks);
    std::vector<std::byte> want = shard;
    want[shard.size() / 2] ^= std::byte{0x40};
    CHECK(dst.Shard(to[1], 1) == want);
    CHECK(dst.Shard(to[3], 1) == src.Shard(from[3], 1));
  }
  *damaged_shard ^= std::byte{0x40};
}

// The funnel row of `ns` from `strata inspect --json funnel` on `socket` (null when none).
nlohmann::json FunnelRow(const std::string& socket, const Namespace& ns, std::string* output) {
  const testing::CommandResult r = testing::RunCommand(
      std::string(STRATA_CLI_PATH) + " inspect --socket " + socket + " --json funnel --window 600");
  *output = "exit " + std::to_string(r.exit_code) + ": " + r.output;
  const nlohmann::json j = nlohmann::json::parse(r.output, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("namespaces")) return nullptr;
  for (const nlohmann::json& n : j["namespaces"])
    if (n["namespace"] == ns.id().ToHex()) return n;
  return nullptr;
}

TEST_CASE("strata serve: loads through the load index reach inspect's funnel and the stats "
          "within a bounded time, with no further call of the client",
          "[lib][integration]") {
  const std::string dir = ScratchDir("loadindex-funnel");
  const std::string socket = dir + "/s.sock";
  auto serve = testing::StartServe({"serve", "--socket", socket, "--no-disk", "--host-pool",
                                    "32MiB", "--recompute-tps", "1000"},
                                   socket);
  Namespace ns = Ns("funnel");
  Prompt p(ns, 4, 951, kBlock);
  // The pool mapped at the first load (a Load request), not at connect.
  ClientOptions first_load;
  first_load.map_pool = ClientOptions::MapPool::kFirstLoad;
  auto c = Client::Connect(socket, first_load);
  auto watcher = Client::Connect(socket);  // reads the stats: never c, whose Stats would flush
  REQUIRE(c.ok());
  REQUIRE(watcher.ok());
  REQUIRE(*(*c)->Store(ns, p.keys, p.in).Wait() == 4);
  Outputs o(4, kBlock);
  REQUIRE(*(*c)->Load(ns, p.keys, o.out).Wait() == 4);  // maps the slab: a Load request
  const uint64_t requests0 = StatsOf(**watcher)["load_requests"].get<uint64_t>();
  REQUIRE(requests0 >= 1);
  REQUIRE((*c)->SetRecomputeRate(ns, 50).ok());
  constexpr int kLoads = 5;
  for (int i = 0; i < kLoads; ++i) {
    REQUIRE(*(*c)->Load(ns, p.keys, o.out).Wait() == 4);
    for (size_t k = 0; k < 4; ++k) REQUIRE(o.bufs[k] == p.blocks[k]);
  }
  const auto loaded = std::chrono::steady_clock::now();
  // Nothing more from c: its notice thread must deliver the loads on its own.
  nlohmann::json row;
  for (;;) {
    std::string output;
    row = FunnelRow(socket, ns, &output);
    if (row.is_object() && row["loads"] == 1 + kLoads) break;
    INFO("inspect funnel: " << output);
    REQUIRE(std::chrono::steady_clock::now() - loaded < std::chrono::seconds(5));
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const double waited =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - loaded).count();
  // No timed assertion (a loaded CI machine stretches any bound): the loop above fails only when
  // the notice thread delivers nothing at all within 5 s, i.e. when it does not deliver on its own.
  INFO("funnel complete after " << waited << " s");
  CHECK(row["load_asked_blocks"] == 4 * (1 + kLoads));
  CHECK(row["loaded_blocks"] == 4 * (1 + kLoads));
  CHECK(row["loaded_before_deadline_blocks"] == 4 * (1 + kLoads));
  CHECK(row["load_seconds"].get<double>() > 0);
  // The loads through the index carried the engine's rate (the first, over IPC, came before it).
  CHECK(row["recompute_rate_source"] == "mixed");
  CHECK(row["recompute_tokens_per_second"] == 50.0);
  CHECK(row["faster_than_recompute_blocks"].get<uint64_t>() >= 4 * kLoads);
  // The daemon's stats: no Load request for them, the loads and blocks counted all the same.
  auto j = StatsOf(**watcher);
  CHECK(j["load_requests"].get<uint64_t>() == requests0);
  CHECK(j["load_index"]["loads"].get<uint64_t>() == kLoads);
  CHECK(j["load_index"]["noticed_blocks"].get<uint64_t>() == 4 * kLoads);
  const nlohmann::json& counts = j["namespaces"][ns.id().ToHex()];
  CHECK(counts["blocks_served"].get<uint64_t>() == 4 * (1 + kLoads));
  CHECK(counts["bytes_served"].get<uint64_t>() == 4 * (1 + kLoads) * kBlock);
  int status = serve->Stop();
  CHECK(WIFEXITED(status));
  std::filesystem::remove_all(dir);
}

// Speaks the protocol itself: Hello, OpenNamespace, MapLoadIndex; returns the descriptor (or the
// status of the refusal).
Result<int> MapIndexRaw(const std::string& socket, const Namespace& open, const NamespaceId& ask) {
  auto conn = ipc::UnixConnection::Connect(socket);
  if (!conn.ok()) return conn.status();
  auto staging = StagingMapping::Create(1 << 20);
  if (!staging.ok()) return staging.status();
  ipc::Hello hello;
  hello.staging_bytes = 1 << 20;
  STRATA_RETURN_IF_ERROR(conn->Send(ipc::EncodeRequest({1, hello}), staging->fd()));
  std::string reply;
  STRATA_RETURN_IF_ERROR(conn->Receive(&reply));
  STRATA_RETURN_IF_ERROR(
      conn->Send(ipc::EncodeRequest({2, ipc::OpenNamespaceRequest{open.encoding()}})));
  STRATA_RETURN_IF_ERROR(conn->Receive(&reply));
  STRATA_RETURN_IF_ERROR(conn->Send(ipc::EncodeRequest({3, ipc::MapLoadIndexRequest{ask}})));
  int fd = -1;
  STRATA_RETURN_IF_ERROR(conn->Receive(&reply, &fd));
  auto r = ipc::DecodeResponse(std::as_bytes(std::span<const char>(reply)));
  if (!r.ok()) return r.status();
  if (!r->status.ok()) return r->status;
  if (fd < 0) return Status::Internal("no descriptor");
  return fd;
}

TEST_CASE(
    "strata serve: a client cannot write the load index, and a namespace it never opened "
    "gets none",
    "[lib][integration]") {
  const std::string dir = ScratchDir("loadindex-ro");
  const std::string socket = dir + "/s.sock";
  auto serve =
      testing::StartServe({"serve", "--socket", socket, "--no-disk", "--host-pool", "32MiB",
                           "--tenant-uid", "private-team:" + std::to_string(::getuid() + 12345)},
                          socket);
  Namespace ns = Ns("shared-tenant");
  Prompt p(ns, 4, 801, kBlock);
  auto a = Client::Connect(socket);
  REQUIRE(a.ok());
  REQUIRE(*(*a)->Store(ns, p.keys, p.in).Wait() == 4);

  auto fd = MapIndexRaw(socket, ns, ns.id());
  REQUIRE(fd.ok());
  struct stat st {};
  REQUIRE(::fstat(*fd, &st) == 0);
  const size_t bytes = static_cast<size_t>(st.st_size);
  REQUIRE(bytes >= 4096);
  // Read-only: no writable mapping, no upgrade, no read-write reopen, no resize.
  CHECK(::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, *fd, 0) == MAP_FAILED);
  void* ro = ::mmap(nullptr, bytes, PROT_READ, MAP_SHARED, *fd, 0);
  REQUIRE(ro != MAP_FAILED);
  CHECK(::mprotect(ro, bytes, PROT_READ | PROT_WRITE) != 0);
  const int rw = ::open(("/proc/self/fd/" + std::to_string(*fd)).c_str(), O_RDWR);
  if (rw >= 0) {  // root passes the mode check; the seal still refuses a writable mapping
    CHECK(::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, rw, 0) == MAP_FAILED);
    ::close(rw);
  }
  CHECK(::ftruncate(*fd, 0) != 0);
  // What it shows is this tenant's blocks: each of the stored keys is found, in its namespace.
  auto view = store::LoadIndexView::Attach(static_cast<const std::byte*>(ro), bytes);
  REQUIRE(view.ok());
  for (const BlockKey& k : p.keys) {
    store::LoadIndexHit hit;
    CHECK(view->Find(k, ns.id(), &hit));
    CHECK(hit.length == kBlock);
    CHECK(!view->Find(k, Ns("someone-else").id(), &hit));
  }
  ::munmap(ro, bytes);
  ::close(*fd);

  // A namespace of a private tenant this uid is not listed for cannot even be opened, and its
  // segment is refused (as a Load of it would be); root and the daemon's own user may use every
  // tenant, so only a process of another uid sees the refusal (daemon_root_test covers that).
  Namespace priv = Ns("private-team");
  auto refused = MapIndexRaw(socket, priv, priv.id());
  if (::geteuid() != 0) {
    CHECK(refused.status().code() == StatusCode::kPermissionDenied);
  }
  // A namespace id nobody opened: refused whoever asks.
  auto unopened = MapIndexRaw(socket, ns, Ns("never-opened").id());
  CHECK(unopened.status().code() == StatusCode::kPermissionDenied);
  int status = serve->Stop();
  CHECK(WIFEXITED(status));
  std::filesystem::remove_all(dir);
}

TEST_CASE("strata serve: access notices from a client loading through the load index keep a hot "
          "block resident",
          "[lib][integration]") {
  const std::string dir = ScratchDir("loadindex-hot");
  const std::string socket = dir + "/s.sock";
  // LRU: a block read once and never again leaves after a pool's worth of newer blocks, unless
  // the reads through the index reach the policy.
  auto serve = testing::StartServe({"serve", "--socket", socket, "--no-disk", "--host-pool",
                                    "32MiB", "--eviction-policy", "lru"},
                                   socket);
  Namespace ns = Ns();
  Prompt hot(ns, 1, 901, kBlock);
  Prompt cold(ns, 1, 902, kBlock);  // stored at the same time, never read again
  auto c = Client::Connect(socket);
  REQUIRE(c.ok());
  REQUIRE(*(*c)->Store(ns, hot.keys, hot.in).Wait() == 1);
  REQUIRE(*(*c)->Store(ns, cold.keys, cold.in).Wait() == 1);
  Outputs o(1, kBlock);
  REQUIRE(*(*c)->Load(ns, hot.keys, o.out).Wait() == 1);  // maps the slab (IPC)
  // Two pools' worth of one-time blocks, with a read of the hot block through the index (and its
  // notice: StatsOf flushes them) between batches.
  for (uint32_t seed = 1000; seed < 1032; ++seed) {
    REQUIRE(*(*c)->Load(ns, hot.keys, o.out).Wait() == 1);
    REQUIRE(o.bufs[0] == hot.blocks[0]);
    (void)StatsOf(**c);
    Prompt filler(ns, 32, seed, kBlock);
    REQUIRE((*c)->Store(ns, filler.keys, filler.in).Wait().ok());
  }
  auto j = StatsOf(**c);
  CHECK(j["host"]["evictions"].get<uint64_t>() >= 512);
  CHECK(j["load_index"]["noticed_blocks"].get<uint64_t>() >= 32);
  CHECK((*c)->Lookup(hot.keys)->matched_blocks == 1);
  CHECK((*c)->Lookup(cold.keys)->matched_blocks == 0);
  int status = serve->Stop();
  CHECK(WIFEXITED(status));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace strata
