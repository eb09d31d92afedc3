// The paged data path with KV caches in CUDA device memory (docs/data-plane.md): stores from a
// device cache and loads into a host cache, and the reverse, and device to device, in every
// layout, fp16 and bf16, with every codec, against a real `strata serve` and embedded; the bytes
// equal what the codec's own CPU round trip gives (lossless: the input, bit for bit), so device
// and host caches share every block. The layer-by-layer forms. Registration errors.
// Needs a CUDA device: without one the binary prints "SKIPPED: ..." and exits 77, which ctest
// reports as skipped (never passed).
#include <cuda_runtime_api.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "strata/client.h"
#include "strata/key_chain.h"
#include "strata_kernels/block_codec.h"
#include "strata_kernels/cuda_kernels.h"
#include "strata_kernels/numeric.h"
#include "tests/lib/paged_test_util.h"
#include "tests/skip.h"
#include "tools/strata/serve_process.h"

namespace strata {
namespace {

using namespace paged_test;  // NOLINT: the shared fixtures of the paged tests

void RequireDevice() {
  kernels::KernelStatus st = kernels::cuda::DeviceAvailable();
  if (!st.ok()) {
    testing::SkipTest("no CUDA device (" + st.ToString() + ")");
  }
}

// An engine's paged cache: host bytes (the truth the test compares) and, for a device cache, a
// copy in device memory that Upload/Download keep in step.
struct PagedCache : HostPages {
  bool on_device;
  std::vector<void*> dlayers;

