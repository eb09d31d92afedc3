// Block codecs: lossless ones decode bit-exact (and actually compress KV-like data), lossy ones
// stay inside their stated error bounds (codec.h), and damaged payloads give Corruption, never a
// crash. The full layout x dtype x codec matrix runs gather -> encode -> decode -> scatter.
#include "strata_kernels/block_codec.h"

#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <vector>

#include "strata_kernels/codec.h"
#include "strata_kernels/gather_scatter.h"
#include "strata_kernels/kv_synth.h"
#include "strata_kernels/quant_math.h"
#include "test_util.h"

namespace strata::kernels {
namespace {

using testing::CompareBlocks;
using testing::ElemValue;
using testing::ErrorStats;
using testing::HalfUlp;
using testing::HostCache;

const Codec kAllCodecs[] = {Codec::kNone,     Codec::kShuffleZstd, Codec::kShuffleLz4,
                            Codec::kFp8E4M3,  Codec::kInt8Group,   Codec::kInt4Kivi};

std::vector<std::byte> Synth(const BlockShape& shape, uint32_t blocks, uint64_t seed,
                             uint32_t first_position = 0) {
  KvSynthOptions opt;
  opt.seed = seed;
  opt.hidden_dim = 128;
  opt.first_position = first_position;
  std::vector<std::byte> out;
  KernelStatus st = SynthesizeKvBlocks(shape, blocks, opt, &out);
  REQUIRE(st.ok());
  return out;
}

// Aligned byte buffer (lossy payloads are read as f32/f16 arrays).
struct Buf {
  explicit Buf(size_t n) : words((n + 7) / 8), size(n) {}
  std::span<std::byte> span() { return {reinterpret_cast<std::byte*>(words.data()), size}; }
  std::vector<uint64_t> words;
  size_t size;
};

// Per-element error bound of codec.h for element e of `block`.
struct BoundCalc {
  BlockShape s;
  Codec codec;
  const std::byte* in;
  std::vector<double> amax, gmin, gmax;  // per group
  uint32_t group = 0;

  BoundCalc(const BlockShape& shape, Codec c, const std::byte* block) : s(shape), codec(c), in(block) {
    group = ComputeLossyLayout(c, s).group;
  }
  double X(uint64_t e) const { return ElemValue(s.dtype, in, e); }
  uint64_t row() const { return uint64_t{s.num_kv_heads} * s.head_dim; }

