// CPU reference gather/scatter: every layout x dtype against an element-by-element reading of the
// engine layouts (as vLLM and FlashInfer index them), round trips, and argument errors.
#include "strata_kernels/gather_scatter.h"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>
#include <vector>

#include "test_util.h"

namespace strata::kernels {
namespace {

using testing::FillPattern;
using testing::HostCache;

// Byte offset of element (plane, block, token, head, dim) in one engine layer, written from the
// layouts' tensor shapes independently of EngineChunkIndex.
uint64_t EngineOffset(const PagedKvSpec& s, uint32_t p, uint32_t b, uint32_t t, uint32_t h,
                      uint32_t d) {
  const uint64_t T = s.block_size, H = s.num_kv_heads, D = s.head_dim, N = s.num_blocks;
  uint64_t idx = 0;
  switch (s.layout) {
    case PagedLayout::kVllmFlashAttn:  // [2, N, T, H, D]
      idx = (((p * N + b) * T + t) * H + h) * D + d;
      break;
    case PagedLayout::kFlashInfer:  // [N, 2, T, H, D]
      idx = (((b * 2 + p) * T + t) * H + h) * D + d;
      break;
    case PagedLayout::kMla:  // [N, T, latent]
      idx = (b * T + t) * D + d;
      break;
  }
  return idx * KvDtypeBytes(s.dtype);
}

// Byte offset of element (layer, plane, token, head, dim) in a Strata block.
uint64_t BlockOffset(const BlockShape& s, uint32_t l, uint32_t p, uint32_t t, uint32_t h,
                     uint32_t d) {
  return ((((uint64_t{l} * s.planes + p) * s.block_size + t) * s.num_kv_heads + h) * s.head_dim +
          d) * KvDtypeBytes(s.dtype);
}

std::vector<PagedKvSpec> AllSpecs() {
  std::vector<PagedKvSpec> specs;
  for (auto layout : {PagedLayout::kVllmFlashAttn, PagedLayout::kFlashInfer, PagedLayout::kMla}) {
    for (auto dtype : {KvDtype::kFloat16, KvDtype::kBFloat16, KvDtype::kFloat8E4M3,
                       KvDtype::kFloat8E5M2, KvDtype::kFloat32}) {
      PagedKvSpec s;
      s.layout = layout;
      s.dtype = dtype;
      s.num_layers = 3;
      s.num_blocks = 11;
      s.block_size = 4;
      s.num_kv_heads = layout == PagedLayout::kMla ? 1 : 2;
      s.head_dim = layout == PagedLayout::kMla ? 40 : 8;
      specs.push_back(s);
    }
  }
  return specs;
}

TEST_CASE("gather copies each element to its Strata block position, every layout and dtype",
          "[kernels]") {
  for (const PagedKvSpec& spec : AllSpecs()) {
    INFO(PagedLayoutName(spec.layout) << " " << KvDtypeName(spec.dtype));
    HostCache cache(spec);
    for (uint32_t l = 0; l < spec.num_layers; ++l) FillPattern(cache.layers[l], l + 1);
    const BlockShape shape = spec.block_shape();
    const std::vector<int32_t> ids = {7, 0, 10, 3, 7};  // a repeat is fine for gather
    std::vector<std::vector<std::byte>> blocks(ids.size(), std::vector<std::byte>(shape.bytes()));
    std::vector<std::span<std::byte>> dst(blocks.begin(), blocks.end());
    auto layers = cache.ConstViews();
    REQUIRE(GatherBlocksCpu(spec, layers, ids, dst).ok());
    const uint32_t w = KvDtypeBytes(spec.dtype);
    for (size_t i = 0; i < ids.size(); ++i)
      for (uint32_t l = 0; l < spec.num_layers; ++l)
        for (uint32_t p = 0; p < shape.planes; ++p)
          for (uint32_t t = 0; t < spec.block_size; ++t)
            for (uint32_t h = 0; h < spec.num_kv_heads; ++h)
              for (uint32_t d = 0; d < spec.head_dim; ++d)
                REQUIRE(std::memcmp(blocks[i].data() + BlockOffset(shape, l, p, t, h, d),
                                    cache.layers[l].data() +
                                        EngineOffset(spec, p, uint32_t(ids[i]), t, h, d),
                                    w) == 0);
  }
}

TEST_CASE("scatter writes exactly the named blocks and round-trips gather", "[kernels]") {
  for (const PagedKvSpec& spec : AllSpecs()) {
    INFO(PagedLayoutName(spec.layout) << " " << KvDtypeName(spec.dtype));
    HostCache cache(spec);
    for (uint32_t l = 0; l < spec.num_layers; ++l) FillPattern(cache.layers[l], 100 + l);
    const HostCache before = cache;
    const BlockShape shape = spec.block_shape();
    const std::vector<int32_t> ids = {4, 9, 1};
    std::vector<std::vector<std::byte>> blocks(ids.size(), std::vector<std::byte>(shape.bytes()));
    for (size_t i = 0; i < blocks.size(); ++i) FillPattern(blocks[i], 1000 + i);
    std::vector<std::span<const std::byte>> src(blocks.begin(), blocks.end());
    auto layers = cache.Views();
    REQUIRE(ScatterBlocksCpu(spec, layers, ids, src).ok());

    // Untouched blocks keep their bytes; scattered ones read back through gather.
    for (uint32_t b = 0; b < spec.num_blocks; ++b) {
      const bool written = b == 4 || b == 9 || b == 1;
      if (written) continue;
      for (uint32_t l = 0; l < spec.num_layers; ++l)
        for (uint32_t p = 0; p < shape.planes; ++p) {
          const uint64_t off = EngineOffset(spec, p, b, 0, 0, 0);
          REQUIRE(std::memcmp(cache.layers[l].data() + off, before.layers[l].data() + off,
                              shape.chunk_bytes()) == 0);
        }
    }
    std::vector<std::vector<std::byte>> back(ids.size(), std::vector<std::byte>(shape.bytes()));
    std::vector<std::span<std::byte>> dst(back.begin(), back.end());
    auto cviews = cache.ConstViews();
    REQUIRE(GatherBlocksCpu(spec, cviews, ids, dst).ok());
    for (size_t i = 0; i < ids.size(); ++i) REQUIRE(back[i] == blocks[i]);
  }
}

TEST_CASE("gather/scatter reject bad arguments without touching outputs", "[kernels]") {
  PagedKvSpec spec = AllSpecs()[0];
  HostCache cache(spec);
  FillPattern(cache.layers[0], 5);
  const BlockShape shape = spec.block_shape();
  std::vector<std::byte> block(shape.bytes(), std::byte{0x5a});
  std::vector<std::span<std::byte>> dst = {block};
  auto layers = cache.ConstViews();
  auto untouched = [&] {
    for (auto b : block)
      if (b != std::byte{0x5a}) return false;
    return true;
  };

  for (int32_t bad : {-1, 11, 1 << 30}) {
    std::vector<int32_t> ids = {bad};
    KernelStatus st = GatherBlocksCpu(spec, layers, ids, dst);
    CHECK(st.code() == KernelCode::kInvalidArgument);
    CHECK(st.message().find("block id") != std::string::npos);
    CHECK(untouched());
  }
  std::vector<int32_t> two = {0, 1};
  CHECK(GatherBlocksCpu(spec, layers, two, dst).code() == KernelCode::kInvalidArgument);

  std::vector<std::byte> small(shape.bytes() - 1);
  std::vector<std::span<std::byte>> small_dst = {small};
  std::vector<int32_t> one = {2};
  CHECK(GatherBlocksCpu(spec, layers, one, small_dst).code() == KernelCode::kInvalidArgument);

  auto short_layers = layers;
  short_layers.pop_back();
  CHECK(GatherBlocksCpu(spec, short_layers, one, dst).code() == KernelCode::kInvalidArgument);
  auto trimmed = layers;
  trimmed[1] = trimmed[1].first(trimmed[1].size() - 2);
  CHECK(GatherBlocksCpu(spec, trimmed, one, dst).code() == KernelCode::kInvalidArgument);
  CHECK(untouched());

  PagedKvSpec mla_bad = spec;
  mla_bad.layout = PagedLayout::kMla;  // MLA with 2 heads
  CHECK(ValidatePagedKvSpec(mla_bad).code() == KernelCode::kInvalidArgument);
  PagedKvSpec zero = spec;
  zero.head_dim = 0;
  CHECK(ValidatePagedKvSpec(zero).code() == KernelCode::kInvalidArgument);
  PagedKvSpec unknown = spec;
  unknown.dtype = static_cast<KvDtype>(9);
  CHECK(ValidatePagedKvSpec(unknown).code() == KernelCode::kInvalidArgument);

  // Scatter: a bad id leaves the cache as it was.
  const HostCache before = cache;
  std::vector<std::span<const std::byte>> src = {block};
  auto wl = cache.Views();
  std::vector<int32_t> bad = {12};
  CHECK(ScatterBlocksCpu(spec, wl, bad, src).code() == KernelCode::kInvalidArgument);
  CHECK(cache.layers == before.layers);
}


// Head shards (the paged API's storage unit): shard (i, h) holds head h of block_ids[i] as
// [layer][plane][token][head_dim]. Checked element by element against EngineOffset for every
// layout and row size (fp8 and 16/32-bit dtypes, head_dim 8 and 64/128: the 128- and 256-byte
// fixed-size paths and the general one), whole and one layer at a time, and round-tripped.
TEST_CASE("head shards: gather and scatter every layout and row size, whole and per layer",
          "[kernels]") {
  for (auto layout : {PagedLayout::kVllmFlashAttn, PagedLayout::kFlashInfer, PagedLayout::kMla})
    for (auto dtype : {KvDtype::kFloat16, KvDtype::kFloat8E4M3, KvDtype::kFloat32})
      for (uint32_t dim : {8u, 64u, 128u}) {
        PagedKvSpec s;
        s.layout = layout;
        s.dtype = dtype;
        s.num_layers = 3;
        s.num_blocks = 9;
        s.block_size = 4;
        s.num_kv_heads = layout == PagedLayout::kMla ? 1 : 3;
        s.head_dim = dim;
        INFO(PagedLayoutName(layout) << " " << KvDtypeName(dtype) << " dim " << dim);
        HostCache cache(s);
        for (size_t l = 0; l < cache.layers.size(); ++l) FillPattern(cache.layers[l], l + 5);
        const std::vector<int32_t> ids = {7, 0, 4};
        BlockShape shard = s.block_shape();
        shard.num_kv_heads = 1;
        const uint32_t H = s.num_kv_heads, E = KvDtypeBytes(dtype);
        std::vector<std::vector<std::byte>> bufs(ids.size() * H,
                                                 std::vector<std::byte>(shard.bytes()));
        std::vector<std::span<std::byte>> out;
        for (auto& b : bufs) out.emplace_back(b);
        // Per layer, in a shuffled order: each call fills only its layer's part of every shard.
        for (uint32_t l : {2u, 0u, 1u})
          REQUIRE(GatherHeadShardsCpu(s, cache.ConstViews(), ids, out, l, l + 1).ok());
        for (size_t i = 0; i < ids.size(); ++i)
          for (uint32_t h = 0; h < H; ++h)
            for (uint32_t l = 0; l < s.num_layers; ++l)
              for (uint32_t p = 0; p < shard.planes; ++p)
                for (uint32_t t = 0; t < s.block_size; ++t)
                  for (uint32_t d = 0; d < dim; ++d) {
                    const auto* want = cache.layers[l].data() + EngineOffset(s, p, ids[i], t, h, d);
                    const auto* got = bufs[i * H + h].data() + BlockOffset(shard, l, p, t, 0, d);
                    REQUIRE(std::memcmp(want, got, E) == 0);
                  }
        // Scatter into an empty cache: exactly those pages come back, the others stay zero.
        HostCache back(s);
        std::vector<std::span<const std::byte>> in(out.begin(), out.end());
        REQUIRE(ScatterHeadShardsCpu(s, back.Views(), ids, in, 0, s.num_layers).ok());
        for (uint32_t l = 0; l < s.num_layers; ++l)
          for (uint32_t p = 0; p < shard.planes; ++p)
            for (uint32_t b = 0; b < s.num_blocks; ++b) {
              const bool used = std::find(ids.begin(), ids.end(), int32_t(b)) != ids.end();
              const uint64_t at = EngineOffset(s, p, b, 0, 0, 0);
              const uint64_t n = uint64_t{s.block_size} * H * dim * E;
              if (used)
                CHECK(std::memcmp(back.layers[l].data() + at, cache.layers[l].data() + at, n) == 0);
              else
                CHECK(std::all_of(back.layers[l].begin() + at, back.layers[l].begin() + at + n,
                                  [](std::byte x) { return x == std::byte{0}; }));
            }
        // Bad arguments move nothing.
        CHECK(GatherHeadShardsCpu(s, cache.ConstViews(), ids, out, 1, 1).code() ==
              KernelCode::kInvalidArgument);
        CHECK(GatherHeadShardsCpu(s, cache.ConstViews(), ids,
                                  std::span<const std::span<std::byte>>(out).first(2), 0, 1)
                  .code() == KernelCode::kInvalidArgument);
        const std::vector<int32_t> bad = {7, 9, 4};
        CHECK(GatherHeadShardsCpu(s, cache.ConstViews(), bad, out, 0, 1).code() ==
              KernelCode::kInvalidArgument);
      }
}

}  // namespace
}  // namespace strata::kernels
