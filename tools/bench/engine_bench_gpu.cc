// The GPU rows of `strata bench engine` (engine_bench_gpu.h). Copies per store: the gather kernel
// writes engine pages into the client's registered staging over PCIe (codec none), or into device
// scratch then the encode kernel into staging (lossy codecs), or into pinned scratch then the CPU
// encoder (lossless); then the daemon's copy staging -> pool. Per load: the CPU verifies each
// shard in the pool, then the scatter kernel reads it over PCIe from the registered pool (codec
// none), or the decode kernel does (lossy), or the CPU decodes into pinned scratch (lossless).
// The baseline is one pinned cudaMemcpy of the same bytes in the transfer's direction, timed
// right before each store and each load.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <random>

#include <nlohmann/json.hpp>

#include "../strata/command_registry.h"
#include "engine_bench_gpu.h"
#include "strata/key_chain.h"
#include "strata_kernels/numeric.h"

namespace strata::bench {
namespace {

constexpr uint32_t kLayers = 32, kHeads = 8, kHeadDim = 128, kPage = 16;

Namespace GpuNamespace(Codec codec) {
  NamespaceSpec s;
  s.model_id = "meta-llama/Llama-3.1-8B-Instruct";
  s.kv_dtype = KvDtype::kBFloat16;
  s.num_layers = kLayers;
  s.num_kv_heads = kHeads;
  s.head_dim = kHeadDim;
  s.block_size = kPage;
  s.codec = codec;
  s.tenant_salt = "bench-engine-gpu";
  return std::move(Namespace::Create(s)).value();
}

void Check(cudaError_t e, const char* what) {
  if (e != cudaSuccess)
    cli::Fail(std::string("bench engine (GPU): ") + what + ": " + cudaGetErrorString(e));
}

// A paged cache in vLLM's layout in device memory: per layer [2, pages, 16, 8, 128] bf16.
struct DeviceEngine {
  uint32_t pages;
  std::vector<void*> layers;
  explicit DeviceEngine(uint32_t n) : pages(n) {
    for (uint32_t l = 0; l < kLayers; ++l) {
      void* p = nullptr;
      Check(cudaMalloc(&p, LayerBytes()), "cudaMalloc");
      layers.push_back(p);
    }
  }
  ~DeviceEngine() {
    for (void* p : layers) cudaFree(p);
  }
  uint64_t LayerBytes() const { return 2ull * pages * kPage * kHeads * kHeadDim * 2; }
  KvCacheSpec Spec() const {
    KvCacheSpec s;
    s.layout = KvLayout::kVllmFlashAttn;
    s.layers = layers;
    s.num_blocks = pages;
    s.device = 0;
    return s;
  }
};

double Median(std::vector<double> v) {
  std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
  return v[v.size() / 2];
}

}  // namespace

bool RunEngineGpuRows(Client& client, uint32_t tokens, int reps,
                      const std::vector<std::string>& codecs, BenchReport& report) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    (void)cudaGetLastError();
    return false;
  }
  Check(cudaSetDevice(0), "cudaSetDevice");
  const uint32_t blocks = tokens / kPage, pages = blocks * 2;
  const uint64_t kv_bytes = uint64_t{blocks} * 2 * kLayers * kPage * kHeads * kHeadDim * 2;
  DeviceEngine src(pages), dst(pages);
  {  // KV-like bf16 values, as the host rows use
    std::mt19937_64 rng(1);
    std::normal_distribution<float> normal(0.0f, 1.5f);
    std::vector<uint16_t> host(src.LayerBytes() / 2);
    for (auto& v : host) v = kernels::FloatToBf16(normal(rng));
    for (void* l : src.layers)
      Check(cudaMemcpy(l, host.data(), src.LayerBytes(), cudaMemcpyHostToDevice), "upload");
  }
  std::vector<int32_t> ids(pages);
  for (uint32_t i = 0; i < pages; ++i) ids[i] = static_cast<int32_t>(i);
  std::shuffle(ids.begin(), ids.end(), std::mt19937(2));
  const std::vector<int32_t> from(ids.begin(), ids.begin() + blocks);
  std::shuffle(ids.begin(), ids.end(), std::mt19937(3));
  const std::vector<int32_t> to(ids.begin(), ids.begin() + blocks);
  std::vector<uint32_t> prompt(tokens);
  for (uint32_t i = 0; i < tokens; ++i) prompt[i] = (i * 2654435761u) % 128000;

  // Baseline: pinned cudaMemcpy of the same bytes, D2H (a store's direction) and H2D (a load's).
  void* pinned = nullptr;
  void* dbuf = nullptr;
  Check(cudaMallocHost(&pinned, kv_bytes), "cudaMallocHost");
  Check(cudaMalloc(&dbuf, kv_bytes), "cudaMalloc");
  auto time_copy = [&](cudaMemcpyKind kind) {
    const auto t0 = std::chrono::steady_clock::now();
    Check(kind == cudaMemcpyDeviceToHost ? cudaMemcpy(pinned, dbuf, kv_bytes, kind)
                                         : cudaMemcpy(dbuf, pinned, kv_bytes, kind),
          "cudaMemcpy");
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  time_copy(cudaMemcpyDeviceToHost);
  time_copy(cudaMemcpyHostToDevice);

  for (const std::string& name : codecs) {
    auto codec = ParseCodec(name);
    if (!codec.ok()) cli::Fail(codec.status().ToString(), 2);
    Namespace ns = GpuNamespace(*codec);
    const std::vector<BlockKey> keys = ComputeBlockKeys(ns, prompt);
    auto sid = client.RegisterKvCache(ns, src.Spec());
    auto did = client.RegisterKvCache(ns, dst.Spec());
    if (!sid.ok() || !did.ok())
      cli::Fail("RegisterKvCache (GPU): " + (sid.ok() ? did.status() : sid.status()).ToString());
    std::vector<double> store_t, store_base, load_t, load_base;
    for (int r = 0; r <= reps; ++r) {
      if (!client.Clear(ns.id()).ok()) cli::Fail("Clear failed");
      if (r > 0) store_base.push_back(time_copy(cudaMemcpyDeviceToHost));
      const auto t0 = std::chrono::steady_clock::now();
      auto n = client.StorePaged(*sid, keys, from).Wait();
      const auto t1 = std::chrono::steady_clock::now();
      if (!n.ok() || *n != size_t{blocks} * kHeads)
        cli::Fail("StorePaged (GPU): " +
                  (n.ok() ? std::to_string(*n) + " shards" : n.status().ToString()));
      if (r > 0) store_t.push_back(std::chrono::duration<double>(t1 - t0).count());
    }
    uint64_t stored_bytes = 0;
    {
      auto j = nlohmann::json::parse(client.Stats().value());
      stored_bytes = j["host"]["payload_bytes"].get<uint64_t>();
    }
    for (int r = 0; r <= reps; ++r) {
      if (r > 0) load_base.push_back(time_copy(cudaMemcpyHostToDevice));
      const auto t0 = std::chrono::steady_clock::now();
      auto n = client.LoadPaged(*did, keys, to).Wait();
      const auto t1 = std::chrono::steady_clock::now();
      if (!n.ok() || *n != blocks)
        cli::Fail("LoadPaged (GPU): " +
                  (n.ok() ? std::to_string(*n) + " blocks" : n.status().ToString()));
      if (r > 0) load_t.push_back(std::chrono::duration<double>(t1 - t0).count());
    }
    // Lossless codecs bring back the very bytes: compare one page chunk per block on the host.
    if (*codec == Codec::kNone || *codec == Codec::kShuffleLz4 || *codec == Codec::kShuffleZstd) {
      const uint64_t chunk = uint64_t{kPage} * kHeads * kHeadDim * 2;
      std::vector<std::byte> a(chunk), b(chunk);
      for (uint32_t l = 0; l < kLayers; l += 7)
        for (uint32_t i = 0; i < blocks; ++i) {
          Check(cudaMemcpy(a.data(), static_cast<char*>(src.layers[l]) + uint64_t(from[i]) * chunk,
                           chunk, cudaMemcpyDeviceToHost), "check");
          Check(cudaMemcpy(b.data(), static_cast<char*>(dst.layers[l]) + uint64_t(to[i]) * chunk,
                           chunk, cudaMemcpyDeviceToHost), "check");
          if (a != b) cli::Fail("LoadPaged (GPU) brought back different bytes with " + name);
        }
    }
    (void)client.UnregisterKvCache(*sid);
    (void)client.UnregisterKvCache(*did);
    (void)client.Clear(ns.id());
    cudaDeviceProp prop{};
    (void)cudaGetDeviceProperties(&prop, 0);
    nlohmann::json extra = {{"kv_bytes", kv_bytes},
                            {"stored_bytes", stored_bytes},
                            {"compression_ratio", double(kv_bytes) / double(stored_bytes)},
                            {"tokens", tokens},
                            {"device", prop.name},
                            {"model", "Llama-3.1-8B shape, bf16, vLLM layout, CUDA pages"},
                            {"reps", reps}};
    report.Add({"paged_store_gpu/" + name, "GB/s", kv_bytes / Median(store_t) / 1e9,
                "cudaMemcpy_d2h_pinned", kv_bytes / Median(store_base) / 1e9, true, extra});
    report.Add({"paged_load_gpu/" + name, "GB/s", kv_bytes / Median(load_t) / 1e9,
                "cudaMemcpy_h2d_pinned", kv_bytes / Median(load_base) / 1e9, true, extra});
  }
  cudaFreeHost(pinned);
  cudaFree(dbuf);
  return true;
}

}  // namespace strata::bench
