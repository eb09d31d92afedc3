#include "sha256.h"

#include <cstdio>
#include <cstdlib>

#include <openssl/evp.h>

namespace strata::internal {

Sha256Digest Sha256(std::span<const std::byte> data) {
  Sha256Digest out;
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), reinterpret_cast<unsigned char*>(out.data()), &len,
                 EVP_sha256(), nullptr) != 1 ||
      len != out.size()) {
    std::fprintf(stderr, "strata: libcrypto failed to compute SHA-256\n");
    std::abort();
  }
  return out;
}

}  // namespace strata::internal
