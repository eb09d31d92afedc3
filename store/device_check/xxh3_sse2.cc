// XXH3-64 compiled inline for the baseline x86-64 vector unit (SSE2). See checksum_inline.cc.
#define XXH_INLINE_ALL
#include <xxhash.h>

#include <cstddef>
#include <cstdint>

uint64_t StrataDeviceCheckXxh3Sse2(const void* data, size_t n) { return XXH3_64bits(data, n); }
