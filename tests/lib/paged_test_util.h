// What the paged data-path tests share (paged_test.cc on host caches, paged_cuda_test.cc on device
// caches): a small model shape, an engine's paged cache as host bytes with the layouts' geometry
// (kernels/kv_layout.h), prompts and page assignments, and a real `strata serve` to run against.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <new>
#include <random>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "strata/client.h"
#include "strata_kernels/numeric.h"
#include "tools/strata/serve_process.h"

namespace strata::paged_test {

constexpr uint32_t kLayers = 3, kBlockSize = 16, kHeadDim = 64, kPages = 24;

struct Shape {
  KvLayout layout;
  uint32_t heads;  // the model's KV heads (1 for MLA)
  KvDtype dtype;
  Codec codec;
};

inline uint32_t Planes(KvLayout l) { return l == KvLayout::kMla ? 1 : 2; }

inline Namespace MakeNamespace(const Shape& s, const std::string& salt = "",
                               const std::string& model = "test/paged") {
  NamespaceSpec spec;
  spec.model_id = model;
  spec.kv_dtype = s.dtype;
  spec.attention = s.layout == KvLayout::kMla ? AttentionKind::kMla : AttentionKind::kKeyValue;
  spec.num_layers = kLayers;
  spec.num_kv_heads = s.heads;
  spec.head_dim = kHeadDim;
  spec.block_size = kBlockSize;
  spec.codec = s.codec;
  spec.tenant_salt = salt;
  return std::move(Namespace::Create(spec)).value();
}

// Allocates a layer from operator new or, with `huge`, from an anonymous mapping of its own,
// aligned to 2 MiB and advised MADV_HUGEPAGE before its first touch, so that the kernel backs it
// with huge pages (where transparent huge pages are not `never` and one is free).
template <class T>
struct LayerAllocator {
  using value_type = T;
  static constexpr size_t kHuge = size_t{2} << 20;
  bool huge = false;
  LayerAllocator() = default;
  explicit LayerAllocator(bool h) : huge(h) {}
  template <class U>
  LayerAllocator(const LayerAllocator<U>& o) : huge(o.huge) {}  // NOLINT: rebinding
  static size_t MappedBytes(size_t n) { return (n * sizeof(T) + kHuge - 1) / kHuge * kHuge; }
  T* allocate(size_t n) {
    if (!huge) return static_cast<T*>(::operator new(n * sizeof(T)));
    const size_t len = MappedBytes(n);
    void* m = ::mmap(nullptr, len + kHuge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                     -1, 0);
    if (m == MAP_FAILED) throw std::bad_alloc();
    auto* base = static_cast<std::byte*>(m);
    const size_t head = (kHuge - reinterpret_cast<uintptr_t>(base) % kHuge) % kHuge;
    if (head > 0) ::munmap(base, head);
    ::munmap(base + head + len, kHuge - head);
    (void)::madvise(base + head, len, MADV_HUGEPAGE);  // refused: 4 KiB pages, same test
    return reinterpret_cast<T*>(base + head);
  }
  void deallocate(T* p, size_t n) {
    if (!huge) return ::operator delete(p);
    ::munmap(p, MappedBytes(n));
  }
  bool operator==(const LayerAllocator& o) const { return huge == o.huge; }
};

// An engine's paged cache of `heads` heads as host bytes, one buffer per layer: what the tests
// fill, compare, and (host caches) register. With `huge`, each layer in huge pages
// (LayerAllocator).
struct HostPages {
  using Layer = std::vector<std::byte, LayerAllocator<std::byte>>;
  KvLayout layout;
  uint32_t heads;
  KvDtype dtype;
  std::vector<Layer> layers;

