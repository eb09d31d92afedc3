// Scalar number formats shared by the CPU reference and the CUDA kernels: fp16, bf16 and FP8 e4m3
// conversions written with integer arithmetic only, so that host and device produce the same bits
// (bit-exact CPU/CUDA agreement of every codec rests on this and on compiling without FMA
// contraction: -ffp-contract=off on the host, --fmad=false for nvcc; see kernels/CMakeLists.txt).
// On the device, the rounding conversions (all three modes) use the hardware instructions instead,
// which give the same bits for every non-NaN value (IEEE rounding; tests/kernels and gpu_check
// compare CUDA and CPU output byte for byte). NaN payloads may differ; codecs reject NaN input.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <cstring>

#include "strata_kernels/hd.h"

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#endif

namespace strata::kernels {

STRATA_KERNELS_HD inline float BitsToFloat(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

STRATA_KERNELS_HD inline uint32_t FloatToBits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}

STRATA_KERNELS_HD inline bool IsFiniteFloat(float f) {
  return (FloatToBits(f) & 0x7f800000u) != 0x7f800000u;
}

// IEEE binary16 -> float (exact).
STRATA_KERNELS_HD inline float HalfToFloat(uint16_t h) {
#if defined(__CUDA_ARCH__)
  return __half2float(__ushort_as_half(h));  // exact, so the same value as the code below
#endif
  const uint32_t sign = uint32_t{h & 0x8000u} << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  const uint32_t mant = h & 0x3ff;
  if (exp == 0) {
    // zero or subnormal: mant * 2^-24, exact in float
    const float v = static_cast<float>(mant) * 5.9604644775390625e-8f;
    return sign ? -v : v;
  }
  if (exp == 31) return BitsToFloat(sign | 0x7f800000u | (mant << 13));
  return BitsToFloat(sign | ((exp + 112) << 23) | (mant << 13));
}

enum class Round : uint8_t { kNearestEven, kDown, kUp };  // kDown = toward -inf, kUp = toward +inf

// float -> IEEE binary16 with the given rounding (overflow gives +-inf where the rounding
// direction allows it, else +-65504). NaN stays NaN.
STRATA_KERNELS_HD inline uint16_t FloatToHalf(float f, Round mode = Round::kNearestEven) {
#if defined(__CUDA_ARCH__)
  // IEEE rounding in hardware (cvt.rn / cvt.rm / cvt.rp .f16.f32): the same bits as below for
  // every non-NaN input, overflow and subnormals included.
  if (mode == Round::kNearestEven) return __half_as_ushort(__float2half_rn(f));
  if (mode == Round::kDown) return __half_as_ushort(__float2half_rd(f));
  return __half_as_ushort(__float2half_ru(f));
#endif
  const uint32_t x = FloatToBits(f);
  const uint32_t sign = x >> 31;
  const uint32_t abs = x & 0x7fffffffu;
  const uint16_t s16 = static_cast<uint16_t>(sign << 15);
  if (abs >= 0x7f800000u) return s16 | (abs > 0x7f800000u ? 0x7e00 : 0x7c00);
  const int exp = static_cast<int>(abs >> 23) - 127;
  const uint32_t mant = abs & 0x7fffffu;
  if (exp > 15) {  // beyond 65504 + half an ulp: inf, or the largest finite toward zero
    const bool away = (mode == Round::kUp && !sign) || (mode == Round::kDown && sign);
    if (mode != Round::kNearestEven && !away) return s16 | 0x7bff;
    return s16 | 0x7c00;
  }
  uint32_t base, rem, half;
  if (exp >= -14) {
    base = (static_cast<uint32_t>(exp + 15) << 10) | (mant >> 13);
    rem = mant & 0x1fffu;
    half = 0x1000u;
  } else {
    const int shift = 13 + (-14 - exp);  // >= 14
    if (shift > 24) {
      base = 0;
      rem = abs ? 1u : 0u;  // nonzero and below half of the smallest subnormal
      half = 2;
    } else {
      const uint32_t m24 = mant | 0x800000u;
      base = m24 >> shift;
      rem = m24 & ((1u << shift) - 1);
      half = 1u << (shift - 1);
    }
  }
  uint32_t inc = 0;
  if (mode == Round::kNearestEven) {
    inc = (rem > half || (rem == half && (base & 1))) ? 1 : 0;
  } else if (rem != 0) {
    const bool away = (mode == Round::kUp && !sign) || (mode == Round::kDown && sign);
    inc = away ? 1 : 0;
  }
  return static_cast<uint16_t>(s16 | (base + inc));
}

// bfloat16 <-> float. The conversion to bf16 rounds to nearest even; NaN stays a quiet NaN.
STRATA_KERNELS_HD inline float Bf16ToFloat(uint16_t b) { return BitsToFloat(uint32_t{b} << 16); }
STRATA_KERNELS_HD inline uint16_t FloatToBf16(float f) {
#if defined(__CUDA_ARCH__)
  return __bfloat16_as_ushort(__float2bfloat16_rn(f));  // same bits for every non-NaN input
#endif
  const uint32_t x = FloatToBits(f);
  const uint32_t rounded = (x + 0x7fffu + ((x >> 16) & 1)) >> 16;  // branch-free: vectorizes
  return static_cast<uint16_t>((x & 0x7fffffffu) > 0x7f800000u ? ((x >> 16) | 0x40) : rounded);
}

// OCP FP8 E4M3 ("e4m3fn": bias 7, no infinities, max 448, NaN = S.1111.111).
inline constexpr float kE4m3Max = 448.0f;

// Round to nearest integer, ties to even, for |v| < 2^22: adding and subtracting 1.5 * 2^23 leaves
// exactly the rounded value (IEEE round-to-nearest-even addition; never reassociated, as neither
// side compiles with fast-math). Unlike rintf it is inline and vectorizes on every host; the
// codecs only round values of magnitude <= 448. A zero result may come out as +0 for a negative v.
STRATA_KERNELS_HD inline float RoundHalfEvenSmall(float v) {
  return (v + 12582912.0f) - 12582912.0f;
}

// float -> e4m3, round to nearest even, saturating to +-448 (infinities included). NaN -> NaN.
// Branch-free so that it vectorizes: normals round on the float's bits; subnormals (< 2^-6) are
// k * 2^-9 with k = round(|x| * 512) in 0..8, and code k (k == 8 is the smallest normal, 0x08).
STRATA_KERNELS_HD inline uint8_t FloatToE4m3(float f) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  // cvt.rn.satfinite.e4m3x2.f32: nearest-even, saturating, NaN -> 0x7f; the same bits as below.
  return static_cast<uint8_t>(__nv_cvt_float_to_fp8(f, __NV_SATFINITE, __NV_E4M3));
#endif
  const uint32_t x = FloatToBits(f);
  const uint32_t sign = (x >> 24) & 0x80u;
  const uint32_t abs = x & 0x7fffffffu;
  const uint32_t normal = ((abs + 0x7ffffu + ((abs >> 20) & 1u)) >> 20) - 960u;  // (127-7) << 3
  const uint32_t sub =
      static_cast<uint32_t>(RoundHalfEvenSmall(BitsToFloat(abs < 0x3c800000u ? abs : 0u) * 512.0f));
  uint32_t code = abs < 0x3c800000u ? sub : normal;  // 0x3c800000 = 2^-6
  code = abs >= 0x43e00000u ? 0x7eu : code;          // >= 448 (and +-inf): saturate
  code = abs > 0x7f800000u ? 0x7fu : code;           // NaN
  return static_cast<uint8_t>(sign | code);
}

STRATA_KERNELS_HD inline float E4m3ToFloat(uint8_t v) {
  const uint32_t sign = uint32_t{v & 0x80u} << 24;
  const uint32_t exp = (v >> 3) & 0xf;
  const uint32_t mant = v & 0x7;
  if (exp == 0) {
    const float m = static_cast<float>(mant) * 0.001953125f;  // 2^-9
    return sign ? -m : m;
  }
  if ((v & 0x7f) == 0x7f) return BitsToFloat(sign | 0x7fc00000u);
  return BitsToFloat(sign | ((exp + 120) << 23) | (mant << 20));
}


}  // namespace strata::kernels
