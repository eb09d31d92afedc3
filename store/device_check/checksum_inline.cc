// The standalone device check's stand-in for lib/core/checksum.cc: the same XXH3-64 (seed 0), so
// the same bits, from xxhash.h compiled inline (header only) instead of libxxhash's
// runtime-dispatched entry points, which a bare GPU machine does not have. AVX2 when the CPU has
// it, SSE2 otherwise (libxxhash would also pick AVX-512 where present).
#include <cstring>

#include "strata/block_format.h"

uint64_t StrataDeviceCheckXxh3Sse2(const void* data, size_t n);
uint64_t StrataDeviceCheckXxh3Avx2(const void* data, size_t n);

namespace strata {
namespace {
using HashFn = uint64_t (*)(const void*, size_t);
const HashFn kHash =
    __builtin_cpu_supports("avx2") ? &StrataDeviceCheckXxh3Avx2 : &StrataDeviceCheckXxh3Sse2;
}  // namespace

uint64_t PayloadChecksum(std::span<const std::byte> payload) {
  return kHash(payload.data(), payload.size());
}

uint64_t CopyWithChecksum(std::byte* dst, const std::byte* src, size_t n) {
  std::memcpy(dst, src, n);
  return kHash(dst, n);
}

}  // namespace strata
