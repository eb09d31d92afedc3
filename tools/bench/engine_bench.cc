// `strata bench engine`: the engine data plane (docs/data-plane.md) as an engine drives it. A
// 4K-token prompt of Llama-3.1-8B-shaped KV (32 layers, 8 KV heads, head dim 128, bf16, 16-token
// pages: 256 blocks of 2 MiB, 512 MiB) sits in a paged cache in vLLM's layout at random page ids;
// StorePaged puts it into a real `strata serve` and LoadPaged brings it back into other pages,
// per codec, beside memcpy of the same bytes measured in the same run (the same bytes once:
// one memcpy of the 512 MiB between two touched buffers, single-threaded, and the same split
// over the client's copy threads, timed before each store and each load so that both see the
// same load on a shared machine).
// Every load is checked against the source pages (lossless codecs) before it is timed.
// With a CUDA device, GPU rows follow: the same prompt in device memory through the client's CUDA
// data path, beside pinned cudaMemcpy (engine_bench_gpu.h).
//
// Copies per store: gather engine pages -> staging (codec none) or scratch + encode -> staging,
// then the daemon's copy staging -> pool; per load: verify + scatter from the read-only pool
// (codec none) or verify + decode into scratch + scatter.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <thread>

#include <nlohmann/json.hpp>

#include "../strata/command_registry.h"
#include "../strata/serve_process.h"
#include "bench_report.h"
#include "client/copy_threads.h"
#include "client/huge_pages.h"
#include "engine_bench_gpu.h"
#include "strata/client.h"
#include "strata/key_chain.h"
#include "strata_kernels/numeric.h"

