// `strata bench tiers`: host and disk tiers against the floor of what they do, measured in the
// same run (DESIGN.md, Benchmarks):
//  - host_put_get/{64KiB,2MiB}/threads={1,2}: Put then Get of every block of a working set larger
//    than the CPU caches, vs `memcpy` of the same bytes (two copies per block: in and out). The
//    put path takes blocks with their header already made (the daemon's path: the producer
//    computed the checksum), verify_on_put off; host_put_get_verified/* verifies each put too.
//  - disk_write/2MiB and disk_read/2MiB: the disk tier (slab file, O_DIRECT) vs
//    `dd bs=2M oflag=direct` / `iflag=direct` run on the same filesystem, in the same run.
//  - host_metadata_per_block/*: index + policy + allocator bytes per cached block (target <= 64).
//  - disk_reopen/N: wall time to reopen a disk tier of N blocks (target < 2 s); the tier is built
//    once under --dir and reused by later runs.
//  - disk_demote/2MiB/kv_bf16/C, disk_promote/2MiB/kv_bf16/C (case group `compression`): the disk
//    tier's Put (compress, O_DIRECT write: what the demotion writer does) and Get (read,
//    decompress, verify: what promotion does) of realistic KV blocks (kernels' synthesizer, bf16)
//    per disk compression C (none, lz4, zstd:1, zstd:3), in GB/s of raw bytes, beside `dd` with
//    O_DIRECT in the same run; disk_compression_ratio/2MiB/kv_bf16/C: raw bytes / bytes on disk.
//  - steady_put/B/wait=W, steady_demote/B/wait=W (case group `steady`): a TieredStore whose host
//    pool is full, so that every put evicts a block that write-back demotes (all admitted)
//    through the demotion queue to the disk tier, with TieredStoreOptions::demotion_wait 0 and
//    the default; put GB/s vs memcpy of the same bytes twice (into the pool, victim into the
//    ring), demotion GB/s (bytes on disk / puts + drain) vs dd oflag=direct; per-run demoted,
//    dropped, waits and put p50/p99 in --json.
// Every disk case interleaves the tier and dd (A B A B ..., at least 5 pairs) and reports the
// median of the per-pair ratios (AddPaired).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "bench_report.h"
#include "../strata/command_registry.h"
#include "store/disk_tier.h"
#include "store/host_tier.h"
#include "store/tiered_store.h"
#include "strata_kernels/kv_synth.h"