  HostPages(KvLayout l, uint32_t h, KvDtype d, bool huge = false) : layout(l), heads(h), dtype(d) {
    layers.assign(kLayers, Layer(LayerBytes(), LayerAllocator<std::byte>(huge)));
  }
  uint64_t PageChunkBytes() const { return uint64_t{kBlockSize} * heads * kHeadDim * 2; }
  uint64_t LayerBytes() const { return Planes(layout) * kPages * PageChunkBytes(); }
  // KV-like values (normal, |x| of a few units; finite, so every lossy codec takes them).
  void Fill(uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.5f);
    for (auto& layer : layers)
      for (size_t i = 0; i + 1 < layer.size(); i += 2) {
        const float x = normal(rng);
        const uint16_t v = dtype == KvDtype::kBFloat16 ? kernels::FloatToBf16(x)
                                                       : kernels::FloatToHalf(x);
        std::memcpy(&layer[i], &v, 2);
      }
  }
  void Zero() {
    for (auto& layer : layers) std::fill(layer.begin(), layer.end(), std::byte{0});
  }
  // Byte offset of (plane, page) in a layer, as kernels/kv_layout.h draws the layouts.
  uint64_t ChunkOffset(uint32_t plane, uint32_t page) const {
    switch (layout) {
      case KvLayout::kVllmFlashAttn: return (uint64_t{plane} * kPages + page) * PageChunkBytes();
      case KvLayout::kFlashInfer: return (uint64_t{page} * 2 + plane) * PageChunkBytes();
      case KvLayout::kMla: return uint64_t{page} * PageChunkBytes();
    }
    return 0;
  }
  // The [token][head_dim] rows of head `h` of (layer, plane, page), concatenated.
  std::vector<std::byte> Head(uint32_t layer, uint32_t plane, uint32_t page, uint32_t h) const {
    const uint64_t row = kHeadDim * 2;
    std::vector<std::byte> out(kBlockSize * row);
    const std::byte* chunk = layers[layer].data() + ChunkOffset(plane, page);
    for (uint32_t t = 0; t < kBlockSize; ++t)
      std::memcpy(out.data() + t * row, chunk + (uint64_t{t} * heads + h) * row, row);
    return out;
  }
  // One head shard as the paged API stores it: [layer][plane][token][head_dim].
  std::vector<std::byte> Shard(uint32_t page, uint32_t h) const {
    std::vector<std::byte> out;
    for (uint32_t l = 0; l < kLayers; ++l)
      for (uint32_t p = 0; p < Planes(layout); ++p) {
        auto rows = Head(l, p, page, h);
        out.insert(out.end(), rows.begin(), rows.end());
      }
    return out;
  }
};

inline std::vector<uint32_t> Tokens(size_t blocks, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint32_t> t(blocks * kBlockSize);
  for (auto& x : t) x = rng() % 128000;
  return t;
}

// A random assignment of `n` distinct pages.
inline std::vector<int32_t> Pages(size_t n, uint32_t seed) {
  std::vector<int32_t> all(kPages);
  for (uint32_t i = 0; i < kPages; ++i) all[i] = static_cast<int32_t>(i);
  std::shuffle(all.begin(), all.end(), std::mt19937(seed));
  all.resize(n);
  return all;
}

inline float ToFloat(KvDtype d, const std::byte* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return d == KvDtype::kBFloat16 ? kernels::Bf16ToFloat(v) : kernels::HalfToFloat(v);
}

// A real `strata serve` (256 MiB host pool, no disk) in a directory of its own. STRATA_CLI names
// the binary where the tests run away from their build tree (kernels/gpu_check/device_run.sh).
struct Daemon {
  std::string dir;
  std::unique_ptr<cli::ServeProcess> serve;
  explicit Daemon(const std::string& name = "strata-paged-test") {
    dir = "/tmp/" + name + "-" + std::to_string(::getpid());
    std::filesystem::create_directories(dir);
    cli::ServeOptions o;
    const char* cli = std::getenv("STRATA_CLI");
    o.exe = cli != nullptr && *cli != '\0' ? cli : STRATA_CLI_PATH;
    o.args = {"serve", "--socket", dir + "/s.sock", "--no-disk", "--host-pool", "256MiB"};
    o.socket = dir + "/s.sock";
    o.ready = cli::ServeReady::kClientConnects;
    o.stop_signal = SIGKILL;
    auto s = cli::SpawnServe(std::move(o));
    INFO(s.status().ToString());
    REQUIRE(s.ok());
    serve = std::move(s).value();
  }
  ~Daemon() {
    serve.reset();
    std::filesystem::remove_all(dir);
  }
};

// A client of `d`'s daemon, or embedded (256 MiB, LRU) when `d` is null.
inline std::unique_ptr<Client> ConnectTo(Daemon* d, const ClientOptions& options = {}) {
  auto c = d ? Client::Connect(d->serve->socket(), options)
             : Client::Embedded({256ull << 20, "", 0, "lru"}, options);
  INFO(c.status().ToString());
  REQUIRE(c.ok());
  return std::move(c).value();
}

}  // namespace strata::paged_test
