// `strata demo`: Strata's main job on one node. Starts `strata serve` with a small host pool and a
// small disk tier (so that eviction and the disk tier take part), then acts as a serving engine
// through the client API: replays the whole shipped Mooncake trace (3,993 requests, 512-token
// blocks, long-range prefix reuse), and for each request keys the prompt, looks it up, loads the
// cached prefix's KV (verifying every byte) and stores the KV of the blocks it had to "compute":
// synthetic KV of a small stated model shape, derived from the block key so that every load can be
// checked. It then replays the same request block sequence through the project's policy
// simulators (bench/policy_replay.h: LRU and the offline optimum, Belady) at the daemon's capacity,
// stops the daemon (the shutdown flush included), removes the data directory it created, and
// prints a summary whose times cover the whole process.
//
// Output: a progress line rewritten in place on a terminal, whole flushed lines when piped; a line
// before every step that can take more than a moment; --json prints one object at the end instead.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <system_error>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "../bench/mooncake_trace.h"
#include "../bench/policy_replay.h"
#include "command_registry.h"
#include "run_clock.h"
#include "serve_process.h"
#include "strata/client.h"

namespace strata::cli {
namespace {

using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

constexpr const char* kTraceName = "mooncake_synthetic_trace.jsonl";

struct DemoOptions {
  std::string trace;                // empty: the shipped trace (ShippedTracePath)
  std::optional<int64_t> requests;  // unset: every request of the trace
  bool json = false;
  std::string data_dir = "./strata-data";
  bool keep_data = false;
  std::string host_pool = "256MiB";
  std::string disk = "256MiB";
  double prefill_tokens_per_s = 10000;
};

// The trace installed or built next to this binary: <exe dir>/../share/strata/ (CMake's build
// tree and `cmake --install`), else <exe dir>/ (Meson's build tree). Empty when neither exists.
std::string ShippedTracePath() {
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (ec) return "";
  const fs::path dir = exe.parent_path();
  for (const fs::path& p : {dir / ".." / "share" / "strata" / kTraceName, dir / kTraceName})
    if (fs::is_regular_file(p, ec)) return fs::weakly_canonical(p, ec).string();
  return "";
}

// The model shape whose KV the demo moves: a small one, so that the whole trace replays in well
// under a minute on a laptop: 2 layers, 1 KV head, head dim 32, FP8 KV: 128 bytes per token, 64 KiB
// per 512-token block (one block per trace hash id). A real 8B model moves 1,000x that per token.
NamespaceSpec DemoNamespace() {
  NamespaceSpec s;
  s.model_id = "strata-demo/tiny-2L-1kvh-d32";
  s.kv_dtype = KvDtype::kFloat8E4M3;
  s.num_layers = 2;
  s.num_kv_heads = 1;
  s.head_dim = 32;
  s.block_size = bench::kMooncakeBlockTokens;
  return s;
}

// Deterministic stand-in for the KV an engine computed for `key`: word i is low ^ (i * odd(high)),
// different for every key and position, cheap enough to regenerate for every load's check.
// REQUIRES: n is a multiple of 8.
void FillKv(const BlockKey& key, std::byte* out, size_t n) {
  const uint64_t step = key.high | 1;
  for (size_t i = 0; i < n / 8; ++i) {
    const uint64_t w = key.low ^ (i * step);
    std::memcpy(out + i * 8, &w, 8);
  }
}

// True when `data` is what FillKv writes for `key`.
bool KvMatches(const BlockKey& key, const std::byte* data, size_t n) {
  const uint64_t step = key.high | 1;
  uint64_t diff = 0;
  for (size_t i = 0; i < n / 8; ++i) {
    uint64_t w;
    std::memcpy(&w, data + i * 8, 8);
    diff |= w ^ (key.low ^ (i * step));
  }
  return diff == 0;
}

// Removes the data directory on scope exit (success or failure) when the demo created it and was
// not asked to keep it. Declared before the daemon, so the daemon has stopped when it runs.
class DataDirGuard {
 public:
  DataDirGuard(std::string path, bool keep)
      : path_(std::move(path)), remove_(!keep && !fs::exists(path_)) {}
  ~DataDirGuard() { Remove(); }
  DataDirGuard(const DataDirGuard&) = delete;
  DataDirGuard& operator=(const DataDirGuard&) = delete;
  bool will_remove() const { return remove_; }
  // Removes it now; returns the bytes it held (0 when it is kept).
  uint64_t Remove() {
    if (!remove_) return 0;
    remove_ = false;
    std::error_code ec;
    uint64_t bytes = 0;
    for (auto it = fs::recursive_directory_iterator(path_, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      std::error_code size_ec;
      if (it->is_regular_file(size_ec)) bytes += it->file_size(size_ec);
    }
    fs::remove_all(path_, ec);
    return bytes;
  }

 private:
  const std::string path_;
  bool remove_;
};

// Prints a line at once, also when stdout is a pipe. Nothing in --json mode.
class Say {
 public:
  explicit Say(bool quiet) : quiet_(quiet) {}
  template <typename... Args>
  void operator()(fmt::format_string<Args...> f, Args&&... args) const {
    if (quiet_) return;
    fmt::print(stdout, f, std::forward<Args>(args)...);
    std::fputc('\n', stdout);
    std::fflush(stdout);
  }