namespace strata::bench {
namespace {

constexpr uint64_t kMiB = uint64_t{1} << 20;

struct Options {
  bool json = false;
  std::string dir = "strata-data/bench-tiers";
  uint64_t host_mib = 512;
  uint64_t disk_mib = 1024;
  int reps = 5;
  uint64_t reopen_blocks = 1000000;
  uint64_t steady_host_mib = 128;
  std::vector<std::string> cases = {"host", "disk", "reopen", "compression", "steady"};
};

struct Aligned {
  std::byte* p = nullptr;
  explicit Aligned(size_t n) : p(static_cast<std::byte*>(std::aligned_alloc(4096, n))) {
    if (p == nullptr) cli::Fail("out of memory");
    std::memset(p, 0x5A, n);
  }
  ~Aligned() { std::free(p); }
};

BlockKey Key(uint64_t i, uint64_t salt) {
  return BlockKey{(salt + 1) * 0x9E3779B97F4A7C15ULL, i * 0xBF58476D1CE4E5B9ULL + salt};
}

// Runs fn(thread_index) on `threads` threads and returns the wall time.
template <typename Fn>
double Parallel(int threads, Fn&& fn) {
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> ts;
  for (int t = 1; t < threads; ++t) ts.emplace_back([&, t] { fn(t); });
  fn(0);
  for (auto& t : ts) t.join();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void HostCases(BenchReport& report, const Options& opt) {
  for (size_t block : {size_t{64} << 10, size_t{2} << 20}) {
    const std::string size_name = block == (64u << 10) ? "64KiB" : "2MiB";
    for (bool verify : {false, true}) {
      for (int threads : {1, 2}) {
        store::HostTierOptions ho;
        ho.populate = store::HostTierOptions::Populate::kAtOpen;  // no page faults timed
        ho.capacity_bytes = opt.host_mib * kMiB;
        ho.pool.max_blocks = static_cast<uint32_t>(ho.capacity_bytes / block);
        ho.pool.verify_on_put = verify;
        auto host = store::HostTier::Open(ho);
        if (!host.ok()) cli::Fail(host.status().ToString());
        // Working set: half the pool (no eviction in the timed loop), well above the LLC.
        const size_t n = ho.capacity_bytes / block / 2;
        Aligned src(n * block), out(n * block), dst(n * block);
        for (size_t i = 0; i < n * block; i += 4096) src.p[i] = static_cast<std::byte>(i >> 12);
        std::vector<BlockHeader> headers(n);
        uint64_t salt = 0;
        auto make_headers = [&] {
          ++salt;
          for (size_t i = 0; i < n; ++i)
            headers[i] = MakeBlockHeader(Key(i, salt), NamespaceId{1, 1}, Codec::kNone,
                                         std::span<const std::byte>(src.p + i * block, block));
        };
        double t_tier = 0;
        bool failed = false;
        auto run_tier = [&] {
          make_headers();
          t_tier = Parallel(threads, [&](int t) {
            for (size_t i = t; i < n; i += threads) {
              std::span<const std::byte> p(src.p + i * block, block);
              if (!(*host)->Put(headers[i], p).ok()) failed = true;
              if (!(*host)->Get(headers[i].key, std::span<std::byte>(out.p + i * block, block)).ok())
                failed = true;
            }
          });
          for (size_t i = 0; i < n; ++i) (void)(*host)->Erase(headers[i].key);
        };
        std::vector<double> tier_times, copy_times;
        for (int r = 0; r < opt.reps + 1; ++r) {
          run_tier();
          if (r > 0) tier_times.push_back(t_tier);
          const double tc = Parallel(threads, [&](int t) {
            for (size_t i = t; i < n; i += threads) {
              std::memcpy(dst.p + i * block, src.p + i * block, block);
              std::memcpy(out.p + i * block, dst.p + i * block, block);
            }
          });
          DoNotOptimize(out.p[0]);
          if (r > 0) copy_times.push_back(tc);
        }
        if (failed) cli::Fail("host tier put/get failed during the benchmark");
        auto median = [](std::vector<double> v) {
          std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
          return v[v.size() / 2];
        };
        const double bytes = static_cast<double>(n) * block;
        report.Add({std::string(verify ? "host_put_get_verified/" : "host_put_get/") + size_name +
                        "/threads=" + std::to_string(threads),
                    "GB/s", bytes / median(tier_times) / 1e9, "memcpy",
                    bytes / median(copy_times) / 1e9, true,
                    {{"blocks", n}, {"block_bytes", block}, {"verify_on_put", verify},
                     {"note", "put+get moves each payload twice; memcpy baseline copies twice"},
                     {"target_ratio", 0.8}}});
      }
    }
    // Metadata per cached block, the pool full of blocks of this size.
    store::HostTierOptions ho;
    ho.capacity_bytes = 256 * kMiB;
    ho.pool.max_blocks = static_cast<uint32_t>(ho.capacity_bytes / block);
    ho.pool.verify_on_put = false;
    auto host = store::HostTier::Open(ho);
    if (!host.ok()) cli::Fail(host.status().ToString());
    Aligned payload(block);
    for (uint64_t i = 0; i < ho.pool.max_blocks; ++i) {
      auto h = MakeBlockHeader(Key(i, 999), NamespaceId{1, 1}, Codec::kNone,
                               std::span<const std::byte>(payload.p, block));
      if (!(*host)->Put(h, std::span<const std::byte>(payload.p, block)).ok())
        cli::Fail("metadata fill failed");
    }
    const auto st = (*host)->Stats();
    report.Add({"host_metadata_per_block/" + size_name, "bytes",
                static_cast<double>(st.metadata_bytes) / st.blocks, "target_64B", 64, false,
                {{"blocks", st.blocks},
                 {"fixed_per_pool_bytes", st.fixed_metadata_bytes},
                 {"block_header_bytes", kBlockHeaderSize}}});
  }
}

// Runs a shell command and returns its combined output.
std::string Shell(const std::string& cmd) {
  std::string out;
  FILE* f = popen((cmd + " 2>&1").c_str(), "r");
  if (f == nullptr) cli::Fail("cannot run: " + cmd);
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), f)) > 0) out.append(buf, n);
  if (pclose(f) != 0) cli::Fail("command failed: " + cmd + "\n" + out);
  return out;
}

