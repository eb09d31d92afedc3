// The engine data plane (strata/client.h, docs/data-plane.md): paged KV in every layout, dtype
// and codec stored and loaded through a real `strata serve` and in embedded mode; lossless codecs
// bit for bit, lossy codecs exactly as the codec's own CPU round trip (and close to the input);
// stored bytes in Stats equal the encoded sizes; any tensor-parallel degree loads what another
// stored; the layer-by-layer forms.
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "lib/client/huge_pages.h"
#include "strata/client.h"
#include "strata/key_chain.h"
#include "strata_kernels/block_codec.h"
#include "strata_kernels/numeric.h"
#include "tests/lib/paged_test_util.h"
#include "tools/strata/serve_process.h"

namespace strata {
namespace {

using namespace paged_test;  // NOLINT: the shared fixtures of the paged tests

// A host cache as the engine registers it, possibly as one rank's slice of the heads.
struct PagedCache : HostPages {
  using HostPages::HostPages;
  KvCacheSpec Spec(uint32_t tp_rank = 0, uint32_t tp_size = 1) {
    KvCacheSpec s;
    s.layout = layout;
    for (auto& l : layers) s.layers.push_back(l.data());
    s.num_blocks = kPages;
    s.tp_rank = tp_rank;
    s.tp_size = tp_size;
    return s;
  }
};

uint64_t StoredPayloadBytes(Client& c) {
  auto j = nlohmann::json::parse(c.Stats().value());
  return j["host"]["payload_bytes"].get<uint64_t>();
}

// `huge`: the engine's pages in huge pages (HostPages, LayerAllocator).
void RoundTrip(Client& client, const Shape& s, bool huge = false) {
  INFO("layout " << KvLayoutName(s.layout) << ", " << KvDtypeName(s.dtype) << ", codec "
                 << CodecName(s.codec) << (huge ? ", huge pages" : ""));
  REQUIRE(client.Clear(std::nullopt).ok());
  Namespace ns = MakeNamespace(s);
  PagedCache src(s.layout, s.heads, s.dtype, huge);
  src.Fill(7);
  auto src_id = client.RegisterKvCache(ns, src.Spec());
  REQUIRE(src_id.ok());
  constexpr size_t kBlocks = 6;
  const std::vector<BlockKey> keys = ComputeBlockKeys(ns, Tokens(kBlocks, 3));
  const std::vector<int32_t> from = Pages(kBlocks, 1), to = Pages(kBlocks, 2);

  auto stored = client.StorePaged(*src_id, keys, from).Wait();
  REQUIRE(stored.ok());
  CHECK(*stored == kBlocks * s.heads);
  CHECK(*client.StorePaged(*src_id, keys, from).Wait() == 0);  // cached already
  CHECK(*client.LookupPaged(*src_id, keys) == kBlocks);

  // What the codec's own CPU round trip gives for each shard, and its encoded size.
  kernels::BlockShape shard{kLayers, Planes(s.layout), kBlockSize, 1, kHeadDim,
                            static_cast<kernels::KvDtype>(s.dtype)};
  std::unique_ptr<kernels::BlockCodec> codec;
  REQUIRE(kernels::BlockCodec::Create(static_cast<kernels::Codec>(s.codec), shard, {}, &codec)
              .ok());
  uint64_t encoded_total = 0;
  std::vector<std::vector<std::byte>> expect;  // [block * heads + h]
  for (size_t i = 0; i < kBlocks; ++i)
    for (uint32_t h = 0; h < s.heads; ++h) {
      const auto raw = src.Shard(from[i], h);
      std::vector<std::byte> enc(codec->max_encoded_bytes()), dec(raw.size());
      uint64_t n = 0;
      REQUIRE(codec->Encode(raw, enc, &n).ok());
      REQUIRE(codec->Decode({enc.data(), n}, dec).ok());
      encoded_total += n;
      expect.push_back(std::move(dec));
    }
  CHECK(StoredPayloadBytes(client) == encoded_total);
  if (s.codec == Codec::kShuffleZstd) CHECK(encoded_total < kBlocks * ns.block_bytes());

  PagedCache dst(s.layout, s.heads, s.dtype, huge);
  auto dst_id = client.RegisterKvCache(ns, dst.Spec());
  REQUIRE(dst_id.ok());
  auto loaded = client.LoadPaged(*dst_id, keys, to).Wait();
  REQUIRE(loaded.ok());
  CHECK(*loaded == kBlocks);
  double err2 = 0, ref2 = 0;
  for (size_t i = 0; i < kBlocks; ++i)
    for (uint32_t h = 0; h < s.heads; ++h) {
      const auto got = dst.Shard(to[i], h);
      CHECK(got == expect[i * s.heads + h]);  // exactly the codec's round trip
      const auto raw = src.Shard(from[i], h);
      if (s.codec == Codec::kNone || s.codec == Codec::kShuffleZstd ||
          s.codec == Codec::kShuffleLz4)
        CHECK(got == raw);  // lossless: bit for bit
      for (size_t b = 0; b + 1 < raw.size(); b += 2) {
        const double x = ToFloat(s.dtype, &raw[b]), y = ToFloat(s.dtype, &got[b]);
        err2 += (x - y) * (x - y);
        ref2 += x * x;
      }
    }
  // Lossy codecs stay close: relative RMS error (FP8 ~3%, INT8 ~1%, INT4 ~8% on this data).
  CHECK(std::sqrt(err2 / ref2) < 0.15);
  // Pages outside the loaded ones are untouched.
  std::vector<bool> used(kPages, false);
  for (int32_t p : to) used[p] = true;
  for (uint32_t p = 0; p < kPages; ++p)
    if (!used[p])
      for (uint32_t h = 0; h < s.heads; ++h) {
        auto z = dst.Shard(p, h);
        CHECK(std::all_of(z.begin(), z.end(), [](std::byte b) { return b == std::byte{0}; }));
      }
  // A prefix that diverges after block 3 loads 3 blocks.
  std::vector<uint32_t> other = Tokens(kBlocks, 3);
  other[3 * kBlockSize] ^= 1;
  CHECK(*client.LoadPaged(*dst_id, ComputeBlockKeys(ns, other), to).Wait() == 3);
  CHECK(client.UnregisterKvCache(*src_id).ok());
  CHECK(client.UnregisterKvCache(*dst_id).ok());
}

// Runs `body` with a client of each store path: through `daemon` cross-memory (the daemon
// gathers the head shards out of the engine's pages itself; codec none) and staging (the client
// gathers), and embedded.
template <typename Body>
void ForEachStorePath(Daemon& daemon, Body body) {
  ClientOptions cross_memory, staging;
  cross_memory.store_path = ClientOptions::StorePath::kCrossMemory;
  staging.store_path = ClientOptions::StorePath::kStaging;
  for (const auto& [d, options] : {std::pair{&daemon, cross_memory}, std::pair{&daemon, staging},
                                   std::pair{static_cast<Daemon*>(nullptr), staging}}) {
    INFO((d ? "daemon" : "embedded") << ", store path "
                                     << (options.store_path == staging.store_path ? "staging"
                                                                                  : "cross-memory"));
    auto client = ConnectTo(d, options);
    body(*client);
  }
}

TEST_CASE("paged store and load: every layout, fp16 and bf16, every codec, daemon and embedded",
          "[lib][integration]") {
  Daemon daemon;
  ForEachStorePath(daemon, [](Client& client) {
    for (KvLayout layout : {KvLayout::kVllmFlashAttn, KvLayout::kFlashInfer, KvLayout::kMla})
      for (KvDtype dtype : {KvDtype::kFloat16, KvDtype::kBFloat16})
        for (Codec codec : {Codec::kNone, Codec::kShuffleZstd, Codec::kShuffleLz4,
                            Codec::kFp8E4M3, Codec::kInt8Group, Codec::kInt4Kivi})
          RoundTrip(client, {layout, layout == KvLayout::kMla ? 1u : 4u, dtype, codec});
  });
}

TEST_CASE("paged store and load from huge pages: every layout, both store paths, bit for bit",
          "[lib][integration]") {
  // The engine's pages in 2 MiB pages (ClientOptions::kv_huge_pages, docs/data-plane.md "Engine
  // KV in huge pages"): process_vm_readv and the gathers see huge-page mappings.
  const uint64_t before = AnonHugePageBytes();
  {
    HostPages probe(KvLayout::kVllmFlashAttn, 4, KvDtype::kBFloat16, /*huge=*/true);
    if (AnonHugePageBytes() <= before)
      WARN("no transparent huge page was given to the test (THP never, or none free): the "
           "pages below are 4 KiB pages");
  }
  Daemon daemon;
  ForEachStorePath(daemon, [](Client& client) {
    for (KvLayout layout : {KvLayout::kVllmFlashAttn, KvLayout::kFlashInfer, KvLayout::kMla})
      for (KvDtype dtype : {KvDtype::kFloat16, KvDtype::kBFloat16})
        for (Codec codec : {Codec::kNone, Codec::kShuffleLz4})
          RoundTrip(client, {layout, layout == KvLayout::kMla ? 1u : 4u, dtype, codec},
                    /*huge=*/true);
  });
}

// Stores at TP degree `from_tp` (every rank registers its slice of the heads of one model-wide
// cache) and loads at `to_tp`; every rank gets exactly its heads.
void TensorParallel(Client& client, uint32_t from_tp, uint32_t to_tp) {
  INFO("TP " << from_tp << " -> " << to_tp);
  REQUIRE(client.Clear(std::nullopt).ok());
  const Shape s{KvLayout::kVllmFlashAttn, 4, KvDtype::kBFloat16, Codec::kShuffleLz4};
  Namespace ns = MakeNamespace(s);
  PagedCache full(s.layout, s.heads, s.dtype);
  full.Fill(11);
  constexpr size_t kBlocks = 5;
  const std::vector<BlockKey> keys = ComputeBlockKeys(ns, Tokens(kBlocks, 9));
  const std::vector<int32_t> pages = Pages(kBlocks, 4);
  // Each storing rank holds its heads only: copy its slice out of the full cache.
  size_t stored = 0;
  for (uint32_t r = 0; r < from_tp; ++r) {
    const uint32_t hr = s.heads / from_tp;
    PagedCache rank(s.layout, hr, s.dtype);
    for (uint32_t l = 0; l < kLayers; ++l)
      for (uint32_t p = 0; p < 2; ++p)
        for (int32_t page : pages)
          for (uint32_t h = 0; h < hr; ++h) {
            auto rows = full.Head(l, p, page, r * hr + h);
            std::byte* chunk = rank.layers[l].data() + rank.ChunkOffset(p, page);
            for (uint32_t t = 0; t < kBlockSize; ++t)
              std::memcpy(chunk + (uint64_t{t} * hr + h) * kHeadDim * 2,
                          rows.data() + t * kHeadDim * 2, kHeadDim * 2);
          }
    auto id = client.RegisterKvCache(ns, rank.Spec(r, from_tp));
    REQUIRE(id.ok());
    stored += client.StorePaged(*id, keys, pages).Wait().value();
  }
  CHECK(stored == kBlocks * s.heads);
  for (uint32_t r = 0; r < to_tp; ++r) {
    const uint32_t hr = s.heads / to_tp;
    PagedCache rank(s.layout, hr, s.dtype);
    auto id = client.RegisterKvCache(ns, rank.Spec(r, to_tp));
    REQUIRE(id.ok());
    CHECK(*client.LookupPaged(*id, keys) == kBlocks);
    REQUIRE(*client.LoadPaged(*id, keys, pages).Wait() == kBlocks);
    for (uint32_t l = 0; l < kLayers; ++l)
      for (uint32_t p = 0; p < 2; ++p)
        for (int32_t page : pages)
          for (uint32_t h = 0; h < hr; ++h) CHECK(rank.Head(l, p, page, h) ==
                                                  full.Head(l, p, page, r * hr + h));
  }
}

TEST_CASE("paged: any tensor-parallel degree loads what another stored (2->4, 4->1, 1->2)",
          "[lib][integration]") {
  Daemon daemon;
  auto client = ConnectTo(&daemon);
  TensorParallel(*client, 2, 4);
  TensorParallel(*client, 4, 1);
  TensorParallel(*client, 1, 2);
  // A degree that does not divide the heads is refused at registration.
  const Shape s{KvLayout::kVllmFlashAttn, 4, KvDtype::kBFloat16, Codec::kNone};
  PagedCache c(s.layout, 4, s.dtype);
  CHECK(client->RegisterKvCache(MakeNamespace(s), c.Spec(0, 3)).status().IsInvalidArgument());
}

TEST_CASE("paged: layer-by-layer store and load", "[lib][integration]") {
  Daemon daemon;
  for (Codec codec : {Codec::kNone, Codec::kShuffleZstd}) {
    auto client = ConnectTo(&daemon);
    const Shape s{KvLayout::kFlashInfer, 2, KvDtype::kFloat16, codec};
    Namespace ns = MakeNamespace(s, "layerwise");
    PagedCache src(s.layout, s.heads, s.dtype), dst(s.layout, s.heads, s.dtype);
    src.Fill(21);
    auto src_id = client->RegisterKvCache(ns, src.Spec());
    auto dst_id = client->RegisterKvCache(ns, dst.Spec());
    REQUIRE(src_id.ok());
    REQUIRE(dst_id.ok());
    const std::vector<BlockKey> keys = ComputeBlockKeys(ns, Tokens(4, 5));
    const std::vector<int32_t> from = Pages(4, 6), to = Pages(4, 8);
    auto store = client->StorePagedLayerwise(*src_id, keys, from);
    REQUIRE(store.ok());
    // The engine saves each layer as its forward pass finishes it; a page may change after.
    for (uint32_t l = 0; l < kLayers; ++l) REQUIRE((*store)->StoreLayer(l).ok());
    PagedCache want = src;
    src.Zero();  // the engine reuses its pages: what was saved is already staged
    CHECK(*(*store)->Finish().Wait() == 4 * s.heads);
    // Missing a layer is an error, not a silent partial block.
    auto partial = client->StorePagedLayerwise(*src_id, ComputeBlockKeys(ns, Tokens(2, 99)),
                                               std::vector<int32_t>{0, 1});
    REQUIRE(partial.ok());
    REQUIRE((*partial)->StoreLayer(0).ok());
    CHECK((*partial)->Finish().Wait().status().IsInvalidArgument());

    auto load = client->LoadPagedLayerwise(*dst_id, keys, to);
    REQUIRE(load.ok());
    for (uint32_t l = 0; l < kLayers; ++l) {
      auto n = (*load)->WaitLayer(l);
      REQUIRE(n.ok());
      CHECK(*n == 4);
      for (size_t i = 0; i < 4; ++i)  // layer l is in place once WaitLayer(l) returned
        for (uint32_t p = 0; p < 2; ++p)
          for (uint32_t h = 0; h < s.heads; ++h)
            CHECK(dst.Head(l, p, to[i], h) == want.Head(l, p, from[i], h));
    }
  }
}

// A load of more than a few MiB is verified and scattered by several threads, each over a range
// of blocks (lib/client/copy_threads.h): every page lands where it belongs, whatever the split,
// and a prefix that ends early loads exactly its blocks.
TEST_CASE("paged: a large load split over copy threads lands every page", "[lib][integration]") {
  Daemon daemon;
  // 32 heads: a block is 384 KiB, 20 blocks 7.5 MiB, more than one thread's share.
  const Shape s{KvLayout::kVllmFlashAttn, 32, KvDtype::kBFloat16, Codec::kNone};
  Namespace ns = MakeNamespace(s, "split");
  PagedCache src(s.layout, s.heads, s.dtype);
  src.Fill(31);
  constexpr size_t kBlocks = 20;
  const std::vector<BlockKey> keys = ComputeBlockKeys(ns, Tokens(kBlocks, 13));
  const std::vector<int32_t> from = Pages(kBlocks, 14), to = Pages(kBlocks, 15);
  {
    auto client = ConnectTo(&daemon);
    auto id = client->RegisterKvCache(ns, src.Spec());
    REQUIRE(id.ok());
    REQUIRE(*client->StorePaged(*id, keys, from).Wait() == kBlocks * s.heads);
  }
  for (int helpers : {0, 1, 3}) {
    INFO("copy threads " << helpers);
    ClientOptions options;
    options.copy_threads = helpers;
    auto c = Client::Connect(daemon.serve->socket(), options);
    REQUIRE(c.ok());
    PagedCache dst(s.layout, s.heads, s.dtype);
    auto id = (*c)->RegisterKvCache(ns, dst.Spec());
    REQUIRE(id.ok());
    REQUIRE(*(*c)->LoadPaged(*id, keys, to).Wait() == kBlocks);
    for (size_t i = 0; i < kBlocks; ++i)
      for (uint32_t h = 0; h < s.heads; ++h) REQUIRE(dst.Shard(to[i], h) == src.Shard(from[i], h));
    // A prompt that diverges in block 14 (past the middle) loads 14 blocks, no page beyond.
    dst.Zero();
    std::vector<uint32_t> other = Tokens(kBlocks, 13);
    other[14 * kBlockSize] ^= 1;
    CHECK(*(*c)->LoadPaged(*id, ComputeBlockKeys(ns, other), to).Wait() == 14);
    for (size_t i = 0; i < kBlocks; ++i)
      for (uint32_t h = 0; h < s.heads; ++h) {
        const auto got = dst.Shard(to[i], h);
        if (i < 14)
          REQUIRE(got == src.Shard(from[i], h));
        else
          REQUIRE(std::all_of(got.begin(), got.end(), [](std::byte b) { return b == std::byte{0}; }));
      }
  }
}

TEST_CASE("paged: bad registrations and block ids are clear errors", "[lib]") {
  auto client = ConnectTo(nullptr);
  const Shape s{KvLayout::kVllmFlashAttn, 2, KvDtype::kFloat16, Codec::kNone};
  Namespace ns = MakeNamespace(s);
  PagedCache c(s.layout, 2, s.dtype);
  KvCacheSpec spec = c.Spec();
  spec.layers.pop_back();
  CHECK(client->RegisterKvCache(ns, spec).status().IsInvalidArgument());
  spec = c.Spec();
  spec.layout = KvLayout::kMla;
  CHECK(client->RegisterKvCache(ns, spec).status().IsInvalidArgument());
  // Host pages named as device memory: NotSupported without CUDA or a device, InvalidArgument
  // (not device memory) with one (tests/lib/paged_cuda_test.cc runs the device path).
  spec = c.Spec();
  spec.device = 0;
  const Status device_status = client->RegisterKvCache(ns, spec).status();
  CHECK((device_status.code() == StatusCode::kNotSupported || device_status.IsInvalidArgument()));
  auto id = client->RegisterKvCache(ns, c.Spec());
  REQUIRE(id.ok());
  const auto keys = ComputeBlockKeys(ns, Tokens(2, 1));
  CHECK(client->StorePaged(*id, keys, std::vector<int32_t>{0, int32_t{kPages}})
            .Wait()
            .status()
            .IsInvalidArgument());
  CHECK(client->LoadPaged(*id, keys, std::vector<int32_t>{-1, 0})
            .Wait()
            .status()
            .IsInvalidArgument());
  CHECK(client->LoadPaged(*id + 100, keys, std::vector<int32_t>{0, 1})
            .Wait()
            .status()
            .IsNotFound());
}

}  // namespace
}  // namespace strata