 private:
  const bool quiet_;
};

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

uint64_t JsonU64(const nlohmann::json& j, std::initializer_list<const char*> path) {
  const nlohmann::json* p = &j;
  for (const char* k : path) {
    if (!p->is_object() || !p->contains(k)) return 0;
    p = &(*p)[k];
  }
  return p->is_number() ? p->get<uint64_t>() : 0;
}

// Totals of the replay loop.
struct ReplayTotals {
  uint64_t requests = 0, prompt_tokens = 0, requested = 0, loaded = 0, stored = 0, bad = 0;
  double t_lookup = 0, t_load = 0, t_store = 0, t_kv = 0;  // seconds; t_kv: fill and verify
  bench::Chains chains;  // the block sequence the daemon was asked for, for the simulators
};

ReplayTotals Replay(Client& client, const Namespace& ns,
                    const std::vector<bench::TraceRequest>& trace, size_t n, bool quiet) {
  const size_t block_bytes = ns.block_bytes();
  ReplayTotals t;
  t.chains.reserve(n);
  std::vector<std::byte> arena;
  std::vector<MutableBuffer> out;
  std::vector<ConstBuffer> in;
  ProgressLine progress(quiet ? 0 : n);
  const auto start = Clock::now();
  for (size_t r = 0; r < n; ++r) {
    const std::vector<uint32_t> tokens = bench::SynthesizeTokens(trace[r]);
    t.prompt_tokens += tokens.size();
    const auto t0 = Clock::now();
    auto look = client.Lookup(ns, tokens);
    const auto t1 = Clock::now();
    if (!look.ok()) Fail(look.status().ToString());
    const std::vector<BlockKey>& keys = look->keys;
    const size_t matched = look->matched_blocks;
    arena.resize(keys.size() * block_bytes);
    out.clear();
    for (size_t i = 0; i < matched; ++i) out.push_back({arena.data() + i * block_bytes, block_bytes});
    auto loaded = client.Load(ns, std::span<const BlockKey>(keys).first(matched), out).Wait();
    const auto t2 = Clock::now();
    if (!loaded.ok()) Fail(loaded.status().ToString());
    for (size_t i = 0; i < *loaded; ++i)
      if (!KvMatches(keys[i], arena.data() + i * block_bytes, block_bytes)) ++t.bad;
    // "Compute" the rest and store it.
    in.clear();
    for (size_t i = *loaded; i < keys.size(); ++i) {
      FillKv(keys[i], arena.data() + i * block_bytes, block_bytes);
      in.push_back({arena.data() + i * block_bytes, block_bytes});
    }
    const auto t3 = Clock::now();
    auto stored = client.Store(ns, std::span<const BlockKey>(keys).subspan(*loaded), in).Wait();
    const auto t4 = Clock::now();
    if (!stored.ok()) Fail(stored.status().ToString());
    t.t_lookup += Seconds(t1 - t0);
    t.t_load += Seconds(t2 - t1);
    t.t_kv += Seconds(t3 - t2);
    t.t_store += Seconds(t4 - t3);
    t.requested += keys.size();
    t.loaded += *loaded;
    t.stored += *stored;
    ++t.requests;
    std::vector<uint64_t>& chain = t.chains.emplace_back();
    chain.reserve(keys.size());
    for (const BlockKey& k : keys) chain.push_back(k.low);
    if (!quiet)
      progress.Update(r + 1, [&] {
        return fmt::format("  {:>5}/{} requests, prefix hit ratio {:.3f}, {:.2f} GB loaded, {:.2f} GB "
                           "stored, {:.1f} s",
                           r + 1, n, t.requested ? double(t.loaded) / t.requested : 0.0,
                           t.loaded * block_bytes / 1e9, t.stored * block_bytes / 1e9,
                           Seconds(Clock::now() - start));
      });
  }
  if (!quiet) progress.Finish();
  return t;
}

void RunDemo(const DemoOptions& opt) {
  const double started_at = SecondsSinceProcessStart();  // process start -> here
  const auto t_begin = Clock::now();
  const Say say(opt.json);

  if (opt.requests && *opt.requests <= 0)
    Fail(fmt::format("--requests must be a positive number of requests (got {}); omit it to "
                     "replay the whole trace",
                     *opt.requests),
         2);
  if (!(opt.prefill_tokens_per_s > 0)) Fail("--prefill-rate must be positive", 2);
  const std::string trace_path = opt.trace.empty() ? ShippedTracePath() : opt.trace;
  if (trace_path.empty())
    Fail(fmt::format("the shipped trace {} is not next to this binary (looked in <exe dir>/../"
                     "share/strata/ and <exe dir>/); pass --trace FILE",
                     kTraceName),
         2);
  auto trace = bench::ReadMooncakeTrace(trace_path);
  if (!trace.ok()) Fail(trace.status().ToString());
  if (trace->empty()) Fail("trace '" + trace_path + "' has no requests");
  const size_t n = opt.requests ? std::min<size_t>(*opt.requests, trace->size()) : trace->size();
  auto ns_result = Namespace::Create(DemoNamespace());
  if (!ns_result.ok()) Fail(ns_result.status().ToString());
  const Namespace ns = std::move(ns_result).value();
  const size_t block_bytes = ns.block_bytes();

  say("strata demo: replaying {} of the {} requests of {} ({}) through `strata serve`", n,
      trace->size(), fs::path(trace_path).filename().string(),
      n == trace->size() ? "the whole trace: its prefix reuse is long-range"
                         : "its first requests; the whole trace shows more reuse");
  say("model shape {} ({} layers, {} KV head, head dim {}, {} KV): {} KiB of KV per {}-token block, "
      "one block per trace hash id",
      ns.spec().model_id, ns.spec().num_layers, ns.spec().num_kv_heads, ns.spec().head_dim,
      KvDtypeName(ns.spec().kv_dtype), block_bytes >> 10, ns.block_size());

  // --- daemon ---
  const std::string sock_dir =
      fs::temp_directory_path() / ("strata-demo-" + std::to_string(::getpid()));
  fs::create_directories(sock_dir);
  struct RemoveOnExit {
    std::string path;
    ~RemoveOnExit() {
      std::error_code ec;
      fs::remove_all(path, ec);
    }
  } sock_dir_cleanup{sock_dir};
  DataDirGuard data_dir(opt.data_dir, opt.keep_data);
  say("starting strata serve: host pool {}, disk tier {} under {}{}", opt.host_pool, opt.disk,
      opt.data_dir, data_dir.will_remove() ? " (removed at the end; --keep-data keeps it)" : "");
  const auto t_daemon0 = Clock::now();
  ServeOptions so;
  so.socket = sock_dir + "/strata.sock";
  so.args = {"serve",       "--socket", so.socket, "--data-dir", opt.data_dir,
             "--host-pool", opt.host_pool, "--disk", opt.disk};
  so.start_timeout = std::chrono::seconds(30);
  auto spawned = SpawnServe(std::move(so));
  if (!spawned.ok()) Fail(spawned.status().message());
  std::unique_ptr<ServeProcess> daemon = std::move(spawned).value();
  const auto t_daemon1 = Clock::now();
  auto client = Client::Connect(daemon->socket());
  const auto t_connect = Clock::now();
  if (!client.ok()) Fail(client.status().ToString());
  auto stats0 = (*client)->Stats();
  if (!stats0.ok()) Fail(stats0.status().ToString());
  const nlohmann::json s0 = nlohmann::json::parse(*stats0);
  const uint64_t host_blocks = JsonU64(s0, {"host", "capacity_bytes"}) / block_bytes;
  const uint64_t disk_blocks = JsonU64(s0, {"disk", "capacity_bytes"}) / block_bytes;
  const uint64_t capacity = host_blocks + disk_blocks;
  if (capacity == 0) Fail("the daemon reports no capacity for " + std::to_string(block_bytes) +
                          "-byte blocks");
  say("daemon up in {:.2f} s, client connected in {:.0f} ms; capacity {} blocks (host {} + disk "
      "{})",
      Seconds(t_daemon1 - t_daemon0), Seconds(t_connect - t_daemon1) * 1e3, capacity, host_blocks,
      disk_blocks);

  // --- replay ---
  const auto t_replay0 = Clock::now();
  ReplayTotals t = Replay(**client, ns, *trace, n, opt.json);
  const auto t_replay1 = Clock::now();
  auto stats = (*client)->Stats();
  if (!stats.ok()) Fail(stats.status().ToString());
  const nlohmann::json s1 = nlohmann::json::parse(*stats);
  client->reset();

  // --- the same requests through the simulators ---
  say("replaying the same {} block chains through LRU, the offline optimum (Belady) and the "
      "node's policy at {} blocks...",
      t.chains.size(), capacity);
  auto lru = bench::ReplayPolicy(t.chains, capacity, store::PolicyKind::kLru);
  if (!lru.ok()) Fail(lru.status().ToString());
  // The daemon's own policy as one tier of the same size: what splitting it into host and disk
  // (with the disk's admission filter) costs or gains.
  auto prefix = bench::ReplayPolicy(t.chains, capacity, store::kDefaultPolicyKind);
  if (!prefix.ok()) Fail(prefix.status().ToString());
  const bench::ReplayCounts belady = bench::ReplayBelady(t.chains, capacity);
  const bench::ReplayCounts infinite = bench::ReplayInfinite(t.chains);
  const auto t_sim = Clock::now();

  // --- shutdown and cleanup ---
  say("stopping strata serve (SIGTERM: the host tier is written to the disk tier)...");
  const int status = daemon->Stop(SIGTERM);
  const bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  const auto t_stop = Clock::now();
  const bool removing = data_dir.will_remove();
  if (removing) say("removing {}...", opt.data_dir);
  const uint64_t removed_bytes = data_dir.Remove();
  const auto t_end = Clock::now();
  const double total = started_at + Seconds(t_end - t_begin);

  const double gb = 1e9;
  const double hit_ratio = t.requested ? double(t.loaded) / t.requested : 0;
  const uint64_t tokens_saved = t.loaded * ns.block_size();
  const double ttft_saved = tokens_saved / opt.prefill_tokens_per_s;
  const double load_gbps = t.t_load > 0 ? t.loaded * block_bytes / t.t_load / gb : 0;
  const double store_gbps = t.t_store > 0 ? t.stored * block_bytes / t.t_store / gb : 0;
  nlohmann::json timings = {
      {"process_start_s", started_at},
      {"daemon_start_s", Seconds(t_daemon1 - t_daemon0)},
      {"connect_s", Seconds(t_connect - t_daemon1)},
      {"replay_s", Seconds(t_replay1 - t_replay0)},
      {"lookup_s", t.t_lookup},
      {"load_s", t.t_load},
      {"store_s", t.t_store},
      {"kv_fill_verify_s", t.t_kv},
      {"simulate_s", Seconds(t_sim - t_replay1)},
      {"shutdown_s", Seconds(t_stop - t_sim)},
      {"cleanup_s", Seconds(t_end - t_stop)},
      {"total_s", total}};
  nlohmann::json served = nlohmann::json::object();
  for (const char* tier : {"device", "host", "disk", "remote"})
    if (s1.contains(tier))
      served[tier] = {{"blocks", JsonU64(s1, {tier, "served_blocks"})},
                      {"bytes", JsonU64(s1, {tier, "served_bytes"})}};
  nlohmann::json out = {
      {"trace", trace_path},
      {"requests", n},
      {"tokens", t.prompt_tokens},
      {"model", ns.spec().model_id},
      {"block_bytes", block_bytes},
      {"block_tokens", ns.block_size()},
      {"capacity_blocks", capacity},
      {"requested_blocks", t.requested},
      {"hit_blocks", t.loaded},
      {"prefix_hit_ratio", hit_ratio},
      {"lru_hit_ratio", lru->Ratio()},
      {"belady_hit_ratio", belady.Ratio()},
      {"prefix_one_tier_hit_ratio", prefix->Ratio()},
      {"infinite_hit_ratio", infinite.Ratio()},
      {"stored_blocks", t.stored},
      {"prefill_tokens_saved", tokens_saved},
      {"prefill_tokens_per_s", opt.prefill_tokens_per_s},
      {"ttft_saved_s", ttft_saved},
      {"load_GBps", load_gbps},
      {"store_GBps", store_gbps},
      {"served", served},
      {"daemon_lookup_hit_ratio", s1.contains("lookups") ? s1["lookups"].value("hit_ratio", 0.0)
                                                         : 0.0},
      {"verify_failures", t.bad},
      {"wall_s", total},
      {"timings", timings},
      {"data_dir_removed", removing},
      {"daemon_clean_exit", clean},
      {"daemon_stats", s1}};
  if (opt.json) {
    fmt::print("{}\n", out.dump());
  } else {
    std::string where;
    for (auto& [tier, v] : served.items())
      where += fmt::format("{}{} {} blocks ({:.2f} GB)", where.empty() ? "" : ", ", tier,
                           v["blocks"].get<uint64_t>(), v["bytes"].get<uint64_t>() / gb);
    say("");
    say("summary: {} requests, {:.1f}M prompt tokens, {} blocks of {} tokens looked up", n,
        t.prompt_tokens / 1e6, t.requested, ns.block_size());
    say("  prefix hit ratio {:.3f}: {} blocks loaded from the cache, every byte verified ({} "
        "mismatches)",
        hit_ratio, t.loaded, t.bad);
    say("  same requests, same capacity ({} blocks, simulated as one tier): LRU {:.3f}, offline "
        "optimum (Belady) {:.3f}, the daemon's prefix policy {:.3f}; an infinite cache {:.3f}",
        capacity, lru->Ratio(), belady.Ratio(), prefix->Ratio(), infinite.Ratio());
    say("  served from (daemon Stats): {}; daemon lookup hit ratio {:.3f}", where,
        out["daemon_lookup_hit_ratio"].get<double>());
    say("  prefill saved: {:.1f}M of {:.1f}M prompt tokens; est. time to first token saved {:.0f} s "
        "in all, {:.2f} s per request, at {:.0f}k tokens/s prefill",
        tokens_saved / 1e6, t.prompt_tokens / 1e6, ttft_saved, n ? ttft_saved / n : 0.0,
        opt.prefill_tokens_per_s / 1e3);
    say("  throughput: loaded {:.2f} GB at {:.2f} GB/s, stored {:.2f} GB ({} blocks) at {:.2f} GB/s "
        "(client call time); lookup {:.0f} us/request",
        t.loaded * block_bytes / gb, load_gbps, t.stored * block_bytes / gb, t.stored, store_gbps,
        n ? t.t_lookup / n * 1e6 : 0.0);
    say("  time: {:.1f} s in all since process start = start-up {:.2f} + daemon start {:.2f} + "
        "connect {:.2f} + replay {:.1f} (lookup {:.1f}, load {:.1f}, store {:.1f}, KV fill/verify "
        "{:.1f}, trace tokens {:.1f}) + simulation {:.1f} + shutdown flush {:.1f} + cleanup {:.1f}",
        total, started_at + Seconds(t_daemon0 - t_begin), Seconds(t_daemon1 - t_daemon0),
        Seconds(t_connect - t_daemon1), Seconds(t_replay1 - t_replay0), t.t_lookup, t.t_load,
        t.t_store, t.t_kv,
        Seconds(t_replay1 - t_replay0) - t.t_lookup - t.t_load - t.t_store - t.t_kv,
        Seconds(t_sim - t_replay1), Seconds(t_stop - t_sim), Seconds(t_end - t_stop));
    say("  daemon stopped {}; {}", clean ? "cleanly" : "with an error",
        removing ? fmt::format("{} removed ({:.2f} GB)", opt.data_dir, removed_bytes / gb)
                 : fmt::format("{} kept", opt.data_dir));
  }
  if (t.bad != 0 || !clean) Fail("demo failed: verification mismatches or unclean daemon exit");
}

[[maybe_unused]] const bool kRegistered = RegisterCommand("", [](CLI::App& parent) {
  auto opt = std::make_shared<DemoOptions>();
  auto* cmd = parent.add_subcommand(
      "demo", "Start a single-node daemon and replay a production trace through the client API");
  cmd->add_option("--trace", opt->trace,
                  "Mooncake-format trace (JSON lines). Default: the shipped trace, found in "
                  "<exe dir>/../share/strata/");
  cmd->add_option("--requests", opt->requests,
                  "Replay the first N requests (N > 0). Default: the whole trace");
  cmd->add_option("--data-dir", opt->data_dir, "Disk tier directory of the daemon")
      ->capture_default_str();
  cmd->add_flag("--keep-data", opt->keep_data,
                "Keep the data directory (by default one the demo created is removed)");
  cmd->add_option("--host-pool", opt->host_pool, "Host pool size")->capture_default_str();
  cmd->add_option("--disk", opt->disk, "Disk tier bound")->capture_default_str();
  cmd->add_option("--prefill-rate", opt->prefill_tokens_per_s,
                  "Prefill tokens/s assumed for the time-to-first-token estimate")
      ->capture_default_str();
  cmd->add_flag("--json", opt->json, "Print the totals as one JSON object");
  cmd->callback([opt] { RunDemo(*opt); });
});

}  // namespace
}  // namespace strata::cli