// dd's "N bytes (...) copied, T s, ..." line: returns bytes / T in GB/s.
double DdGBps(const std::string& out) {
  std::smatch m;
  static const std::regex re(R"((\d+) bytes .* copied, ([0-9.e+-]+) s)");
  if (!std::regex_search(out, m, re)) cli::Fail("cannot parse dd output: " + out);
  return std::stod(m[1]) / std::stod(m[2]) / 1e9;
}

// Disk cases interleave the tier and dd (A B A B ...: the virtual disk's speed drifts by several
// times within minutes) and report the median of the per-pair ratios: the case's value and
// baseline are those of the pair whose ratio is that median (the upper one for an even count),
// so the printed ratio is the median per-pair ratio; extra["pairs"] lists every pair.
struct Pair {
  double value = 0, baseline = 0;
};
void AddPaired(BenchReport& report, const std::string& name, const std::string& metric,
               const std::string& baseline, const std::vector<Pair>& pairs,
               nlohmann::json extra) {
  if (pairs.empty()) return;
  std::vector<size_t> order(pairs.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  auto ratio = [&](size_t i) { return pairs[i].baseline > 0 ? pairs[i].value / pairs[i].baseline : 0; };
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return ratio(a) < ratio(b); });
  const Pair& m = pairs[order[order.size() / 2]];
  nlohmann::json list = nlohmann::json::array();
  for (const Pair& p : pairs)
    list.push_back({{"value", p.value}, {"baseline", p.baseline},
                    {"ratio", p.baseline > 0 ? p.value / p.baseline : 0}});
  extra["pairs"] = std::move(list);
  extra["ratio_is"] = "median of per-pair ratios";
  report.Add({name, metric, m.value, baseline, m.baseline, true, std::move(extra)});
}

constexpr int kMinPairs = 5;

