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

const bool kHaveF16c = __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx");
#else
constexpr bool kHaveF16c = false;
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
    for (uint64_t i = 0; i < n; ++i) out[i] = FloatToBf16(in[i]);
    return;
  }
#if defined(__x86_64__)
  if (kHaveF16c) return FloatToHalfF16c(in, out, n);
#endif
  for (uint64_t i = 0; i < n; ++i) out[i] = FloatToHalf(in[i]);
}

}  // namespace strata::kernels::internal