  // The elements of e's group, as [first, count, stride].
  void Group(uint64_t e, uint64_t* first, uint64_t* count, uint64_t* stride) const {
    const uint64_t chunk = s.chunk_elems();
    if (codec == Codec::kFp8E4M3) {
      *first = e / chunk * chunk, *count = chunk, *stride = 1;
    } else if (codec == Codec::kInt8Group) {
      *first = e / group * group, *count = group, *stride = 1;
    } else {
      const uint64_t c = e / chunk, k = e % chunk;
      if (c % s.planes == 0) {  // keys (or MLA latent): per channel over the block's tokens
        *first = c * chunk + k % row(), *count = s.block_size, *stride = row();
      } else {
        *first = e / group * group, *count = group, *stride = 1;
      }
    }
  }
  double Bound(uint64_t e, double decoded) const {
    uint64_t first, count, stride;
    Group(e, &first, &count, &stride);
    double amax = 0, mn = 1e300, mx = -1e300;
    for (uint64_t k = 0; k < count; ++k) {
      const double v = X(first + k * stride);
      amax = std::max(amax, std::fabs(v));
      mn = std::min(mn, v);
      mx = std::max(mx, v);
    }
    const double x = X(e);
    double b = 0;
    switch (codec) {
      case Codec::kFp8E4M3:
        b = std::ldexp(std::fabs(x), -4) + std::ldexp(amax / 448.0, -10);
        break;
      case Codec::kInt8Group:
        b = amax / 254.0;
        break;
      default: {
        const double min_r = mn - std::fabs(mn) * std::ldexp(1.0, -10) - std::ldexp(1.0, -24);
        const double scale = (mx - min_r) / 15.0 * (1 + std::ldexp(1.0, -10)) + std::ldexp(1.0, -24);
        b = scale / 2 + 1e-6 * (std::fabs(mx) + std::fabs(mn));
        break;
      }
    }
    return b * (1 + 1e-5) + HalfUlp(s.dtype, decoded) + 1e-30;
  }
};

TEST_CASE("INT4 parameters do not depend on the sign of a zero minimum", "[kernels]") {
  // CPU and CUDA reduce min/max in different orders, which can only change a zero's sign.
  for (float mx : {0.0f, 1.5f, 1000.0f}) {
    const Int4Params a = MakeInt4Params(-0.0f, mx), b = MakeInt4Params(0.0f, mx);
    CHECK(a.min_h == b.min_h);
    CHECK(a.scale_h == b.scale_h);
  }
  const Int4Params z = MakeInt4Params(-0.0f, -0.0f);
  CHECK(z.min_h == 0);
  CHECK(z.scale_h == 0);
}

TEST_CASE("byte-plane shuffle is a permutation and its own inverse", "[kernels]") {
  for (uint32_t w : {1u, 2u, 4u}) {
    std::vector<std::byte> in(w * 37), mid(in.size()), out(in.size());
    testing::FillPattern(in, w);
    ShuffleBytePlanes(in.data(), mid.data(), 37, w);
    for (uint64_t i = 0; i < 37; ++i)
      for (uint32_t b = 0; b < w; ++b) REQUIRE(mid[b * 37 + i] == in[i * w + b]);
    UnshuffleBytePlanes(mid.data(), out.data(), 37, w);
    REQUIRE(out == in);
  }
}

TEST_CASE("lossless codecs are bit-exact and compress KV-like data", "[kernels]") {
  for (uint32_t planes : {2u, 1u}) {
    for (auto dtype : {KvDtype::kFloat16, KvDtype::kBFloat16, KvDtype::kFloat8E4M3,
                       KvDtype::kFloat32}) {
      BlockShape shape{4, planes, 16, planes == 2 ? 4u : 1u, planes == 2 ? 64u : 288u, dtype};
      const auto data = Synth(shape, 2, 11);
      for (Codec codec : {Codec::kShuffleZstd, Codec::kShuffleLz4, Codec::kNone}) {
        INFO(CodecName(codec) << " " << KvDtypeName(dtype) << " planes " << planes);
        std::unique_ptr<BlockCodec> c;
        REQUIRE(BlockCodec::Create(codec, shape, {}, &c).ok());
        uint64_t total_in = 0, total_out = 0;
        for (uint32_t b = 0; b < 2; ++b) {
          std::span<const std::byte> block(data.data() + b * shape.bytes(), shape.bytes());
          std::vector<std::byte> payload(c->max_encoded_bytes());
          uint64_t n = 0;
          REQUIRE(c->Encode(block, payload, &n).ok());
          std::vector<std::byte> back(shape.bytes());
          REQUIRE(c->Decode(std::span(payload).first(n), back).ok());
          REQUIRE(std::memcmp(back.data(), block.data(), shape.bytes()) == 0);
          total_in += shape.bytes();
          total_out += n;
        }
        const double ratio = double(total_in) / total_out;
        INFO("ratio " << ratio);
        if (codec == Codec::kNone) {
          CHECK(ratio == 1.0);
        } else {
          // Never more than the 16-byte header over raw (incompressible bodies are stored).
          CHECK(total_out <= total_in + 2 * kPayloadHeaderBytes);
          // The sign/exponent plane of KV-like data compresses (random bytes would not):
          // bf16 (8 exponent bits in one byte) much more than fp16.
          if (dtype == KvDtype::kBFloat16) CHECK(ratio > 1.15);
          if (codec == Codec::kShuffleZstd && dtype != KvDtype::kFloat8E4M3) CHECK(ratio > 1.03);
        }
      }
    }
  }
}

TEST_CASE("damaged lossless payloads are Corruption, never a crash", "[kernels]") {
  BlockShape shape{2, 2, 16, 2, 64, KvDtype::kBFloat16};
  const auto data = Synth(shape, 1, 3);
  for (Codec codec : {Codec::kShuffleZstd, Codec::kShuffleLz4}) {
    INFO(CodecName(codec));
    std::unique_ptr<BlockCodec> c;
    REQUIRE(BlockCodec::Create(codec, shape, {}, &c).ok());
    std::vector<std::byte> payload(c->max_encoded_bytes());
    uint64_t n = 0;
    REQUIRE(c->Encode(data, payload, &n).ok());
    payload.resize(n);
    std::vector<std::byte> out(shape.bytes());

    for (size_t cut : {size_t{0}, size_t{10}, size_t{16}, n / 2, n - 1}) {
      CHECK(c->Decode(std::span(payload).first(cut), out).code() == KernelCode::kCorruption);
    }
    auto bad_magic = payload;
    bad_magic[0] ^= std::byte{1};
    CHECK(c->Decode(bad_magic, out).code() == KernelCode::kCorruption);
    auto wrong_codec = payload;
    wrong_codec[4] = std::byte{codec == Codec::kShuffleZstd ? uint8_t{2} : uint8_t{1}};
    CHECK(c->Decode(wrong_codec, out).code() == KernelCode::kCorruption);
    // Flipped body bytes: must not crash; lz4/zstd either reject or (rarely, without a frame
    // checksum) decode to other bytes of the right length. Most must be rejected.
    int rejected = 0;
    for (size_t pos = 16; pos < n; pos += std::max<size_t>(1, n / 64)) {
      auto flipped = payload;
      flipped[pos] ^= std::byte{0xff};
      KernelStatus st = c->Decode(flipped, out);
      if (!st.ok()) {
        CHECK(st.code() == KernelCode::kCorruption);
        ++rejected;
      }
    }
    CHECK(rejected > 0);
    // A payload for another shape is rejected by the header check.
    BlockShape other = shape;
    other.num_layers = 3;
    std::unique_ptr<BlockCodec> c2;
    REQUIRE(BlockCodec::Create(codec, other, {}, &c2).ok());
    std::vector<std::byte> out2(other.bytes());
    CHECK(c2->Decode(payload, out2).code() == KernelCode::kCorruption);
  }
}

TEST_CASE("lossy codecs meet their stated error bounds", "[kernels]") {
  struct Case {
    BlockShape shape;
    const char* name;
  };
  const Case cases[] = {
      {{4, 2, 16, 4, 128, KvDtype::kFloat16}, "kv fp16 D128"},
      {{4, 2, 16, 4, 128, KvDtype::kBFloat16}, "kv bf16 D128"},
      {{2, 2, 16, 2, 80, KvDtype::kFloat16}, "kv fp16 D80 (G=16)"},
      {{3, 1, 16, 1, 576, KvDtype::kBFloat16}, "mla bf16 576"},
      {{2, 2, 5, 3, 12, KvDtype::kFloat16}, "odd shape T5 H3 D12"},
  };
  for (const Case& tc : cases) {
    const BlockShape& shape = tc.shape;
    const auto data = Synth(shape, 2, 21, 1000);
    for (Codec codec : {Codec::kFp8E4M3, Codec::kInt8Group, Codec::kInt4Kivi}) {
      INFO(tc.name << " " << CodecName(codec));
      std::unique_ptr<BlockCodec> c;
      REQUIRE(BlockCodec::Create(codec, shape, {}, &c).ok());
      for (uint32_t b = 0; b < 2; ++b) {
        std::vector<std::byte> block(data.begin() + b * shape.bytes(),
                                     data.begin() + (b + 1) * shape.bytes());
        Buf payload(c->max_encoded_bytes());
        uint64_t n = 0;
        REQUIRE(c->Encode(block, payload.span(), &n).ok());
        REQUIRE(n == LossyEncodedBytes(codec, shape));
        std::vector<std::byte> back(shape.bytes());
        REQUIRE(c->Decode(payload.span().first(n), back).ok());
        BoundCalc bc(shape, codec, block.data());
        for (uint64_t e = 0; e < shape.elems(); ++e) {
          const double x = ElemValue(shape.dtype, block.data(), e);
          const double y = ElemValue(shape.dtype, back.data(), e);
          const double bound = bc.Bound(e, y);
          if (std::fabs(x - y) > bound) {
            INFO("element " << e << " x " << x << " decoded " << y << " bound " << bound);
            REQUIRE(std::fabs(x - y) <= bound);
          }
        }
        const ErrorStats st = CompareBlocks(shape.dtype, block.data(), back.data(), shape.elems());
        // Aggregate accuracy on KV-like data (docs/kernels.md states these floors).
        const double min_cos = codec == Codec::kFp8E4M3 ? 0.998 : codec == Codec::kInt8Group ? 0.9999 : 0.99;
        INFO("cosine " << st.cosine << " rel_l2 " << st.rel_l2);
        CHECK(st.cosine >= min_cos);
        // Encoding is deterministic: the same block gives the same payload bytes.
        Buf again(c->max_encoded_bytes());
        uint64_t n2 = 0;
        REQUIRE(c->Encode(block, again.span(), &n2).ok());
        CHECK(std::memcmp(again.span().data(), payload.span().data(), n) == 0);
      }
    }
  }
}

TEST_CASE("lossy codecs reject what they cannot represent", "[kernels]") {
  BlockShape shape{2, 2, 16, 2, 64, KvDtype::kFloat16};
  auto data = Synth(shape, 1, 5);
  for (Codec codec : {Codec::kFp8E4M3, Codec::kInt8Group, Codec::kInt4Kivi}) {
    INFO(CodecName(codec));
    std::unique_ptr<BlockCodec> c;
    REQUIRE(BlockCodec::Create(codec, shape, {}, &c).ok());
    Buf payload(c->max_encoded_bytes());
    uint64_t n = 0;
    for (uint16_t bad : {uint16_t{0x7e00}, uint16_t{0x7c00}, uint16_t{0xfc00}}) {  // NaN, +-inf
      auto block = data;
      std::memcpy(block.data() + 2 * 777, &bad, 2);
      KernelStatus st = c->Encode(block, payload.span(), &n);
      CHECK(st.code() == KernelCode::kOutOfRange);
    }
    // fp8 KV is not re-quantized; wrong-size inputs and short outputs are argument errors.
    BlockShape fp8 = shape;
    fp8.dtype = KvDtype::kFloat8E4M3;
    std::unique_ptr<BlockCodec> c8;
    CHECK(BlockCodec::Create(codec, fp8, {}, &c8).code() == KernelCode::kNotSupported);
    CHECK(c->Encode(std::span(data).first(data.size() - 2), payload.span(), &n).code() ==
          KernelCode::kInvalidArgument);
    CHECK(c->Encode(data, payload.span().first(payload.size - 1), &n).code() ==
          KernelCode::kNoSpace);
    // Truncated or mislabelled payloads.
    REQUIRE(c->Encode(data, payload.span(), &n).ok());
    std::vector<std::byte> out(shape.bytes());
    CHECK(c->Decode(payload.span().first(n - 1), out).code() == KernelCode::kCorruption);
    CHECK(c->Decode(payload.span().first(8), out).code() == KernelCode::kCorruption);
  }
  // INT4's fp16 scales cannot hold bf16 values beyond 65504.
  BlockShape bshape = shape;
  bshape.dtype = KvDtype::kBFloat16;
  auto bdata = Synth(bshape, 1, 5);
  const uint16_t big = FloatToBf16(1e6f);
  std::memcpy(bdata.data() + 2 * 100, &big, 2);
  std::unique_ptr<BlockCodec> c;
  REQUIRE(BlockCodec::Create(Codec::kInt4Kivi, bshape, {}, &c).ok());
  Buf payload(c->max_encoded_bytes());
  uint64_t n = 0;
  CHECK(c->Encode(bdata, payload.span(), &n).code() == KernelCode::kOutOfRange);
  std::unique_ptr<BlockCodec> c8;
  REQUIRE(BlockCodec::Create(Codec::kInt8Group, bshape, {}, &c8).ok());
  Buf payload8(c8->max_encoded_bytes());
  CHECK(c8->Encode(bdata, payload8.span(), &n).ok());  // INT8's f32 scales can
}

TEST_CASE("every layout x dtype x codec round-trips gather -> encode -> decode -> scatter",
          "[kernels]") {
  for (auto layout : {PagedLayout::kVllmFlashAttn, PagedLayout::kFlashInfer, PagedLayout::kMla}) {
    for (auto dtype : {KvDtype::kFloat16, KvDtype::kBFloat16, KvDtype::kFloat8E4M3}) {
      PagedKvSpec spec;
      spec.layout = layout;
      spec.dtype = dtype;
      spec.num_layers = 2;
      spec.num_blocks = 9;
      spec.block_size = 16;
      spec.num_kv_heads = layout == PagedLayout::kMla ? 1 : 2;
      spec.head_dim = layout == PagedLayout::kMla ? 192 : 64;
      const BlockShape shape = spec.block_shape();
      // Fill the engine cache with KV-like blocks through scatter.
      const auto blocks = Synth(shape, spec.num_blocks, 77);
      HostCache cache(spec);
      std::vector<int32_t> all(spec.num_blocks);
      std::vector<std::span<const std::byte>> all_src;
      for (uint32_t b = 0; b < spec.num_blocks; ++b) {
        all[b] = int32_t(b);
        all_src.emplace_back(blocks.data() + b * shape.bytes(), shape.bytes());
      }
      auto wl = cache.Views();
      REQUIRE(ScatterBlocksCpu(spec, wl, all, all_src).ok());

      const std::vector<int32_t> ids = {5, 2, 8};
      for (Codec codec : kAllCodecs) {
        INFO(PagedLayoutName(layout) << " " << KvDtypeName(dtype) << " " << CodecName(codec));
        std::unique_ptr<BlockCodec> c;
        KernelStatus created = BlockCodec::Create(codec, shape, {}, &c);
        if (IsLossyCodec(codec) && dtype == KvDtype::kFloat8E4M3) {
          CHECK(created.code() == KernelCode::kNotSupported);
          continue;
        }
        REQUIRE(created.ok());
        std::vector<std::vector<std::byte>> gathered(ids.size(), std::vector<std::byte>(shape.bytes()));
        std::vector<std::span<std::byte>> dst(gathered.begin(), gathered.end());
        auto rl = cache.ConstViews();
        REQUIRE(GatherBlocksCpu(spec, rl, ids, dst).ok());

        std::vector<std::vector<std::byte>> decoded(ids.size(), std::vector<std::byte>(shape.bytes()));
        for (size_t i = 0; i < ids.size(); ++i) {
          Buf payload(c->max_encoded_bytes());
          uint64_t n = 0;
          REQUIRE(c->Encode(gathered[i], payload.span(), &n).ok());
          REQUIRE(c->Decode(payload.span().first(n), decoded[i]).ok());
        }
        HostCache target(spec);
        std::vector<std::span<const std::byte>> src(decoded.begin(), decoded.end());
        auto tl = target.Views();
        REQUIRE(ScatterBlocksCpu(spec, tl, ids, src).ok());
        std::vector<std::vector<std::byte>> final_blocks(ids.size(), std::vector<std::byte>(shape.bytes()));
        std::vector<std::span<std::byte>> fdst(final_blocks.begin(), final_blocks.end());
        auto tcl = target.ConstViews();
        REQUIRE(GatherBlocksCpu(spec, tcl, ids, fdst).ok());
        for (size_t i = 0; i < ids.size(); ++i) {
          const auto& orig = gathered[i];
          // the gathered block is engine block ids[i], i.e. synthesized block ids[i]
          REQUIRE(std::memcmp(orig.data(), blocks.data() + ids[i] * shape.bytes(), shape.bytes()) == 0);
          if (!IsLossyCodec(codec)) {
            REQUIRE(final_blocks[i] == orig);
          } else {
            BoundCalc bc(shape, codec, orig.data());
            for (uint64_t e = 0; e < shape.elems(); ++e) {
              const double x = ElemValue(dtype, orig.data(), e);
              const double y = ElemValue(dtype, final_blocks[i].data(), e);
              REQUIRE(std::fabs(x - y) <= bc.Bound(e, y));
            }
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace strata::kernels