namespace strata::bench {
namespace {

struct Options {
  bool json = false;
  int reps = 5;
  uint32_t tokens = 4096;
  std::vector<std::string> codecs = {"none", "shuffle_lz4", "shuffle_zstd", "fp8_e4m3",
                                     "int8_group", "int4_kivi"};
};

constexpr uint32_t kLayers = 32, kHeads = 8, kHeadDim = 128, kPage = 16;

Namespace EngineNamespace(Codec codec) {
  NamespaceSpec s;
  s.model_id = "meta-llama/Llama-3.1-8B-Instruct";
  s.kv_dtype = KvDtype::kBFloat16;
  s.num_layers = kLayers;
  s.num_kv_heads = kHeads;
  s.head_dim = kHeadDim;
  s.block_size = kPage;
  s.codec = codec;
  s.tenant_salt = "bench-engine";
  return std::move(Namespace::Create(s)).value();
}

// An engine's paged KV cache in vLLM's flash-attn layout: per layer [2, pages, 16, 8, 128] bf16,
// each layer one large anonymous mapping, zeroed before it is registered, as an engine's
// allocator (torch: malloc -> mmap for large tensors, then zero_) leaves it: the huge-page advice
// of RegisterKvCache (ClientOptions::kv_huge_pages) applies to it as to an engine's.
struct Engine {
  struct Unmap {
    uint64_t bytes;
    void operator()(std::byte* p) const { ::munmap(p, bytes); }
  };
  uint32_t pages;
  std::vector<std::unique_ptr<std::byte, Unmap>> layers;
  explicit Engine(uint32_t n) : pages(n) {
    for (uint32_t l = 0; l < kLayers; ++l) {
      void* p = ::mmap(nullptr, LayerBytes(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                       -1, 0);
      if (p == MAP_FAILED) cli::Fail("mmap of the engine's KV cache failed");
      layers.emplace_back(static_cast<std::byte*>(p), Unmap{LayerBytes()});
      std::memset(p, 0, LayerBytes());
    }
  }
  uint64_t LayerBytes() const { return 2ull * pages * kPage * kHeads * kHeadDim * 2; }
  std::byte* Layer(uint32_t l) const { return layers[l].get(); }
  // KV-like values: normal around 0 (so the codecs see realistic exponents).
  void Fill(uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.5f);
    std::vector<uint16_t> table(4096);
    for (auto& v : table) v = kernels::FloatToBf16(normal(rng));
    for (auto& l : layers)
      for (size_t i = 0; i + 1 < LayerBytes(); i += 2) {
        const uint16_t v = table[rng() & 4095];
        std::memcpy(l.get() + i, &v, 2);
      }
  }
  KvCacheSpec Spec() {
    KvCacheSpec s;
    s.layout = KvLayout::kVllmFlashAttn;
    for (auto& l : layers) s.layers.push_back(l.get());
    s.num_blocks = pages;
    return s;
  }
};

std::string EnvOr(const char* name, const char* otherwise) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? v : otherwise;
}

void Run(const Options& opt) {
  BenchReport report("engine", opt.json);
  const uint32_t blocks = opt.tokens / kPage;
  const uint64_t kv_bytes = uint64_t{blocks} * 2 * kLayers * kPage * kHeads * kHeadDim * 2;
  const std::string dir = std::filesystem::temp_directory_path() /
                          ("strata-bench-engine-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  struct Cleanup {
    std::string dir;
    std::unique_ptr<cli::ServeProcess> serve;
    ~Cleanup() {
      serve.reset();
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  } cleanup{dir, nullptr};
  const uint64_t pool_mib = std::max<uint64_t>(64, (kv_bytes * 3 / 2) >> 20);  // >= one slab
  cli::ServeOptions so;
  so.socket = dir + "/strata.sock";
  so.args = {"serve", "--socket", so.socket, "--no-disk", "--host-pool",
             std::to_string(pool_mib) + "MiB"};
  so.ready = cli::ServeReady::kClientConnects;
  auto serve = cli::SpawnServe(std::move(so));
  if (!serve.ok()) cli::Fail(serve.status().ToString());
  cleanup.serve = std::move(serve).value();
  ClientOptions co;
  co.staging_bytes = uint64_t{1} << 30;
  auto client = Client::Connect(cleanup.serve->socket(), co);
  if (!client.ok()) cli::Fail(client.status().ToString());
  // Wait for the daemon's background pool population, so that page faults are not timed.
  for (int i = 0; i < 2400; ++i) {
    auto j = nlohmann::json::parse((*client)->Stats().value());
    if (!j.value("pool_populating", false)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }

  // The engine's pages: source and destination, each with room for the prompt twice over, the
  // prompt's blocks at random page ids.
  const uint32_t pages = blocks * 2;
  Engine src(pages), dst(pages);
  src.Fill(1);
  std::vector<int32_t> ids(pages);
  for (uint32_t i = 0; i < pages; ++i) ids[i] = static_cast<int32_t>(i);
  std::shuffle(ids.begin(), ids.end(), std::mt19937(2));
  const std::vector<int32_t> from(ids.begin(), ids.begin() + blocks);
  std::shuffle(ids.begin(), ids.end(), std::mt19937(3));
  const std::vector<int32_t> to(ids.begin(), ids.begin() + blocks);
  std::vector<uint32_t> tokens(opt.tokens);
  for (uint32_t i = 0; i < opt.tokens; ++i) tokens[i] = (i * 2654435761u) % 128000;

  // Baseline: memcpy of the same bytes between two buffers already touched (no page faults),
  // timed right before each store and each load, so that baseline and case see the same machine
  // (on a shared machine the available memory bandwidth moves by 2x within a minute); each
  // case's baseline is the median of the memcpy runs interleaved with it.
  std::vector<std::byte> a(kv_bytes, std::byte{1}), b(kv_bytes, std::byte{2});
  std::memcpy(a.data(), src.Layer(0), std::min<uint64_t>(kv_bytes, src.LayerBytes()));
  // The client splits a large load over its copy threads (lib/client/copy_threads.h), and a
  // store runs the client's gather beside the daemon's copy: both use more than one core. The
  // baseline is one memcpy (the yardstick); the same bytes split over as many threads
  // are timed beside it and reported (memcpy_split_gbps, ratio_to_memcpy_split): where one core
  // does not saturate DRAM, that split copy, not the single memcpy, is the physical limit.
  const int copy_threads = CopyThreads::DefaultHelpers() + 1;
  // The same single memcpy between two buffers in huge pages (advised before they are touched),
  // reported beside it (memcpy_huge_gbps, ratio_to_memcpy_huge): on a VM a 4 KiB-page copy pays
  // two-level page walks that a copy from and into 2 MiB pages does not, so a case on huge-page
  // KV is read against this one.
  auto huge_buffer = [&] {
    void* p = ::mmap(nullptr, kv_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) cli::Fail("mmap of the baseline's buffers failed");
    (void)::madvise(p, kv_bytes, MADV_HUGEPAGE);
    std::memset(p, 3, kv_bytes);
    return std::unique_ptr<std::byte, Engine::Unmap>(static_cast<std::byte*>(p),
                                                     Engine::Unmap{kv_bytes});
  };
  const auto ah = huge_buffer(), bh = huge_buffer();
  std::vector<double> memcpy_split, memcpy_huge;
  auto time_memcpy = [&] {
    auto t0 = std::chrono::steady_clock::now();
    std::memcpy(bh.get(), ah.get(), kv_bytes);
    DoNotOptimize(bh.get()[kv_bytes / 2]);
    memcpy_huge.push_back(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    t0 = std::chrono::steady_clock::now();
    std::memcpy(b.data(), a.data(), kv_bytes);
    DoNotOptimize(b[kv_bytes / 2]);
    const double one = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (copy_threads == 1) return one;
    t0 = std::chrono::steady_clock::now();
    {
      std::vector<std::jthread> threads;
      const uint64_t part = (kv_bytes / copy_threads + 63) & ~uint64_t{63};
      for (int t = 0; t < copy_threads; ++t) {
        const uint64_t at = std::min<uint64_t>(kv_bytes, t * part);
        const uint64_t n = std::min<uint64_t>(kv_bytes - at, part);
        threads.emplace_back([&, at, n] { std::memcpy(b.data() + at, a.data() + at, n); });
      }
    }
    DoNotOptimize(b[kv_bytes / 2]);
    memcpy_split.push_back(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    return one;
  };
  auto median = [](std::vector<double> v) {
    std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
    return v[v.size() / 2];
  };
  time_memcpy();

  for (const std::string& name : opt.codecs) {
    auto codec = ParseCodec(name);
    if (!codec.ok()) cli::Fail(codec.status().ToString(), 2);
    Namespace ns = EngineNamespace(*codec);
    const std::vector<BlockKey> keys = ComputeBlockKeys(ns, tokens);
    const auto reg0 = std::chrono::steady_clock::now();
    auto sid = (*client)->RegisterKvCache(ns, src.Spec());
    auto did = (*client)->RegisterKvCache(ns, dst.Spec());
    if (!sid.ok() || !did.ok()) cli::Fail("RegisterKvCache failed");
    const double register_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - reg0).count();
    // With `collapse` the client puts the two caches into huge pages on a background thread
    // (client/huge_page_collapser.h): the stores are timed once it is done with both, as an
    // engine's would be some seconds after start-up (and so that no collapse competes with the
    // timed stores for the cores). Done is what the client counts (HugePagesOf): every piece
    // tried, or refused (a machine without free huge pages). collapse_s: registration to that
    // point; collapsed_bytes: what MADV_COLLAPSE put into huge pages of the two caches.
    double collapse_s = 0;
    uint64_t collapsed_bytes = 0;
    bool in_huge_pages = false;
    {
      for (;;) {
        auto hs = (*client)->HugePagesOf(*sid);
        auto hd = (*client)->HugePagesOf(*did);
        if (!hs.ok() || !hd.ok()) cli::Fail("HugePagesOf failed");
        collapsed_bytes = hs->collapsed_bytes + hd->collapsed_bytes;
        in_huge_pages = hs->in_huge_pages;
        if (!hs->collapsing && !hd->collapsing) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      collapse_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - reg0).count();
    }
    // How much of this process's anonymous memory is in huge pages now (the engine's 2 x 2x the
    // prompt, when the advice took; the baseline's buffers and the staging memory are not).
    const uint64_t anon_huge = AnonHugePageBytes();
    uint64_t stored_bytes = 0;
    memcpy_split.clear();
    memcpy_huge.clear();
    // Which path the stores took, as the daemon counts it (Stats `store_paths`: blocks published
    // by staging, cross_memory, cross_memory_gather), read before and after them.
    auto store_paths = [&] {
      return nlohmann::json::parse((*client)->Stats().value()).value("store_paths",
                                                                     nlohmann::json::object());
    };
    const nlohmann::json paths_before = store_paths();
    // Each store starts from an empty namespace (Clear, untimed), after one warm-up store.
    std::vector<double> store_times, store_memcpy, load_times, load_memcpy;
    for (int r = 0; r <= opt.reps; ++r) {
      if (!(*client)->Clear(ns.id()).ok()) cli::Fail("Clear failed");
      if (r > 0) store_memcpy.push_back(time_memcpy());
      const auto t0 = std::chrono::steady_clock::now();
      auto n = (*client)->StorePaged(*sid, keys, from).Wait();
      const auto t1 = std::chrono::steady_clock::now();
      if (!n.ok() || *n != size_t{blocks} * kHeads)
        cli::Fail("StorePaged: " +
                  (n.ok() ? std::to_string(*n) + " shards" : n.status().ToString()));
      if (r > 0) store_times.push_back(std::chrono::duration<double>(t1 - t0).count());
    }
    const double store_s = median(store_times);
    nlohmann::json stored_by_path = nlohmann::json::object();
    {
      const nlohmann::json after = store_paths();
      for (auto it = after.begin(); it != after.end(); ++it)
        stored_by_path[it.key()] = it->value("blocks", uint64_t{0}) -
                                   paths_before.value(it.key(), nlohmann::json::object())
                                       .value("blocks", uint64_t{0});
    }
    {
      auto j = nlohmann::json::parse((*client)->Stats().value());
      stored_bytes = j["host"]["payload_bytes"].get<uint64_t>();
    }
    for (int r = 0; r <= opt.reps; ++r) {
      if (r > 0) load_memcpy.push_back(time_memcpy());
      const auto t0 = std::chrono::steady_clock::now();
      auto n = (*client)->LoadPaged(*did, keys, to).Wait();
      const auto t1 = std::chrono::steady_clock::now();
      if (!n.ok() || *n != blocks)
        cli::Fail("LoadPaged: " +
                  (n.ok() ? std::to_string(*n) + " blocks" : n.status().ToString()));
      if (r > 0) load_times.push_back(std::chrono::duration<double>(t1 - t0).count());
    }
    const double load_s = median(load_times);
    // Lossless codecs must bring back the very bytes (checked once, outside the timing).
    if (*codec == Codec::kNone || *codec == Codec::kShuffleLz4 || *codec == Codec::kShuffleZstd) {
      const uint64_t chunk = uint64_t{kPage} * kHeads * kHeadDim * 2;
      for (uint32_t l = 0; l < kLayers; ++l)
        for (uint32_t p = 0; p < 2; ++p)
          for (uint32_t i = 0; i < blocks; ++i)
            if (std::memcmp(dst.Layer(l) + (uint64_t{p} * pages + to[i]) * chunk,
                            src.Layer(l) + (uint64_t{p} * pages + from[i]) * chunk,
                            chunk) != 0)
              cli::Fail("LoadPaged brought back different bytes with codec " + name);
    }
    (void)(*client)->UnregisterKvCache(*sid);
    (void)(*client)->UnregisterKvCache(*did);
    (void)(*client)->Clear(ns.id());
    nlohmann::json extra = {{"kv_bytes", kv_bytes},
                            {"stored_bytes", stored_bytes},
                            {"compression_ratio", double(kv_bytes) / double(stored_bytes)},
                            {"tokens", opt.tokens},
                            {"model", "Llama-3.1-8B shape, bf16, vLLM layout"},
                            {"reps", opt.reps},
                            {"copy_threads", copy_threads},
                            {"engine_kv_bytes", 2 * kLayers * src.LayerBytes()},
                            {"anon_huge_bytes", anon_huge},
                            {"register_s", register_s},
                            {"collapse_s", collapse_s},
                            {"collapsed_bytes", collapsed_bytes},
                            {"source_in_huge_pages", in_huge_pages},
                            {"stored_blocks_by_path", stored_by_path},
                            {"kv_huge_pages", EnvOr("STRATA_KV_HUGE_PAGES", "default")},
                            {"kv_share", EnvOr("STRATA_KV_SHARE", "default")},
                            {"store_path", EnvOr("STRATA_STORE_PATH", "default")}};
    nlohmann::json store_extra = extra, load_extra = extra;
    {
      const double huge = kv_bytes / median(memcpy_huge) / 1e9;
      store_extra["memcpy_huge_gbps"] = load_extra["memcpy_huge_gbps"] = huge;
      store_extra["ratio_to_memcpy_huge"] = kv_bytes / store_s / 1e9 / huge;
      load_extra["ratio_to_memcpy_huge"] = kv_bytes / load_s / 1e9 / huge;
    }
    if (!memcpy_split.empty()) {
      const double split = kv_bytes / median(memcpy_split) / 1e9;
      store_extra["memcpy_split_gbps"] = load_extra["memcpy_split_gbps"] = split;
      store_extra["ratio_to_memcpy_split"] = kv_bytes / store_s / 1e9 / split;
      load_extra["ratio_to_memcpy_split"] = kv_bytes / load_s / 1e9 / split;
    }
    const std::string prefix = "paged_";
    report.Add({prefix + "store/" + name, "GB/s", kv_bytes / store_s / 1e9, "memcpy",
                kv_bytes / median(store_memcpy) / 1e9, true, store_extra});
    report.Add({prefix + "load/" + name, "GB/s", kv_bytes / load_s / 1e9, "memcpy",
                kv_bytes / median(load_memcpy) / 1e9, true, load_extra});
    // Both baselines as rows (the table shows one baseline per row): the store and the load run
    // on up to copy_threads cores (the daemon's copy threads for a cross-memory store, the
    // client's for a load), so they are also read against memcpy split over as many threads.
    if (!memcpy_split.empty()) {
      const std::string split = "memcpy_" + std::to_string(copy_threads) + "threads";
      const double split_gbps = kv_bytes / median(memcpy_split) / 1e9;
      report.Add({prefix + "store/" + name, "GB/s", kv_bytes / store_s / 1e9, split, split_gbps,
                  true, store_extra});
      report.Add({prefix + "load/" + name, "GB/s", kv_bytes / load_s / 1e9, split, split_gbps,
                  true, load_extra});
    }
  }
  // The same prompt in CUDA device memory, where a device is present (engine_bench_gpu.h).
  RunEngineGpuRows(**client, opt.tokens, opt.reps, opt.codecs, report);
}

[[maybe_unused]] const bool kRegistered = cli::RegisterCommand("bench", [](CLI::App& parent) {
  auto opt = std::make_shared<Options>();
  auto* cmd = parent.add_subcommand(
      "engine", "Paged store/load of a 4K-token Llama-3.1-8B prompt through strata serve, per "
                "codec, vs memcpy of the same bytes");
  AddJsonFlag(*cmd, opt->json);
  cmd->add_option("--reps", opt->reps, "Timed repetitions per case (median)")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  cmd->add_option("--tokens", opt->tokens, "Prompt length in tokens (multiple of 16)")
      ->check(CLI::Range(16u, 131072u))
      ->capture_default_str();
  cmd->add_option("--codecs", opt->codecs, "Codecs to measure (comma-separated)")
      ->delimiter(',')
      ->capture_default_str();
  cmd->callback([opt] {
    if (opt->tokens % kPage != 0) cli::Fail("--tokens must be a multiple of 16", 2);
    Run(*opt);
  });
});

}  // namespace
}  // namespace strata::bench