void DiskCases(BenchReport& report, const Options& opt) {
  const size_t block = 2 * kMiB;
  const uint64_t n = opt.disk_mib * kMiB / block;
  std::filesystem::create_directories(opt.dir);
  const std::string dd_file = opt.dir + "/dd.tmp";
  Aligned src(n * block), out(block);
  for (uint64_t i = 0; i < n * block; i += 4096) src.p[i] = static_cast<std::byte>(i * 31 >> 12);
  std::vector<BlockHeader> headers(n);
  for (uint64_t i = 0; i < n; ++i)
    headers[i] = MakeBlockHeader(Key(i, 7), NamespaceId{1, 1}, Codec::kNone,
                                 std::span<const std::byte>(src.p + i * block, block));

  {
    const std::string mode = "slab_odirect";
    std::vector<Pair> w_pairs, r_pairs;
    for (int r = 0; r < std::max(kMinPairs, opt.reps); ++r) {
      const std::string tdir = opt.dir + "/tier-" + mode;
      std::filesystem::remove_all(tdir);
      store::DiskTierOptions o;
      o.path = tdir;
      o.capacity_bytes = (opt.disk_mib + 64) * kMiB;
      o.extend_bytes = 256 * kMiB;
      auto tier = store::DiskTier::Open(o);
      if (!tier.ok()) cli::Fail(tier.status().ToString());
      auto t0 = std::chrono::steady_clock::now();
      for (uint64_t i = 0; i < n; ++i) {
        Status st = (*tier)->Put(headers[i], std::span<const std::byte>(src.p + i * block, block));
        if (!st.ok()) cli::Fail("disk put: " + st.ToString());
      }
      auto t1 = std::chrono::steady_clock::now();
      for (uint64_t i = 0; i < n; ++i) {
        auto h = (*tier)->Get(headers[i].key, std::span<std::byte>(out.p, block));
        if (!h.ok()) cli::Fail("disk get: " + h.status().ToString());
      }
      auto t2 = std::chrono::steady_clock::now();
      w_pairs.push_back({n * block / std::chrono::duration<double>(t1 - t0).count() / 1e9});
      r_pairs.push_back({n * block / std::chrono::duration<double>(t2 - t1).count() / 1e9});
      tier->reset();
      std::filesystem::remove_all(tdir);
      // dd on the same filesystem, same bytes, same block size, O_DIRECT both ways.
      w_pairs.back().baseline = DdGBps(Shell("dd if=/dev/zero of=" + dd_file + " bs=2M count=" +
                                             std::to_string(n) + " oflag=direct"));
      r_pairs.back().baseline =
          DdGBps(Shell("dd if=" + dd_file + " of=/dev/null bs=2M iflag=direct"));
      std::filesystem::remove(dd_file);
    }
    nlohmann::json extra = {{"blocks", n}, {"dir", opt.dir},
                            {"target_ratio", 0.7}, {"verified_reads", true}};
    AddPaired(report, "disk_write/2MiB/" + mode, "GB/s", "dd_odirect", w_pairs, extra);
    AddPaired(report, "disk_read/2MiB/" + mode, "GB/s", "dd_odirect", r_pairs, extra);
  }
}

double Median(std::vector<double> v) {
  std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
  return v[v.size() / 2];
}

