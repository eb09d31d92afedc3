// `strata bench client`: store + load through a real `strata serve`, beside two baselines run in
// the same benchmark with the same value sizes and the same number of client processes:
//  - memcpy: each process copies its payloads into a buffer and back out (what store + load must
//    at least do: one copy in, one copy out);
//  - redis: a `redis-server` (Debian) started by the benchmark on a Unix socket, persistence off,
//    driven with SET then GET of the same values through hiredis — the remote backend LMCache users
//    deploy.
// Metric: payload GB/s of store + load (bytes stored + bytes loaded per second, all processes);
// `store/...` rows: the stores alone (only the Store calls timed) beside one memcpy of the same
// payloads into a buffer, timed the same way; `load/...` rows: loads alone of blocks stored and
// loaded once before (host-tier hits, through the load index: the pool's pages already mapped)
// beside one memcpy of the same payloads out of a buffer.
#include <sys/wait.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <thread>
#include <type_traits>

#include "../strata/command_registry.h"
#include "../strata/serve_process.h"
#include "bench_report.h"
#include "client/copy_threads.h"
#include "core/checksum_copy.h"
#include "strata/client.h"
#include "strata/key_chain.h"

namespace strata::bench {
namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  bool json = false;
  double seconds = 1.5;  // per case and system
  std::vector<int> clients = {1, 4};
  std::vector<std::string> cases = {"store_load", "store", "load"};
  bool Has(const std::string& c) const {
    return std::find(cases.begin(), cases.end(), c) != cases.end();
  }
};

struct Case {
  size_t block_bytes;
  size_t blocks;  // per process and round
};

// One namespace per process and block size: no case finds another case's keys, even without the
// per-round Clear.
Namespace BenchNamespace(int process, size_t block_bytes) {
  NamespaceSpec s;
  s.model_id = "bench/client";
  s.num_layers = 1;
  s.num_kv_heads = 1;
  s.head_dim = 64;
  // One block of bf16 K and V holds 2 x 64 x 2 = 256 bytes per token: size the block in tokens so
  // that a block is exactly block_bytes (stores refuse buffers of another size).
  s.block_size = static_cast<uint32_t>(block_bytes / 256);
  s.tenant_salt = "p" + std::to_string(process) + "/b" + std::to_string(block_bytes);
  return std::move(Namespace::Create(s)).value();
}

// What a body that times itself returns: bytes moved (-1: failed) in `seconds` of timed work.
struct Timed {
  double bytes;
  double seconds;
};

// One untimed pass of `pass` (warms caches and page tables), then passes timed until `seconds`
// have gone by: the memcpy baselines' loop.
template <typename Pass>
Timed TimePasses(Pass&& pass, double bytes_per_pass, double seconds) {
  pass();
  double bytes = 0, timed = 0;
  while (timed < seconds) {
    const auto start = Clock::now();
    pass();
    timed += std::chrono::duration<double>(Clock::now() - start).count();
    bytes += bytes_per_pass;
  }
  return {bytes, timed};
}

// Runs `body(process)` in `n` forked processes after a common start, returns payload bytes moved
// by all of them divided by the slowest one's wall time. Each body returns its byte count, or -1;
// or a Timed, whose seconds are used instead of the body's wall time.
template <typename Body>
double RunProcesses(int n, Body&& body) {
  int go[2], results[2];
  if (::pipe(go) != 0 || ::pipe(results) != 0) cli::Fail("pipe failed");
  std::vector<pid_t> pids;
  for (int p = 0; p < n; ++p) {
    pid_t pid = ::fork();
    if (pid < 0) cli::Fail("fork failed");
    if (pid == 0) {
      ::close(go[1]);
      char c;
      if (::read(go[0], &c, 1) != 1) _exit(2);
      auto start = Clock::now();
      double bytes = 0, secs = 0;
      if constexpr (std::is_same_v<decltype(body(p)), Timed>) {
        const Timed t = body(p);  // the body timed only what it measures
        bytes = t.bytes;
        secs = t.seconds;
      } else {
        bytes = body(p);
        secs = std::chrono::duration<double>(Clock::now() - start).count();
      }
      double msg[2] = {bytes, secs};
      (void)!::write(results[1], msg, sizeof(msg));
      _exit(bytes < 0 ? 1 : 0);
    }
    pids.push_back(pid);
  }
  ::close(go[0]);
  std::string release(n, 'g');
  (void)!::write(go[1], release.data(), release.size());
  ::close(go[1]);
  double total = 0, slowest = 0;
  bool failed = false;
  for (int p = 0; p < n; ++p) {
    double msg[2];
    if (::read(results[0], msg, sizeof(msg)) != sizeof(msg)) failed = true;
    else {
      if (msg[0] < 0) failed = true;
      total += msg[0];
      slowest = std::max(slowest, msg[1]);
    }
  }
  for (pid_t pid : pids) ::waitpid(pid, nullptr, 0);
  ::close(results[0]);
  ::close(results[1]);
  if (failed || slowest <= 0) cli::Fail("a benchmark client process failed");
  return total / slowest / 1e9;
}

