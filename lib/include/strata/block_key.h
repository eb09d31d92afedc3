// BlockKey: the 128-bit name of a token-block prefix (docs/keys.md), and the 128-bit namespace
// fingerprint, which shares its representation.
//
// Canonical byte form: the 16 bytes that xxHash calls XXH128_canonical_t, i.e. the high 64 bits
// big-endian followed by the low 64 bits big-endian. This is what `xxh128sum` prints, what goes on
// the wire and on disk, and what feeds the next link of a key chain. Hex form: those 16 bytes as 32
// lower-case hex digits.
//
// Thread-safety: plain value type.
#pragma once

#include <array>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace strata {

struct BlockKey {
  uint64_t high = 0;
  uint64_t low = 0;

  static constexpr size_t kSize = 16;

  // Writes the canonical 16 bytes to `out`.
  void ToBytes(std::span<std::byte, kSize> out) const;
  std::array<std::byte, kSize> ToBytes() const;
  static BlockKey FromBytes(std::span<const std::byte, kSize> in);

  std::string ToHex() const;
  // Parses 32 hex digits (either case); nullopt on any other input.
  static std::optional<BlockKey> FromHex(std::string_view hex);

  friend constexpr auto operator<=>(const BlockKey&, const BlockKey&) = default;
};

// A namespace fingerprint is a 128-bit hash in the same canonical form as a key (docs/keys.md).
using NamespaceId = BlockKey;

struct BlockKeyHash {
  // Keys are already uniform hashes: the low half is a fine bucket index.
  size_t operator()(const BlockKey& k) const noexcept { return static_cast<size_t>(k.low); }
};

}  // namespace strata

template <>
struct std::hash<strata::BlockKey> {
  size_t operator()(const strata::BlockKey& k) const noexcept { return strata::BlockKeyHash{}(k); }
};
