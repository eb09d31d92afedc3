// Payload checksums: XXH3-64 (seed 0) through libxxhash's runtime-dispatched entry points, which
// pick the widest vector unit the CPU has (AVX-512 / AVX2 / SSE2). Bulk payloads are hashed here;
// the short per-block key hashes stay inline (xxh3.h). Same algorithm, same bits either way.
#define XXH_STATIC_LINKING_ONLY  // XXH3_state_t as a complete type: the state lives on the stack
#include <xxhash.h>
#include <xxh_x86dispatch.h>

#include <algorithm>
#include <cstring>

#include "strata/block_format.h"

namespace strata {

uint64_t PayloadChecksum(std::span<const std::byte> payload) {
  return XXH3_64bits_dispatch(payload.data(), payload.size());
}

// CopyWithChecksum and ScatterWithChecksum: checksum_copy.cc.

static_assert(sizeof(XXH3_state_t) <= sizeof(PayloadChecksumStream) &&
              alignof(XXH3_state_t) <= 64);

PayloadChecksumStream::PayloadChecksumStream() {
  XXH3_64bits_reset(reinterpret_cast<XXH3_state_t*>(state_));
}

void PayloadChecksumStream::Update(std::span<const std::byte> piece) {
  XXH3_64bits_update_dispatch(reinterpret_cast<XXH3_state_t*>(state_), piece.data(), piece.size());
}

uint64_t PayloadChecksumStream::Digest() const {
  return XXH3_64bits_digest(reinterpret_cast<const XXH3_state_t*>(state_));
}

}  // namespace strata
