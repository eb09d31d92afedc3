// Private to lib/core: SHA-256 from OpenSSL's libcrypto (Debian's libssl-dev), linked privately so
// that public headers stay standard-library only.
#pragma once

#include <array>
#include <cstddef>
#include <span>

namespace strata::internal {

using Sha256Digest = std::array<std::byte, 32>;

// SHA-256 of `data`. Aborts only if libcrypto cannot provide SHA-256 at all (a broken install).
Sha256Digest Sha256(std::span<const std::byte> data);

}  // namespace strata::internal
