// `strata demo`: Strata's main job on an embedded single-node default. Starts `strata serve` with
// its defaults (host pool sized from free memory, disk tier under ./strata-data), then acts as a
// serving engine through the client API: replays a Mooncake-format production trace (default:
// the one in tests/data/), and for each request keys the prompt, looks it up, loads the cached
// prefix's KV (verifying every byte), and stores the KV of the blocks it had to "compute" —
// synthetic KV of a stated model shape, derived from the block key so that every load can be
// checked. Prints per-request lookups, hit ratio and throughput, then stops the daemon cleanly.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <memory>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "../bench/mooncake_trace.h"
#include "command_registry.h"
#include "serve_process.h"
#include "strata/client.h"
#include "strata/key_chain.h"

namespace strata::cli {
namespace {

using Clock = std::chrono::steady_clock;

struct DemoOptions {
  std::string trace = bench::DefaultTracePath();
  size_t max_requests = 40;
  size_t show = 8;
  bool json = false;
  std::string data_dir = "./strata-data";
  std::string host_pool;  // empty: the daemon's default (a quarter of free memory)
};

// The model shape whose KV the demo moves: Qwen2.5-0.5B (24 layers, 2 KV heads, head dim 64) with
// an FP8 KV cache (vLLM's kv_cache_dtype=fp8): 6 KiB per token, 96 KiB per 16-token block.
NamespaceSpec DemoNamespace() {
  NamespaceSpec s;
  s.model_id = "Qwen/Qwen2.5-0.5B-Instruct";
  s.kv_dtype = KvDtype::kFloat8E4M3;
  s.num_layers = 24;
  s.num_kv_heads = 2;
  s.head_dim = 64;
  s.block_size = 16;
  return s;
}

// Deterministic stand-in for the KV an engine computed for `key`.
void FillKv(const BlockKey& key, std::byte* out, size_t n) {
  uint64_t x = key.low ^ key.high;
  for (size_t i = 0; i + 8 <= n; i += 8) {
    x += 0x9e3779b97f4a7c15ULL;
    uint64_t z = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z ^= z >> 27;
    std::memcpy(out + i, &z, 8);
  }
}

// The daemon the demo replays through, up; stopped by its destructor if the demo fails.
std::unique_ptr<ServeProcess> StartDaemon(const DemoOptions& opt, const std::string& dir) {
  ServeOptions o;
  o.socket = dir + "/strata.sock";
  o.args = {"serve", "--socket", o.socket, "--data-dir", opt.data_dir};
  if (!opt.host_pool.empty()) {
    o.args.push_back("--host-pool");
    o.args.push_back(opt.host_pool);
  }
  o.start_timeout = std::chrono::seconds(30);
  auto daemon = SpawnServe(std::move(o));
  if (!daemon.ok()) Fail(daemon.status().message());
  return std::move(daemon).value();
}

void RunDemo(const DemoOptions& opt) {
  auto trace = bench::ReadMooncakeTrace(opt.trace);
  if (!trace.ok()) Fail(trace.status().ToString());
  auto ns_result = Namespace::Create(DemoNamespace());
  if (!ns_result.ok()) Fail(ns_result.status().ToString());
  const Namespace ns = std::move(ns_result).value();
  const size_t n = opt.max_requests && opt.max_requests < trace->size() ? opt.max_requests
                                                                         : trace->size();
  const size_t block_bytes = ns.block_bytes();

  const std::string dir = std::filesystem::temp_directory_path() /
                          ("strata-demo-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::unique_ptr<ServeProcess> daemon = StartDaemon(opt, dir);
  auto client = Client::Connect(daemon->socket());
  if (!client.ok()) Fail(client.status().ToString());
  if (!opt.json)
    std::cout << fmt::format(
        "strata demo: replaying {} requests of {} through `strata serve` ({})\n"
        "model shape {} ({} layers, {} KV heads, head dim {}, {}): {} KiB of KV per {}-token "
        "block\n",
        n, opt.trace, daemon->socket(), ns.spec().model_id, ns.spec().num_layers,
        ns.spec().num_kv_heads, ns.spec().head_dim, KvDtypeName(ns.spec().kv_dtype),
        block_bytes >> 10, ns.block_size());

  uint64_t requested = 0, hit = 0, stored_blocks = 0, loaded_blocks = 0, bad = 0, tokens_total = 0;
  double t_lookup = 0, t_load = 0, t_store = 0;
  std::vector<std::byte> arena;
  std::vector<std::byte> expect(block_bytes);
  const auto start = Clock::now();
  for (size_t r = 0; r < n; ++r) {
    std::vector<uint32_t> tokens = bench::SynthesizeTokens((*trace)[r]);
    tokens_total += tokens.size();
    auto t0 = Clock::now();
    auto look = (*client)->Lookup(ns, tokens);
    auto t1 = Clock::now();
    if (!look.ok()) Fail(look.status().ToString());
    const std::vector<BlockKey>& keys = look->keys;
    const size_t matched = look->matched_blocks;
    arena.resize(keys.size() * block_bytes);
    // Load the cached prefix into the engine's buffers.
    std::vector<MutableBuffer> out;
    for (size_t i = 0; i < matched; ++i) out.push_back({arena.data() + i * block_bytes, block_bytes});
    auto loaded =
        (*client)->Load(ns, std::span<const BlockKey>(keys).first(matched), out).Wait();
    auto t2 = Clock::now();
    if (!loaded.ok()) Fail(loaded.status().ToString());
    for (size_t i = 0; i < *loaded; ++i) {
      FillKv(keys[i], expect.data(), block_bytes);
      if (std::memcmp(expect.data(), arena.data() + i * block_bytes, block_bytes) != 0) ++bad;
    }
    // "Compute" the rest and store it.
    std::vector<ConstBuffer> in;
    for (size_t i = *loaded; i < keys.size(); ++i) {
      FillKv(keys[i], arena.data() + i * block_bytes, block_bytes);
      in.push_back({arena.data() + i * block_bytes, block_bytes});
    }
    auto t3 = Clock::now();
    auto stored = (*client)->Store(ns, std::span<const BlockKey>(keys).subspan(*loaded), in).Wait();
    auto t4 = Clock::now();
    if (!stored.ok()) Fail(stored.status().ToString());
    t_lookup += std::chrono::duration<double>(t1 - t0).count();
    t_load += std::chrono::duration<double>(t2 - t1).count();
    t_store += std::chrono::duration<double>(t4 - t3).count();
    requested += keys.size();
    hit += *loaded;
    loaded_blocks += *loaded;
    stored_blocks += *stored;
    if (!opt.json && r < opt.show)
      std::cout << fmt::format("  request {:>4}: {:>6} tokens, {:>5} blocks, {:>5} cached ({:>3.0f}%)"
                               ", {} stored\n",
                               r, tokens.size(), keys.size(), *loaded,
                               keys.empty() ? 0.0 : 100.0 * *loaded / keys.size(), *stored);
  }
  const double wall = std::chrono::duration<double>(Clock::now() - start).count();
  auto stats = (*client)->Stats();
  client->reset();

  const int status = daemon->Stop(SIGTERM);
  std::filesystem::remove_all(dir);
  const bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;

  const double gb = 1e9;
  nlohmann::json out = {
      {"requests", n},
      {"tokens", tokens_total},
      {"model", ns.spec().model_id},
      {"block_bytes", block_bytes},
      {"requested_blocks", requested},
      {"hit_blocks", hit},
      {"prefix_hit_ratio", requested ? double(hit) / requested : 0},
      {"stored_blocks", stored_blocks},
      {"load_GBps", t_load > 0 ? loaded_blocks * block_bytes / t_load / gb : 0},
      {"store_GBps", t_store > 0 ? stored_blocks * block_bytes / t_store / gb : 0},
      {"lookup_us_per_request", n ? t_lookup / n * 1e6 : 0},
      {"verify_failures", bad},
      {"wall_s", wall},
      {"daemon_clean_exit", clean}};
  if (stats.ok()) out["daemon_stats"] = nlohmann::json::parse(*stats);
  if (opt.json) {
    std::cout << out.dump() << "\n";
  } else {
    std::cout << fmt::format(
        "totals: {} requests, {} tokens, {} blocks requested, {} served from the cache "
        "(prefix hit ratio {:.3f})\n"
        "        {} blocks stored ({:.2f} GB, {:.2f} GB/s), {} loaded ({:.2f} GB, {:.2f} GB/s, every "
        "byte verified: {} mismatches), lookup {:.0f} us/request, {:.1f} s in all\n"
        "daemon stopped {}\n",
        n, tokens_total, requested, hit, requested ? double(hit) / requested : 0.0, stored_blocks,
        stored_blocks * block_bytes / gb, out["store_GBps"].get<double>(), loaded_blocks,
        loaded_blocks * block_bytes / gb, out["load_GBps"].get<double>(), bad,
        out["lookup_us_per_request"].get<double>(), wall,
        clean ? "cleanly (SIGTERM, disk tier flushed)" : "with an error");
  }
  if (bad != 0 || !clean) Fail("demo failed: verification mismatches or unclean daemon exit");
}

[[maybe_unused]] const bool kRegistered = RegisterCommand("", [](CLI::App& parent) {
  auto opt = std::make_shared<DemoOptions>();
  auto* cmd = parent.add_subcommand(
      "demo", "Start a single-node daemon and replay a production trace through the client API");
  cmd->add_option("--trace", opt->trace, "Mooncake-format trace (JSON lines)")->capture_default_str();
  cmd->add_option("--requests", opt->max_requests, "Replay this many requests (0: all)")
      ->capture_default_str();
  cmd->add_option("--show", opt->show, "Print the first N requests")->capture_default_str();
  cmd->add_option("--data-dir", opt->data_dir, "Disk tier directory of the daemon")
      ->capture_default_str();
  cmd->add_option("--host-pool", opt->host_pool, "Host pool size (default: from free memory)");
  cmd->add_flag("--json", opt->json, "Print the totals as one JSON object");
  cmd->callback([opt] { RunDemo(*opt); });
});

}  // namespace
}  // namespace strata::cli
