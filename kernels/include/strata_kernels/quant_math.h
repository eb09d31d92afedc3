// Per-element arithmetic of the lossy codecs, shared verbatim by the CPU reference (quant_cpu.cc)
// and the CUDA kernels (cuda/quant.cu), which is why their outputs are bit-identical. Only
// IEEE-exact float operations (+, -, *, /, comparisons) and the integer conversions of
// numeric.h are used; both sides are compiled without FMA contraction.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>

#include "strata_kernels/hd.h"
#include "strata_kernels/kv_layout.h"
#include "strata_kernels/numeric.h"

namespace strata::kernels {

// Element i of an fp16 or bf16 array, as float (exact).
STRATA_KERNELS_HD inline float LoadKv16(bool bf16, const uint16_t* p, uint64_t i) {
  return bf16 ? Bf16ToFloat(p[i]) : HalfToFloat(p[i]);
}
// float -> fp16 or bf16 bits, round to nearest even.
STRATA_KERNELS_HD inline uint16_t StoreKv16(bool bf16, float v) {
  return bf16 ? FloatToBf16(v) : FloatToHalf(v);
}

STRATA_KERNELS_HD inline float AbsF(float v) { return BitsToFloat(FloatToBits(v) & 0x7fffffffu); }
STRATA_KERNELS_HD inline float MaxF(float a, float b) { return a > b ? a : b; }
STRATA_KERNELS_HD inline float MinF(float a, float b) { return a < b ? a : b; }

// A scale and its reciprocal for symmetric quantization to [-qmax, qmax]. A group whose amax is
// zero, or so small that qmax / amax overflows (|x| < ~1e-36), gets scale 0 and decodes to zeros.
struct SymScale {
  float scale;
  float inv;
};
STRATA_KERNELS_HD inline SymScale MakeSymScale(float amax, float qmax) {
  const float inv = qmax / amax;
  if (!(amax > 0.0f) || !IsFiniteFloat(inv)) return {0.0f, 0.0f};
  return {amax / qmax, inv};
}

// FP8 e4m3, one scale per (layer, plane) chunk.
STRATA_KERNELS_HD inline uint8_t Fp8Quant(float x, float inv) { return FloatToE4m3(x * inv); }
STRATA_KERNELS_HD inline float Fp8Dequant(uint8_t q, float scale) { return E4m3ToFloat(q) * scale; }

// INT8 symmetric, one scale per group.
STRATA_KERNELS_HD inline int8_t Int8Quant(float x, float inv) {
  const float r = RoundHalfEvenSmall(x * inv);
  return static_cast<int8_t>(r > 127.0f ? 127.0f : (r < -127.0f ? -127.0f : r));
}
STRATA_KERNELS_HD inline float Int8Dequant(int8_t q, float scale) {
  return static_cast<float>(q) * scale;
}

// INT4 asymmetric (KIVI): x' = min + q * scale, q in [0, 15], min and scale stored as fp16.
// min is rounded down and scale up, so [min, max] stays inside the representable range.
struct Int4Params {
  uint16_t min_h;
  uint16_t scale_h;
  float min_f;
  float scale_f;
  float inv;
};
// REQUIRES: mn <= mx, both finite with |.| <= 65504.
STRATA_KERNELS_HD inline Int4Params MakeInt4Params(float mn, float mx) {
  // A min/max reduction's result depends on its order only in the sign of a zero (min(-0, +0) is
  // whichever came first); x + 0 maps -0 to +0, so CPU and CUDA store the same bits.
  mn = mn + 0.0f;
  mx = mx + 0.0f;
  Int4Params p;
  p.min_h = FloatToHalf(mn, Round::kDown);
  p.min_f = HalfToFloat(p.min_h);
  p.scale_h = FloatToHalf((mx - p.min_f) / 15.0f, Round::kUp);
  p.scale_f = HalfToFloat(p.scale_h);
  p.inv = p.scale_f > 0.0f ? 1.0f / p.scale_f : 0.0f;
  return p;
}
STRATA_KERNELS_HD inline Int4Params Int4ParamsFromStored(uint16_t min_h, uint16_t scale_h) {
  Int4Params p;
  p.min_h = min_h;
  p.scale_h = scale_h;
  p.min_f = HalfToFloat(min_h);
  p.scale_f = HalfToFloat(scale_h);
  p.inv = 0.0f;
  return p;
}
STRATA_KERNELS_HD inline uint8_t Int4Quant(float x, float min_f, float inv) {
  const float r = RoundHalfEvenSmall((x - min_f) * inv);
  return static_cast<uint8_t>(r > 15.0f ? 15.0f : (r < 0.0f ? 0.0f : r));
}
STRATA_KERNELS_HD inline float Int4Dequant(uint8_t q, float min_f, float scale_f) {
  return min_f + static_cast<float>(q) * scale_f;
}

inline constexpr float kInt4MaxAbs = 65504.0f;

}  // namespace strata::kernels