void CompressionCases(BenchReport& report, const Options& opt) {
  namespace k = strata::kernels;
  // Llama-3-8B's KV geometry (32 layers, 8 KV heads of 128 dims), 16-token blocks: 2 MiB.
  const k::BlockShape shape{32, 2, 16, 8, 128, k::KvDtype::kBFloat16};
  const size_t block = shape.bytes();
  const uint64_t n = std::max<uint64_t>(8, opt.disk_mib * kMiB / block);
  // Synthesis is slow (a projection per token and layer): 8 distinct blocks, cycled under
  // distinct keys. Each block is compressed on its own, so the ratio is that of the 8.
  constexpr uint32_t kDistinct = 8;
  k::KvSynthOptions synth;
  synth.seed = 2024;
  synth.first_position = 4096;
  std::vector<std::byte> kv;
  if (!k::SynthesizeKvBlocks(shape, kDistinct, synth, &kv).ok()) cli::Fail("KV synthesis failed");
  Aligned src(kDistinct * block), out(block);
  std::memcpy(src.p, kv.data(), kv.size());
  std::vector<BlockHeader> headers(n);
  for (uint64_t i = 0; i < n; ++i)
    headers[i] = MakeBlockHeader(
        Key(i, 11), NamespaceId{1, 1}, Codec::kNone,
        std::span<const std::byte>(src.p + (i % kDistinct) * block, block));
  std::filesystem::create_directories(opt.dir);
  const std::string dd_file = opt.dir + "/dd.tmp";
  const std::vector<std::string> settings = {"none", "lz4", "zstd:1", "zstd:3"};
  std::map<std::string, std::vector<Pair>> w, r;
  std::map<std::string, std::vector<double>> ratio;
  // Every repetition runs every setting and then dd, so drift of the shared disk hits them alike;
  // each setting's ratio is the median of its per-repetition ratios to that repetition's dd.
  const int reps = std::max(kMinPairs, opt.reps);
  for (int rep = 0; rep < reps; ++rep) {
    for (const std::string& c : settings) {
      const std::string tdir = opt.dir + "/tier-compression";
      std::filesystem::remove_all(tdir);
      store::DiskTierOptions o;
      o.path = tdir;
      o.capacity_bytes = (opt.disk_mib + 64) * kMiB;
      o.extend_bytes = 256 * kMiB;
      auto parsed = store::ParseDiskCompression(c);
      if (!parsed.ok()) cli::Fail(parsed.status().ToString());
      o.compression = *parsed;
      auto tier = store::DiskTier::Open(o);
      if (!tier.ok()) cli::Fail(tier.status().ToString());
      const auto t0 = std::chrono::steady_clock::now();
      for (uint64_t i = 0; i < n; ++i) {
        Status st = (*tier)->Put(
            headers[i], std::span<const std::byte>(src.p + (i % kDistinct) * block, block));
        if (!st.ok()) cli::Fail("disk put: " + st.ToString());
      }
      const auto t1 = std::chrono::steady_clock::now();
      for (uint64_t i = 0; i < n; ++i) {
        auto h = (*tier)->Get(headers[i].key, std::span<std::byte>(out.p, block));
        if (!h.ok()) cli::Fail("disk get: " + h.status().ToString());
      }
      const auto t2 = std::chrono::steady_clock::now();
      const auto st = (*tier)->Stats();
      w[c].push_back({n * block / std::chrono::duration<double>(t1 - t0).count() / 1e9});
      r[c].push_back({n * block / std::chrono::duration<double>(t2 - t1).count() / 1e9});
      ratio[c].push_back(static_cast<double>(st.raw_payload_bytes) / st.payload_bytes);
      tier->reset();
      std::filesystem::remove_all(tdir);
    }
    const double w_dd = DdGBps(Shell("dd if=/dev/zero of=" + dd_file + " bs=2M count=" +
                                     std::to_string(n) + " oflag=direct"));
    const double r_dd = DdGBps(Shell("dd if=" + dd_file + " of=/dev/null bs=2M iflag=direct"));
    std::filesystem::remove(dd_file);
    for (const std::string& c : settings) {
      w[c].back().baseline = w_dd;
      r[c].back().baseline = r_dd;
    }
  }
  for (const std::string& c : settings) {
    const nlohmann::json extra = {{"disk_compression", c},  {"blocks", n},
                                  {"distinct_blocks", kDistinct}, {"dtype", "bf16"},
                                  {"dir", opt.dir},          {"reps", reps},
                                  {"verified_reads", true}};
    AddPaired(report, "disk_demote/2MiB/kv_bf16/" + c, "GB/s", "dd_odirect", w[c], extra);
    AddPaired(report, "disk_promote/2MiB/kv_bf16/" + c, "GB/s", "dd_odirect", r[c], extra);
    report.Add({"disk_compression_ratio/2MiB/kv_bf16/" + c, "x", Median(ratio[c]), "none", 1.0,
                true, extra});
  }
}