  PagedCache(KvLayout l, uint32_t h, KvDtype d, bool device) : HostPages(l, h, d), on_device(device) {
    if (on_device)
      for (uint32_t i = 0; i < kLayers; ++i) {
        void* p = nullptr;
        REQUIRE(cudaMalloc(&p, LayerBytes()) == cudaSuccess);
        REQUIRE(cudaMemset(p, 0, LayerBytes()) == cudaSuccess);
        dlayers.push_back(p);
      }
  }
  ~PagedCache() {
    for (void* p : dlayers) cudaFree(p);
  }
  PagedCache(const PagedCache&) = delete;
  void Fill(uint64_t seed) {
    HostPages::Fill(seed);
    Upload();
  }
  void Upload() {
    for (uint32_t i = 0; i < dlayers.size(); ++i)
      REQUIRE(cudaMemcpy(dlayers[i], layers[i].data(), LayerBytes(), cudaMemcpyHostToDevice) ==
              cudaSuccess);
  }
  void Download() {
    for (uint32_t i = 0; i < dlayers.size(); ++i)
      REQUIRE(cudaMemcpy(layers[i].data(), dlayers[i], LayerBytes(), cudaMemcpyDeviceToHost) ==
              cudaSuccess);
  }
  KvCacheSpec Spec() {
    KvCacheSpec s;
    s.layout = layout;
    for (uint32_t i = 0; i < kLayers; ++i)
      s.layers.push_back(on_device ? dlayers[i] : static_cast<void*>(layers[i].data()));
    s.num_blocks = kPages;
    s.device = on_device ? 0 : -1;
    return s;
  }
};

// Stores from a cache on `from_device` and loads into one on `to_device`; the loaded shards equal
// the CPU codec's round trip of the stored ones (lossless: the stored ones).
void RoundTrip(Client& client, const Shape& s, bool from_device, bool to_device) {
  INFO("layout " << KvLayoutName(s.layout) << ", " << KvDtypeName(s.dtype) << ", codec "
                 << CodecName(s.codec) << ", " << (from_device ? "device" : "host") << " -> "
                 << (to_device ? "device" : "host"));
  REQUIRE(client.Clear(std::nullopt).ok());
  Namespace ns = MakeNamespace(s, "", "test/paged-cuda");
  PagedCache src(s.layout, s.heads, s.dtype, from_device);
  src.Fill(7);
  auto src_id = client.RegisterKvCache(ns, src.Spec());
  INFO(src_id.status().ToString());
  REQUIRE(src_id.ok());
  constexpr size_t kBlocks = 6;
  const std::vector<BlockKey> keys = ComputeBlockKeys(ns, Tokens(kBlocks, 3));
  const std::vector<int32_t> from = Pages(kBlocks, 1), to = Pages(kBlocks, 2);
  auto stored = client.StorePaged(*src_id, keys, from).Wait();
  INFO(stored.status().ToString());
  REQUIRE(stored.ok());
  CHECK(*stored == kBlocks * s.heads);
  CHECK(*client.StorePaged(*src_id, keys, from).Wait() == 0);

  kernels::BlockShape shard{kLayers, Planes(s.layout), kBlockSize, 1, kHeadDim,
                            static_cast<kernels::KvDtype>(s.dtype)};
  std::unique_ptr<kernels::BlockCodec> codec;
  REQUIRE(kernels::BlockCodec::Create(static_cast<kernels::Codec>(s.codec), shard, {}, &codec)
              .ok());
  std::vector<std::vector<std::byte>> expect;
  for (size_t i = 0; i < kBlocks; ++i)
    for (uint32_t h = 0; h < s.heads; ++h) {
      const auto raw = src.Shard(from[i], h);
      std::vector<std::byte> enc(codec->max_encoded_bytes()), dec(raw.size());
      uint64_t n = 0;
      REQUIRE(codec->Encode(raw, enc, &n).ok());
      REQUIRE(codec->Decode({enc.data(), n}, dec).ok());
      expect.push_back(std::move(dec));
    }

  PagedCache dst(s.layout, s.heads, s.dtype, to_device);
  auto dst_id = client.RegisterKvCache(ns, dst.Spec());
  REQUIRE(dst_id.ok());
  auto loaded = client.LoadPaged(*dst_id, keys, to).Wait();
  INFO(loaded.status().ToString());
  REQUIRE(loaded.ok());
  CHECK(*loaded == kBlocks);
  dst.Download();
  for (size_t i = 0; i < kBlocks; ++i)
    for (uint32_t h = 0; h < s.heads; ++h) CHECK(dst.Shard(to[i], h) == expect[i * s.heads + h]);
  std::vector<bool> used(kPages, false);
  for (int32_t p : to) used[p] = true;
  for (uint32_t p = 0; p < kPages; ++p)
    if (!used[p])
      for (uint32_t h = 0; h < s.heads; ++h) {
        auto z = dst.Shard(p, h);
        CHECK(std::all_of(z.begin(), z.end(), [](std::byte b) { return b == std::byte{0}; }));
      }
  std::vector<uint32_t> other = Tokens(kBlocks, 3);
  other[3 * kBlockSize] ^= 1;
  CHECK(*client.LoadPaged(*dst_id, ComputeBlockKeys(ns, other), to).Wait() == 3);
  CHECK(client.UnregisterKvCache(*src_id).ok());
  CHECK(client.UnregisterKvCache(*dst_id).ok());
}

TEST_CASE("paged CUDA: device <-> host caches, every layout, fp16 and bf16, every codec",
          "[lib][gpu]") {
  RequireDevice();
  Daemon daemon("strata-paged-cuda-test");
  for (Daemon* d : {&daemon, static_cast<Daemon*>(nullptr)}) {
    INFO((d ? "daemon" : "embedded"));
    auto client = ConnectTo(d);
    for (KvLayout layout : {KvLayout::kVllmFlashAttn, KvLayout::kFlashInfer, KvLayout::kMla})
      for (KvDtype dtype : {KvDtype::kFloat16, KvDtype::kBFloat16})
        for (Codec codec : {Codec::kNone, Codec::kShuffleZstd, Codec::kShuffleLz4,
                            Codec::kFp8E4M3, Codec::kInt8Group, Codec::kInt4Kivi}) {
          const Shape s{layout, layout == KvLayout::kMla ? 1u : 4u, dtype, codec};
          RoundTrip(*client, s, true, false);
          RoundTrip(*client, s, false, true);
          RoundTrip(*client, s, true, true);
        }
  }
}

TEST_CASE("paged CUDA: layer-by-layer store and load", "[lib][gpu]") {
  RequireDevice();
  Daemon daemon("strata-paged-cuda-test");
  auto client = ConnectTo(&daemon);
  for (Codec codec : {Codec::kNone, Codec::kShuffleZstd, Codec::kFp8E4M3}) {
    INFO(CodecName(codec));
    const Shape s{KvLayout::kFlashInfer, 2, KvDtype::kFloat16, codec};
    Namespace ns = MakeNamespace(s, "layerwise", "test/paged-cuda");
    PagedCache src(s.layout, s.heads, s.dtype, true), dst(s.layout, s.heads, s.dtype, true);
    src.Fill(21);
    auto src_id = client->RegisterKvCache(ns, src.Spec());
    auto dst_id = client->RegisterKvCache(ns, dst.Spec());
    REQUIRE(src_id.ok());
    REQUIRE(dst_id.ok());
    const std::vector<BlockKey> keys = ComputeBlockKeys(ns, Tokens(4, 5));
    const std::vector<int32_t> from = Pages(4, 6), to = Pages(4, 8);
    auto store = client->StorePagedLayerwise(*src_id, keys, from);
    REQUIRE(store.ok());
    for (uint32_t l = 0; l < kLayers; ++l) REQUIRE((*store)->StoreLayer(l).ok());
    // The engine reuses its pages: what was saved is already staged.
    auto want = src.layers;
    for (void* p : src.dlayers) REQUIRE(cudaMemset(p, 0, src.LayerBytes()) == cudaSuccess);
    auto finished = (*store)->Finish().Wait();
    INFO(finished.status().ToString());
    REQUIRE(finished.ok());
    CHECK(*finished == 4 * s.heads);

    auto load = client->LoadPagedLayerwise(*dst_id, keys, to);
    REQUIRE(load.ok());
    kernels::BlockShape shard{kLayers, 2, kBlockSize, 1, kHeadDim, kernels::KvDtype::kFloat16};
    std::unique_ptr<kernels::BlockCodec> bc;
    REQUIRE(kernels::BlockCodec::Create(static_cast<kernels::Codec>(codec), shard, {}, &bc).ok());
    PagedCache ref(s.layout, s.heads, s.dtype, false);
    ref.layers = want;
    for (uint32_t l = 0; l < kLayers; ++l) {
      auto n = (*load)->WaitLayer(l);
      REQUIRE(n.ok());
      CHECK(*n == 4);
      dst.Download();  // layer l is in place once WaitLayer(l) returned
      for (size_t i = 0; i < 4; ++i)
        for (uint32_t h = 0; h < s.heads; ++h) {
          const auto raw = ref.Shard(from[i], h);
          std::vector<std::byte> enc(bc->max_encoded_bytes()), dec(raw.size());
          uint64_t len = 0;
          REQUIRE(bc->Encode(raw, enc, &len).ok());
          REQUIRE(bc->Decode({enc.data(), len}, dec).ok());
          const uint64_t layer_bytes = dec.size() / kLayers;
          const auto got = dst.Shard(to[i], h);
          CHECK(std::memcmp(got.data() + l * layer_bytes, dec.data() + l * layer_bytes,
                            layer_bytes) == 0);
        }
    }
  }
}

TEST_CASE("paged CUDA: registrations that do not name device memory are refused", "[lib][gpu]") {
  RequireDevice();
  auto client = ConnectTo(nullptr);
  const Shape s{KvLayout::kVllmFlashAttn, 2, KvDtype::kFloat16, Codec::kNone};
  Namespace ns = MakeNamespace(s, "", "test/paged-cuda");
  PagedCache host(s.layout, 2, s.dtype, false);
  KvCacheSpec spec = host.Spec();
  spec.device = 0;  // host pages named as device memory
  CHECK(client->RegisterKvCache(ns, spec).status().IsInvalidArgument());
  PagedCache dev(s.layout, 2, s.dtype, true);
  spec = dev.Spec();
  spec.device = 4096;  // no such device
  CHECK(client->RegisterKvCache(ns, spec).status().IsInvalidArgument());
  auto id = client->RegisterKvCache(ns, dev.Spec());
  REQUIRE(id.ok());
  const auto keys = ComputeBlockKeys(ns, Tokens(2, 1));
  CHECK(client->StorePaged(*id, keys, std::vector<int32_t>{0, int32_t{kPages}})
            .Wait()
            .status()
            .IsInvalidArgument());
}

}  // namespace
}  // namespace strata
