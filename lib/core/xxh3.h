// Private to lib/core: xxHash compiled inline (XXH_INLINE_ALL), so short per-block hashes get no
// call overhead and constant-size specialisation. xxHash comes from Debian's libxxhash-dev; this
// header must never be included by a public header.
#pragma once

#include <cstddef>
#include <cstdint>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "strata/block_key.h"

namespace strata::internal {

inline BlockKey Xxh3_128(const void* data, size_t size) {
  XXH128_hash_t h = XXH3_128bits(data, size);
  return BlockKey{h.high64, h.low64};
}

inline uint64_t Xxh3_64(const void* data, size_t size) { return XXH3_64bits(data, size); }

}  // namespace strata::internal
