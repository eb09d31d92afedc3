// XXH3-64 compiled inline with -mavx2 (CMakeLists.txt). Called only when the CPU has AVX2.
#define XXH_INLINE_ALL
#include <xxhash.h>

#include <cstddef>
#include <cstdint>

uint64_t StrataDeviceCheckXxh3Avx2(const void* data, size_t n) { return XXH3_64bits(data, n); }
