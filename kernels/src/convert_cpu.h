// Bulk fp16/bf16 <-> float conversion for the CPU codecs. Same bits as numeric.h's scalar
// functions for every non-NaN value (tests/kernels/numeric_test.cc checks it); uses F16C (fp16)
// and AVX2 (bf16) on x86-64 CPUs that have them (chosen once at run time), scalar code elsewhere.
// Thread-safety: pure functions.
#pragma once

#include <cstdint>

namespace strata::kernels::internal {

void KvToFloat(bool bf16, const uint16_t* in, float* out, uint64_t n);
void FloatToKv(bool bf16, const float* in, uint16_t* out, uint64_t n);

}  // namespace strata::kernels::internal