void ReopenCase(BenchReport& report, const Options& opt) {
  if (opt.reopen_blocks == 0) return;
  const std::string tdir = opt.dir + "/reopen-" + std::to_string(opt.reopen_blocks);
  store::DiskTierOptions o;
  o.path = tdir;
  o.capacity_bytes = (opt.reopen_blocks + 1024) * 4096;
  o.max_blocks = static_cast<uint32_t>(opt.reopen_blocks + 1024);
  o.extend_bytes = 256 * kMiB;
  o.direct_io = false;  // building 1M tiny blocks: buffered is much faster; reopen is unaffected
  {
    auto tier = store::DiskTier::Open(o);
    if (!tier.ok()) cli::Fail(tier.status().ToString());
    const uint64_t have = (*tier)->open_info().blocks_recovered;
    std::byte payload[64];
    std::memset(payload, 0x33, sizeof(payload));
    for (uint64_t i = have; i < opt.reopen_blocks; ++i) {
      const BlockKey k = Key(i, 4242);
      const BlockKey parent = Key(i - 1, 4242);
      store::PutOptions po;
      if (i % 32) po.parent = &parent;
      auto h = MakeBlockHeader(k, NamespaceId{1, 1}, Codec::kNone, payload);
      Status st = (*tier)->Put(h, payload, po);
      if (!st.ok()) cli::Fail("building the reopen tier: " + st.ToString());
    }
    if (!(*tier)->Sync().ok()) cli::Fail("sync");
  }
  std::vector<double> times;
  uint64_t recovered = 0;
  for (int r = 0; r < 3; ++r) {
    auto tier = store::DiskTier::Open(o);
    if (!tier.ok()) cli::Fail(tier.status().ToString());
    times.push_back((*tier)->open_info().seconds);
    recovered = (*tier)->open_info().blocks_recovered;
  }
  std::nth_element(times.begin(), times.begin() + 1, times.end());
  report.Add({"disk_reopen/" + std::to_string(opt.reopen_blocks) + "_blocks", "s", times[1],
              "target_2s", 2.0, false, {{"blocks_recovered", recovered}, {"dir", tdir}}});
}

// One steady-state run: a TieredStore whose host pool is full, so that every put evicts a block
// which write-back demotes (all admitted) through the demotion queue to the disk tier.
struct SteadyRun {
  double put_gbps = 0;     // puts of the timed phase
  double demote_gbps = 0;  // bytes written to disk / (puts + drain of the queue)
  uint64_t puts = 0, evictions = 0, demoted = 0, dropped = 0, waits = 0, wait_timeouts = 0;
  double put_p50_us = 0, put_p99_us = 0;
};

SteadyRun RunSteady(const Options& opt, size_t block, std::chrono::microseconds wait,
                    const std::byte* src, size_t src_blocks) {
  const std::string tdir = opt.dir + "/tier-steady";
  std::filesystem::remove_all(tdir);
  const uint64_t n = opt.disk_mib * kMiB / block;
  store::TieredStoreOptions o;
  o.host.populate = store::HostTierOptions::Populate::kAtOpen;  // no page faults timed
  o.host.capacity_bytes = opt.steady_host_mib * kMiB;
  o.host.pool.max_blocks = static_cast<uint32_t>(o.host.capacity_bytes / block);
  o.host.pool.verify_on_put = false;  // the daemon's path: the producer made the header
  store::DiskTierOptions d;
  d.path = tdir;
  d.capacity_bytes = (n + o.host.pool.max_blocks) * block + 256 * kMiB;  // the disk never evicts
  d.extend_bytes = 256 * kMiB;
  o.disk = d;
  o.disk_admission_min_frequency = 0;  // every victim is admitted: every put demotes one block
  o.demotion_wait = wait;
  auto store = store::TieredStore::Open(o);
  if (!store.ok()) cli::Fail(store.status().ToString());
  auto header = [&](uint64_t i, uint64_t salt) {
    return MakeBlockHeader(Key(i, salt), NamespaceId{1, 1}, Codec::kNone,
                           std::span<const std::byte>(src + (i % src_blocks) * block, block));
  };
  auto payload = [&](uint64_t i) {
    return std::span<const std::byte>(src + (i % src_blocks) * block, block);
  };
  // Fill (untimed) until the pool evicts.
  for (uint64_t i = 0; (*store)->host().Stats().evictions == 0; ++i) {
    if (i > 4 * uint64_t{o.host.pool.max_blocks}) cli::Fail("steady: the pool never filled");
    Status st = (*store)->PutBlock(header(i, 31), payload(i));
    if (!st.ok()) cli::Fail("steady fill: " + st.ToString());
  }
  (*store)->DrainDemotions();
  const store::StoreStats before = (*store)->Stats();
  // Headers are made before the clock starts (the producer's work, as in host_put_get).
  std::vector<BlockHeader> headers(n);
  for (uint64_t i = 0; i < n; ++i) headers[i] = header(i, 32);
  std::vector<double> lat(n);
  const auto t0 = std::chrono::steady_clock::now();
  for (uint64_t i = 0; i < n; ++i) {
    const auto a = std::chrono::steady_clock::now();
    Status st = (*store)->PutBlock(headers[i], payload(i));
    lat[i] = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - a).count();
    if (!st.ok()) cli::Fail("steady put: " + st.ToString());
  }
  const auto t1 = std::chrono::steady_clock::now();
  (*store)->DrainDemotions();
  const auto t2 = std::chrono::steady_clock::now();
  const store::StoreStats after = (*store)->Stats();
  SteadyRun r;
  r.puts = n;
  r.evictions = after.host.evictions - before.host.evictions;
  r.demoted = after.demotions - before.demotions;
  r.dropped = after.demotions_dropped - before.demotions_dropped;
  r.waits = after.demotion_waits - before.demotion_waits;
  r.wait_timeouts = after.demotion_wait_timeouts - before.demotion_wait_timeouts;
  r.put_gbps = n * block / std::chrono::duration<double>(t1 - t0).count() / 1e9;
  r.demote_gbps = r.demoted * block / std::chrono::duration<double>(t2 - t0).count() / 1e9;
  std::sort(lat.begin(), lat.end());
  r.put_p50_us = lat[n / 2];
  r.put_p99_us = lat[std::min<uint64_t>(n - 1, n * 99 / 100)];
  store->reset();
  std::filesystem::remove_all(tdir);
  return r;
}