std::vector<std::byte> Payload(size_t n, int seed) {
  std::vector<std::byte> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<std::byte>((i * 131 + seed) & 0xFF);
  return v;
}

// The daemon populates its pool in the background after it starts listening; time nothing
// before that is over (its page faults and zeroing would be charged to the first case).
void WaitPoolPopulated(const std::string& socket) {
  auto client = Client::Connect(socket);
  if (!client.ok()) cli::Fail("strata serve: " + client.status().ToString());
  const auto deadline = Clock::now() + std::chrono::seconds(120);
  while (Clock::now() < deadline) {
    auto stats = (*client)->Stats();
    if (!stats.ok()) cli::Fail("strata serve stats: " + stats.status().ToString());
    const auto j = nlohmann::json::parse(*stats);
    if (!j.value("pool_populating", false)) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::fprintf(stderr,
               "strata bench client: the pool was not populated after 120 s; timing anyway\n");
}

double StrataRun(const std::string& socket, const Case& c, int process, double seconds) {
  auto client = Client::Connect(socket);
  if (!client.ok()) return -1;
  Namespace ns = BenchNamespace(process, c.block_bytes);
  std::vector<std::vector<std::byte>> in, out;
  std::vector<ConstBuffer> ins;
  std::vector<MutableBuffer> outs;
  for (size_t i = 0; i < c.blocks; ++i) {
    in.push_back(Payload(c.block_bytes, process + int(i)));
    out.emplace_back(c.block_bytes);
    ins.push_back({in.back().data(), c.block_bytes});
    outs.push_back({out.back().data(), c.block_bytes});
  }
  double bytes = 0;
  const auto start = Clock::now();
  for (uint32_t round = 0; std::chrono::duration<double>(Clock::now() - start).count() < seconds;
       ++round) {
    std::vector<uint32_t> tokens(c.blocks * ns.block_size());
    for (size_t t = 0; t < tokens.size(); ++t) tokens[t] = round * 7919 + t;
    std::vector<BlockKey> keys = ComputeBlockKeys(ns, tokens);
    auto stored = (*client)->Store(ns, keys, ins).Wait();
    auto loaded = (*client)->Load(ns, keys, outs).Wait();
    if (!stored.ok() || !loaded.ok() || *loaded != c.blocks) return -1;
    bytes += 2.0 * c.blocks * c.block_bytes;
    if (!(*client)->Clear(ns.id()).ok()) return -1;
  }
  return out[0] == in[0] ? bytes : -1;
}

// Stores alone (the store path of issue 14): only the Store calls are timed; each round's blocks
// are cleared, untimed, before the next round stores new keys.
Timed StrataStoreRun(const std::string& socket, const Case& c, int process, double seconds) {
  auto client = Client::Connect(socket);
  if (!client.ok()) return {-1, 0};
  Namespace ns = BenchNamespace(process, c.block_bytes);
  std::vector<std::vector<std::byte>> in;
  std::vector<ConstBuffer> ins;
  for (size_t i = 0; i < c.blocks; ++i) {
    in.push_back(Payload(c.block_bytes, process + int(i)));
    ins.push_back({in.back().data(), c.block_bytes});
  }
  double bytes = 0, timed = 0;
  for (uint32_t round = 0; timed < seconds; ++round) {
    std::vector<uint32_t> tokens(c.blocks * ns.block_size());
    for (size_t t = 0; t < tokens.size(); ++t) tokens[t] = round * 7919 + t;
    std::vector<BlockKey> keys = ComputeBlockKeys(ns, tokens);
    const auto start = Clock::now();
    auto stored = (*client)->Store(ns, keys, ins).Wait();
    timed += std::chrono::duration<double>(Clock::now() - start).count();
    if (!stored.ok() || *stored != c.blocks) return {-1, 0};
    bytes += double(c.blocks) * c.block_bytes;
    if (!(*client)->Clear(ns.id()).ok()) return {-1, 0};
  }
  return {bytes, timed};
}

// The baselines' buffers: page-aligned, as the pool's slots and the client's staging are. Not heap
// vectors: glibc (2.36 here) copies 64 KiB with `rep movsb`, which on AMD Zen runs at a third of
// its speed when (dst - src) mod 4096 is a few bytes (glibc BZ 30994), and heap chunks of 64 KiB
// allocated in turn lie 64 KiB + 16 bytes apart: the baseline read 1.3-2.1 GB/s instead of 4-5
// (docs/benchmarks.md, "The 64 KiB memcpy baseline read low").
class PageBuffers {
 public:
  PageBuffers(size_t count, size_t bytes) {
    const size_t stride = (bytes + 4095) / 4096 * 4096;
    for (size_t i = 0; i < count; ++i) {
      auto* p = static_cast<std::byte*>(std::aligned_alloc(4096, stride));
      if (p == nullptr) cli::Fail("out of memory for the memcpy baseline");
      std::memset(p, 1, bytes);  // faulted in before anything is timed
      buffers_.emplace_back(p);
    }
  }
  std::byte* operator[](size_t i) { return buffers_[i].get(); }

 private:
  struct Free {
    void operator()(std::byte* p) const { std::free(p); }
  };
  std::vector<std::unique_ptr<std::byte, Free>> buffers_;
};

// Payload(process + i) in page-aligned buffers.
PageBuffers PagePayloads(const Case& c, int process) {
  PageBuffers in(c.blocks, c.block_bytes);
  for (size_t i = 0; i < c.blocks; ++i) {
    const auto p = Payload(c.block_bytes, process + int(i));
    std::memcpy(in[i], p.data(), c.block_bytes);
  }
  return in;
}

// The store's baseline: one memcpy of each payload into a buffer of the same size ("the pool"),
// on one thread (helpers = 0: the yardstick) or split by payloads over the calling thread
// and `helpers` copy threads (as many as the daemon copies a cross-memory store with,
// CopyThreads::DefaultHelpers(): the physical bound of a copy on that many cores). One untimed
// pass first, as Strata's first round warms its side (caches, TLB, the copy threads).
Timed MemcpyStoreRun(const Case& c, int process, double seconds, int helpers = 0) {
  PageBuffers in = PagePayloads(c, process), pool(c.blocks, c.block_bytes);
  CopyThreads threads(helpers);
  auto pass = [&] {
    threads.ParallelFor(c.blocks, 1, [&](size_t b, size_t e) {
      for (size_t i = b; i < e; ++i) std::memcpy(pool[i], in[i], c.block_bytes);
    });
    DoNotOptimize(pool[0][0]);
  };
  return TimePasses(pass, double(c.blocks) * c.block_bytes, seconds);
}

// Loads alone: the blocks are stored and loaded once untimed (the client maps their slabs and
// faults their pages in), then loaded again and again into page-aligned buffers, only the Load
// calls timed.
Timed StrataLoadRun(const std::string& socket, const Case& c, int process, double seconds) {
  auto client = Client::Connect(socket);
  if (!client.ok()) return {-1, 0};
  Namespace ns = BenchNamespace(process, c.block_bytes);
  std::vector<std::vector<std::byte>> in;
  std::vector<ConstBuffer> ins;
  PageBuffers out(c.blocks, c.block_bytes);
  std::vector<MutableBuffer> outs;
  for (size_t i = 0; i < c.blocks; ++i) {
    in.push_back(Payload(c.block_bytes, process + int(i)));
    ins.push_back({in.back().data(), c.block_bytes});
    outs.push_back({out[i], c.block_bytes});
  }
  std::vector<uint32_t> tokens(c.blocks * ns.block_size());
  for (size_t t = 0; t < tokens.size(); ++t) tokens[t] = 104729 + t;
  const std::vector<BlockKey> keys = ComputeBlockKeys(ns, tokens);
  auto stored = (*client)->Store(ns, keys, ins).Wait();
  auto first = (*client)->Load(ns, keys, outs).Wait();
  if (!stored.ok() || !first.ok() || *first != c.blocks) return {-1, 0};
  double bytes = 0, timed = 0;
  while (timed < seconds) {
    const auto start = Clock::now();
    auto loaded = (*client)->Load(ns, keys, outs).Wait();
    timed += std::chrono::duration<double>(Clock::now() - start).count();
    if (!loaded.ok() || *loaded != c.blocks) return {-1, 0};
    bytes += double(c.blocks) * c.block_bytes;
  }
  const bool same = std::memcmp(out[c.blocks - 1], in.back().data(), c.block_bytes) == 0;
  if (!(*client)->Clear(ns.id()).ok() || !same) return {-1, 0};
  return {bytes, timed};
}

// The load's baselines: one copy of each payload out of a buffer ("the pool") into another,
// after one untimed pass, timed as StrataLoadRun: memcpy, or with `stream` the non-temporal copy
// a load makes without verify_loads (StreamCopy: glibc's memcpy writes these sizes with ordinary
// stores, each destination line first read; a destination out of cache then costs it a third pass
// over memory, and the fused copy-and-hash read faster than memcpy: docs/benchmarks.md).
Timed MemcpyLoadRun(const Case& c, int process, double seconds, bool stream = false) {
  PageBuffers pool = PagePayloads(c, process), out(c.blocks, c.block_bytes);
  auto pass = [&] {
    for (size_t i = 0; i < c.blocks; ++i) {
      if (stream) StreamCopy(out[i], pool[i], c.block_bytes);
      else std::memcpy(out[i], pool[i], c.block_bytes);
    }
    DoNotOptimize(out[0][0]);
  };
  return TimePasses(pass, double(c.blocks) * c.block_bytes, seconds);
}

double MemcpyRun(const Case& c, int process, double seconds) {
  PageBuffers in = PagePayloads(c, process), pool(c.blocks, c.block_bytes),
              out(c.blocks, c.block_bytes);
  auto pass = [&] {
    for (size_t i = 0; i < c.blocks; ++i) std::memcpy(pool[i], in[i], c.block_bytes);
    for (size_t i = 0; i < c.blocks; ++i) std::memcpy(out[i], pool[i], c.block_bytes);
    DoNotOptimize(out[0][0]);
  };
  pass();  // untimed, as above
  double bytes = 0;
  const auto start = Clock::now();
  while (std::chrono::duration<double>(Clock::now() - start).count() < seconds) {
    pass();
    bytes += 2.0 * c.blocks * c.block_bytes;
  }
  return std::memcmp(out[0], in[0], c.block_bytes) == 0 ? bytes : -1;
}

double RedisRun(const std::string& socket, const Case& c, int process, double seconds) {
  redisContext* ctx = redisConnectUnix(socket.c_str());
  if (ctx == nullptr || ctx->err) return -1;
  std::vector<std::vector<std::byte>> in;
  for (size_t i = 0; i < c.blocks; ++i) in.push_back(Payload(c.block_bytes, process + int(i)));
  std::vector<std::byte> out(c.block_bytes);
  double bytes = 0;
  bool ok = true;
  const auto start = Clock::now();
  for (uint32_t round = 0;
       ok && std::chrono::duration<double>(Clock::now() - start).count() < seconds; ++round) {
    for (size_t i = 0; i < c.blocks && ok; ++i) {
      std::string key = "p" + std::to_string(process) + ":" + std::to_string(round) + ":" +
                        std::to_string(i);
      auto* r = static_cast<redisReply*>(redisCommand(ctx, "SET %b %b", key.data(), key.size(),
                                                      in[i].data(), in[i].size()));
      ok = r != nullptr && r->type == REDIS_REPLY_STATUS;
      freeReplyObject(r);
    }
    for (size_t i = 0; i < c.blocks && ok; ++i) {
      std::string key = "p" + std::to_string(process) + ":" + std::to_string(round) + ":" +
                        std::to_string(i);
      auto* r = static_cast<redisReply*>(redisCommand(ctx, "GET %b", key.data(), key.size()));
      ok = r != nullptr && r->type == REDIS_REPLY_STRING && size_t(r->len) == c.block_bytes;
      if (ok) std::memcpy(out.data(), r->str, r->len);  // into the engine's buffer, as a load must
      freeReplyObject(r);
    }
    for (size_t i = 0; i < c.blocks && ok; ++i) {
      std::string key = "p" + std::to_string(process) + ":" + std::to_string(round) + ":" +
                        std::to_string(i);
      freeReplyObject(redisCommand(ctx, "DEL %b", key.data(), key.size()));
    }
    bytes += 2.0 * c.blocks * c.block_bytes;
  }
  redisFree(ctx);
  return ok ? bytes : -1;
}

// The servers the benchmark started; stopped however Run ends (cli::Fail throws), so a failed
// run leaves no daemon behind holding the caller's pipes open. Their output goes to stderr:
// stdout carries only the JSON lines.
struct Servers {
  std::string dir;
  std::unique_ptr<cli::ServeProcess> serve, redis;
  ~Servers() {
    serve.reset();
    redis.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
};

std::unique_ptr<cli::ServeProcess> SpawnOrFail(cli::ServeOptions options) {
  auto server = cli::SpawnServe(std::move(options));
  if (!server.ok()) cli::Fail(server.status().message());
  return std::move(server).value();
}

void Run(const Options& opt) {
  BenchReport report("client", opt.json);
  Servers servers;
  servers.dir = std::filesystem::temp_directory_path() /
                ("strata-bench-client-" + std::to_string(::getpid()));
  const std::string& dir = servers.dir;
  std::filesystem::create_directories(dir);
  const std::string strata_sock = dir + "/strata.sock", redis_sock = dir + "/redis.sock";
  cli::ServeOptions serve;
  serve.socket = strata_sock;
  serve.args = {"serve", "--socket", strata_sock, "--no-disk", "--host-pool", "1GiB"};
  servers.serve = SpawnOrFail(std::move(serve));
  WaitPoolPopulated(strata_sock);
  cli::ServeOptions redis;
  redis.name = redis.exe = "redis-server";
  redis.socket = redis_sock;
  redis.args = {"--port",       "0",  "--unixsocket", redis_sock, "--save",     "",
                "--appendonly", "no", "--dir",        dir,        "--loglevel", "warning"};
  servers.redis = SpawnOrFail(std::move(redis));

  const Case cases[] = {{size_t{64} << 10, 256}, {size_t{2} << 20, 16}};
  for (const Case& c : cases) {
    const std::string size = c.block_bytes == (64u << 10) ? "64KiB" : "2MiB";
    for (int clients : opt.clients) {
      nlohmann::json extra = {{"block_bytes", c.block_bytes}, {"clients", clients}};
      if (opt.Has("load")) {
        const std::string load_name = "load/" + size + "/clients=" + std::to_string(clients);
        const double load = RunProcesses(clients, [&](int p) {
          return StrataLoadRun(strata_sock, c, p, opt.seconds);
        });
        const double load_memcpy =
            RunProcesses(clients, [&](int p) { return MemcpyLoadRun(c, p, opt.seconds); });
        report.Add({load_name, "GB/s", load, "memcpy", load_memcpy, true, extra});
        const double load_stream = RunProcesses(
            clients, [&](int p) { return MemcpyLoadRun(c, p, opt.seconds, /*stream=*/true); });
        report.Add({load_name, "GB/s", load, "stream_copy", load_stream, true, extra});
      }
      if (opt.Has("store_load")) {
        const std::string name = "store_load/" + size + "/clients=" + std::to_string(clients);
        double strata = RunProcesses(clients, [&](int p) {
          return StrataRun(strata_sock, c, p, opt.seconds);
        });
        double memcpy_gbps =
            RunProcesses(clients, [&](int p) { return MemcpyRun(c, p, opt.seconds); });
        double redis_gbps = RunProcesses(clients, [&](int p) {
          return RedisRun(redis_sock, c, p, opt.seconds);
        });
        report.Add({name, "GB/s", strata, "memcpy", memcpy_gbps, true, extra});
        report.Add({name, "GB/s", strata, "redis", redis_gbps, true, extra});
      }
      if (!opt.Has("store")) continue;
      // The store alone, beside one memcpy of the same payloads (issue 14's >= 0.7 goal).
      const std::string store_name = "store/" + size + "/clients=" + std::to_string(clients);
      const double store = RunProcesses(clients, [&](int p) {
        return StrataStoreRun(strata_sock, c, p, opt.seconds);
      });
      const double store_memcpy =
          RunProcesses(clients, [&](int p) { return MemcpyStoreRun(c, p, opt.seconds); });
      report.Add({store_name, "GB/s", store, "memcpy", store_memcpy, true, extra});
      const int threads = CopyThreads::DefaultHelpers() + 1;
      if (threads > 1) {
        const double split = RunProcesses(
            clients, [&](int p) { return MemcpyStoreRun(c, p, opt.seconds, threads - 1); });
        report.Add({store_name, "GB/s", store, "memcpy_" + std::to_string(threads) + "threads",
                    split, true, extra});
      }
    }
  }
}

[[maybe_unused]] const bool kRegistered = cli::RegisterCommand("bench", [](CLI::App& parent) {
  auto opt = std::make_shared<Options>();
  auto* cmd = parent.add_subcommand(
      "client", "Store+load through strata serve vs memcpy and redis-server, 1 and 4 clients");
  AddJsonFlag(*cmd, opt->json);
  cmd->add_option("--seconds", opt->seconds, "Seconds per case and system")->capture_default_str();
  cmd->add_option("--clients", opt->clients, "Client process counts")->capture_default_str();
  cmd->add_option("--cases", opt->cases, "Cases: store_load, store, load")
      ->capture_default_str()
      ->check(CLI::IsMember({"store_load", "store", "load"}));
  cmd->callback([opt] { Run(*opt); });
});

}  // namespace
}  // namespace strata::bench
