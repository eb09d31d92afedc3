// Bulk conversions (convert_cpu.h).
#include "convert_cpu.h"

#include "strata_kernels/numeric.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace strata::kernels::internal {
namespace {

#if defined(__x86_64__)
__attribute__((target("avx,f16c"))) void HalfToFloatF16c(const uint16_t* in, float* out,
                                                         uint64_t n) {
  uint64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(out + i,
                     _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i))));
  for (; i < n; ++i) out[i] = HalfToFloat(in[i]);
}

__attribute__((target("avx,f16c"))) void FloatToHalfF16c(const float* in, uint16_t* out,
                                                         uint64_t n) {
  uint64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(in + i), _MM_FROUND_TO_NEAREST_INT));
  for (; i < n; ++i) out[i] = FloatToHalf(in[i]);
}

__attribute__((target("avx2"))) void FloatToBf16Avx2(const float* in, uint16_t* out, uint64_t n) {
  const __m256i one = _mm256_set1_epi32(1), bias = _mm256_set1_epi32(0x7fff);
  const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000);
  const __m256i quiet = _mm256_set1_epi32(0x40);
  uint64_t i = 0;
  for (; i + 8 <= n; i += 8) {  // the same arithmetic as FloatToBf16, 8 lanes at a time
    const __m256i x = _mm256_castps_si256(_mm256_loadu_ps(in + i));
    const __m256i hi = _mm256_srli_epi32(x, 16);
    __m256i r = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(x, bias), _mm256_and_si256(hi, one)), 16);
    const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(x, abs_mask), inf);
    r = _mm256_blendv_epi8(r, _mm256_or_si256(hi, quiet), nan);
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), _mm256_castsi256_si128(packed));
  }
  for (; i < n; ++i) out[i] = FloatToBf16(in[i]);
}

const bool kHaveAvx2 = __builtin_cpu_supports("avx2");
const bool kHaveF16c = __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx");
#else
constexpr bool kHaveF16c = false;
constexpr bool kHaveAvx2 = false;
#endif

}  // namespace

void KvToFloat(bool bf16, const uint16_t* in, float* out, uint64_t n) {
  if (bf16) {
    for (uint64_t i = 0; i < n; ++i) out[i] = Bf16ToFloat(in[i]);
    return;
  }
#if defined(__x86_64__)
  if (kHaveF16c) return HalfToFloatF16c(in, out, n);
#endif
  for (uint64_t i = 0; i < n; ++i) out[i] = HalfToFloat(in[i]);
}

void FloatToKv(bool bf16, const float* in, uint16_t* out, uint64_t n) {
  if (bf16) {
#if defined(__x86_64__)
    if (kHaveAvx2) return FloatToBf16Avx2(in, out, n);
#endif
    for (uint64_t i = 0; i < n; ++i) out[i] = FloatToBf16(in[i]);
    return;
  }
#if defined(__x86_64__)
  if (kHaveF16c) return FloatToHalfF16c(in, out, n);
#endif
  for (uint64_t i = 0; i < n; ++i) out[i] = FloatToHalf(in[i]);
}

}  // namespace strata::kernels::internal
