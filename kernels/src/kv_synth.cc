// KV-like data from a small attention projection (kv_synth.h).
#include "strata_kernels/kv_synth.h"

#include <cmath>
#include <cstring>
#include <string>

#include "strata_kernels/numeric.h"

namespace strata::kernels {
namespace {

// splitmix64 + Box-Muller: the same numbers on every platform and standard library.
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed) {}
  uint64_t Next() {
    uint64_t z = (s_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  double Uniform() { return (Next() >> 11) * (1.0 / 9007199254740992.0); }  // [0, 1)
  double Normal() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    double u1 = Uniform(), u2 = Uniform();
    if (u1 < 1e-300) u1 = 1e-300;
    const double r = std::sqrt(-2.0 * std::log(u1));
    spare_ = r * std::sin(2.0 * M_PI * u2);
    has_spare_ = true;
    return r * std::cos(2.0 * M_PI * u2);
  }

 private:
  uint64_t s_;
  bool has_spare_ = false;
  double spare_ = 0;
};

void StoreElem(KvDtype dt, std::byte* base, uint64_t i, float v) {
  switch (dt) {
    case KvDtype::kFloat16: {
      const uint16_t h = FloatToHalf(v);
      std::memcpy(base + 2 * i, &h, 2);
      break;
    }
    case KvDtype::kBFloat16: {
      const uint16_t h = FloatToBf16(v);
      std::memcpy(base + 2 * i, &h, 2);
      break;
    }
    case KvDtype::kFloat8E4M3:
      base[i] = static_cast<std::byte>(FloatToE4m3(v));
      break;
    case KvDtype::kFloat8E5M2: {
      const uint16_t h = FloatToHalf(v);  // e5m2 is fp16's top byte; round that byte to nearest
      const uint32_t r = (h & 0x7fff) >= 0x7c00 ? h : (h + 0x7fu + ((h >> 8) & 1u));
      base[i] = static_cast<std::byte>(r >> 8);
      break;
    }
    case KvDtype::kFloat32:
      std::memcpy(base + 4 * i, &v, 4);
      break;
  }
}

}  // namespace

KernelStatus SynthesizeKvBlocks(const BlockShape& shape, uint32_t num_blocks,
                                const KvSynthOptions& opt, std::vector<std::byte>* out) {
  STRATA_KERNELS_RETURN_IF_ERROR(ValidateBlockShape(shape));
  if (num_blocks == 0 || opt.hidden_dim < 8)
    return KernelStatus::InvalidArgument("kv synth: need num_blocks > 0 and hidden_dim >= 8");
  const uint32_t hid = opt.hidden_dim;
  const uint32_t tokens = num_blocks * shape.block_size;
  const uint32_t row = shape.num_kv_heads * shape.head_dim;
  const uint32_t D = shape.head_dim;
  std::vector<std::byte> result(uint64_t{num_blocks} * shape.bytes());

  Rng rng(opt.seed * 0x2545f4914f6cdd1dull + 17);
  // Residual stream shared by all layers, drifting a little per layer.
  std::vector<float> x(uint64_t{tokens} * hid);
  const uint32_t massive[] = {3 % hid, 77 % hid, 190 % hid};
  for (uint32_t i = 0; i < hid; ++i) {
    double prev = rng.Normal();
    for (uint32_t t = 0; t < tokens; ++t) {
      prev = 0.6 * prev + 0.8 * rng.Normal();
      x[uint64_t{t} * hid + i] = static_cast<float>(prev);
    }
  }
  for (uint32_t t = 0; t < tokens; ++t)
    for (uint32_t m : massive) x[uint64_t{t} * hid + m] += 20.0f;

  std::vector<float> xn(x.size()), w(uint64_t{hid} * row), proj(uint64_t{tokens} * row);
  std::vector<float> gamma(hid), col_scale(row);
  for (uint32_t l = 0; l < shape.num_layers; ++l) {
    for (auto& v : x) v += static_cast<float>(0.3 * rng.Normal());
    for (uint32_t i = 0; i < hid; ++i) gamma[i] = static_cast<float>(std::exp(0.2 * rng.Normal()));
    for (uint32_t t = 0; t < tokens; ++t) {  // RMSNorm
      double ss = 0;
      for (uint32_t i = 0; i < hid; ++i) ss += double(x[uint64_t{t} * hid + i]) * x[uint64_t{t} * hid + i];
      const float inv = static_cast<float>(1.0 / std::sqrt(ss / hid + 1e-6));
      for (uint32_t i = 0; i < hid; ++i)
        xn[uint64_t{t} * hid + i] = x[uint64_t{t} * hid + i] * inv * gamma[i];
    }
    for (uint32_t p = 0; p < shape.planes; ++p) {
      const bool keys = p == 0;
      for (uint32_t j = 0; j < row; ++j) {
        double s = std::exp((keys ? 0.6 : 0.25) * rng.Normal());
        if (keys && rng.Uniform() < 0.03) s *= 6.0;  // key outlier channels
        col_scale[j] = static_cast<float>(s / std::sqrt(double(hid)));
      }
      for (uint32_t i = 0; i < hid; ++i)
        for (uint32_t j = 0; j < row; ++j)
          w[uint64_t{i} * row + j] = static_cast<float>(rng.Normal()) * col_scale[j];
      for (uint32_t t = 0; t < tokens; ++t) {
        float* o = &proj[uint64_t{t} * row];
        std::fill(o, o + row, 0.0f);
        const float* xr = &xn[uint64_t{t} * hid];
        for (uint32_t i = 0; i < hid; ++i) {
          const float xi = xr[i];
          const float* wr = &w[uint64_t{i} * row];
          for (uint32_t j = 0; j < row; ++j) o[j] += xi * wr[j];
        }
      }
      if (keys) {  // RoPE, rotate-half, over `rd` dims starting at `r0` of every head
        const uint32_t rd = shape.planes == 1 ? std::max(2u, std::min(64u, D / 4) & ~1u) : (D & ~1u);
        const uint32_t r0 = shape.planes == 1 ? D - rd : 0;
        const uint32_t half = rd / 2;
        for (uint32_t t = 0; t < tokens; ++t) {
          const double pos = double(opt.first_position) + t;
          for (uint32_t h = 0; h < shape.num_kv_heads; ++h) {
            float* o = &proj[uint64_t{t} * row + uint64_t{h} * D + r0];
            for (uint32_t i = 0; i < half; ++i) {
              const double freq = std::pow(double(opt.rope_theta), -2.0 * i / rd);
              const double c = std::cos(pos * freq), s = std::sin(pos * freq);
              const double a = o[i], b = o[i + half];
              o[i] = static_cast<float>(a * c - b * s);
              o[i + half] = static_cast<float>(b * c + a * s);
            }
          }
        }
      }
      for (uint32_t t = 0; t < tokens; ++t) {
        const uint32_t blk = t / shape.block_size, tt = t % shape.block_size;
        std::byte* base = result.data() + uint64_t{blk} * shape.bytes();
        const uint64_t first = ((uint64_t{l} * shape.planes + p) * shape.block_size + tt) * row;
        for (uint32_t j = 0; j < row; ++j)
          StoreElem(shape.dtype, base, first + j, proj[uint64_t{t} * row + j]);
      }
    }
  }
  *out = std::move(result);
  return KernelStatus::Ok();
}

}  // namespace strata::kernels
