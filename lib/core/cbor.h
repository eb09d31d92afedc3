// Private to lib/core: a canonical CBOR encoder for the few types that vLLM's block hashes
// serialise (vLLM's sha256_cbor / xxhash_cbor hash cbor2.dumps(obj, canonical=True)).
//
// Canonical here is RFC 8949 §4.2.1 ("core deterministic encoding"), which is what cbor2 writes for
// these types with canonical=True: every head in its shortest form, definite lengths only.
//
//   head = (major << 5) | info, then the argument big-endian:
//     info 0..23  the argument itself            info 24  1 byte      info 25  2 bytes
//     info 26     4 bytes                        info 27  8 bytes
//   major 0 unsigned int (argument = value)     major 1 negative int (argument = -1 - value)
//   major 2 byte string (argument = length)     major 3 UTF-8 text (argument = length in bytes)
//   major 4 array (argument = item count)       0xf6 null (Python None)
//
// A Python tuple and list both encode as an array. Text is written as given: callers pass UTF-8.
//
// Thread-safety: a CborWriter appends to one vector; use one per thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace strata::internal {

class CborWriter {
 public:
  // Appends to `out` (not cleared).
  explicit CborWriter(std::vector<std::byte>& out) : out_(out) {}

  void Uint(uint64_t v) { Head(0, v); }
  void Int(int64_t v);
  void Bytes(std::span<const std::byte> b);
  void Text(std::string_view s);
  // An array of `n` items; the caller writes the items next.
  void ArrayHeader(uint64_t n) { Head(4, n); }
  void Null() { out_.push_back(std::byte{0xf6}); }

 private:
  void Head(uint8_t major, uint64_t argument);
  std::vector<std::byte>& out_;
};

}  // namespace strata::internal