// steady_put / steady_demote: the steady state of write-back (issue 17). Per pair: the store with
// demotion_wait 0 (a victim is dropped when the staging ring is full) and with the default wait,
// then memcpy of the same bytes twice (the put's copy into the pool and the victim's copy into
// the staging ring) and dd oflag=direct of the same bytes, block size and count.
void SteadyCases(BenchReport& report, const Options& opt) {
  std::filesystem::create_directories(opt.dir);
  const std::string dd_file = opt.dir + "/dd.tmp";
  const auto default_wait = store::TieredStoreOptions{}.demotion_wait;
  for (size_t block : {size_t{256} << 10, size_t{2} << 20}) {
    const std::string size_name = block == (256u << 10) ? "256KiB" : "2MiB";
    const uint64_t n = opt.disk_mib * kMiB / block;
    const size_t src_blocks = 64 * kMiB / block;
    const size_t pool_blocks = opt.steady_host_mib * kMiB / block;
    Aligned src(src_blocks * block), pool(pool_blocks * block), ring(64 * kMiB);
    for (size_t i = 0; i < src_blocks * block; i += 4096)
      src.p[i] = static_cast<std::byte>(i * 13 >> 12);
    const size_t ring_blocks = 64 * kMiB / block;
    struct Mode {
      std::string name;
      std::chrono::microseconds wait;
      std::vector<Pair> put, demote;
      std::vector<SteadyRun> runs;
    };
    std::vector<Mode> modes = {{"wait=0", std::chrono::microseconds{0}, {}, {}, {}},
                               {"wait=" + std::to_string(default_wait.count() / 1000) + "ms",
                                default_wait, {}, {}, {}}};
    for (int rep = 0; rep < std::max(kMinPairs, opt.reps); ++rep) {
      for (Mode& m : modes) {
        m.runs.push_back(RunSteady(opt, block, m.wait, src.p, src_blocks));
        m.put.push_back({m.runs.back().put_gbps});
        m.demote.push_back({m.runs.back().demote_gbps});
      }
      const double tc = Parallel(1, [&](int) {
        for (uint64_t i = 0; i < n; ++i) {
          std::byte* slot = pool.p + (i % pool_blocks) * block;
          std::memcpy(slot, src.p + (i % src_blocks) * block, block);
          std::memcpy(ring.p + (i % ring_blocks) * block, slot, block);
        }
      });
      DoNotOptimize(ring.p[0]);
      const double dd = DdGBps(Shell("dd if=/dev/zero of=" + dd_file + " bs=" +
                                     std::to_string(block >> 10) + "K count=" + std::to_string(n) +
                                     " oflag=direct"));
      std::filesystem::remove(dd_file);
      for (Mode& m : modes) {
        m.put.back().baseline = n * block / tc / 1e9;
        m.demote.back().baseline = dd;
      }
    }
    for (const Mode& m : modes) {
      nlohmann::json runs = nlohmann::json::array();
      for (const SteadyRun& r : m.runs)
        runs.push_back({{"puts", r.puts}, {"evictions", r.evictions}, {"demoted", r.demoted},
                        {"dropped", r.dropped}, {"waits", r.waits},
                        {"wait_timeouts", r.wait_timeouts}, {"put_p50_us", r.put_p50_us},
                        {"put_p99_us", r.put_p99_us}});
      const nlohmann::json extra = {{"block_bytes", block},
                                    {"host_pool_mib", opt.steady_host_mib},
                                    {"demotion_queue_mib", 64},
                                    {"demotion_wait_us", m.wait.count()},
                                    {"runs", runs},
                                    {"dir", opt.dir}};
      AddPaired(report, "steady_put/" + size_name + "/" + m.name, "GB/s", "memcpy_x2", m.put,
                extra);
      AddPaired(report, "steady_demote/" + size_name + "/" + m.name, "GB/s", "dd_odirect",
                m.demote, extra);
    }
  }
}

void Run(const Options& opt) {
  if (opt.reps < 1) cli::Fail("--reps must be at least 1");
  if (opt.host_mib < 64 || opt.disk_mib < 16) cli::Fail("--host-mib >= 64 and --disk-mib >= 16");
  BenchReport report("tiers", opt.json);
  auto want = [&](const char* c) {
    return std::find(opt.cases.begin(), opt.cases.end(), c) != opt.cases.end();
  };
  if (want("host")) HostCases(report, opt);
  if (want("disk")) DiskCases(report, opt);
  if (want("reopen")) ReopenCase(report, opt);
  if (want("compression")) CompressionCases(report, opt);
  if (want("steady")) SteadyCases(report, opt);
}

[[maybe_unused]] const bool kRegistered = cli::RegisterCommand("bench", [](CLI::App& parent) {
  auto opt = std::make_shared<Options>();
  auto* cmd = parent.add_subcommand(
      "tiers", "Host tier vs memcpy, disk tier vs dd O_DIRECT, metadata per block, 1M-block reopen, "
      "disk compression of KV bytes, steady-state write-back");
  AddJsonFlag(*cmd, opt->json);
  cmd->add_option("--dir", opt->dir, "Directory for the disk cases (the filesystem measured)")
      ->capture_default_str();
  cmd->add_option("--host-mib", opt->host_mib, "Host pool size in MiB")->capture_default_str();
  cmd->add_option("--disk-mib", opt->disk_mib, "Bytes written per disk case in MiB")
      ->capture_default_str();
  cmd->add_option("--reps", opt->reps, "Timed repetitions (median is reported)")
      ->capture_default_str();
  cmd->add_option("--steady-host-mib", opt->steady_host_mib,
                  "Host pool of the steady case in MiB (it is filled before the timed puts)")
      ->capture_default_str();
  cmd->add_option("--reopen-blocks", opt->reopen_blocks,
                  "Blocks in the reopen case (0 skips it; built once under --dir)")
      ->capture_default_str();
  cmd->add_option("--cases", opt->cases,
                  "Which groups to run: host, disk, reopen, compression (disk tier compression "
                  "of KV bytes), steady (full host pool, every put evicts and demotes to disk)")
      ->delimiter(',')
      ->check(CLI::IsMember({"host", "disk", "reopen", "compression", "steady"}))
      ->capture_default_str();
  cmd->callback([opt] { Run(*opt); });
});

}  // namespace
}  // namespace strata::bench
