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

// Namespace tag (docs/keys.md, "Namespace tag"): the first kNamespaceTagBits bits of every block
// key (the top of `high`; the first 4 canonical bytes) are the first kNamespaceTagBits bits of its
// namespace id, and the other 96 bits are the chained hash. A daemon, which cannot invert a key,
// checks with KeyInNamespace that every key of a store belongs to the namespace the store names.
// A key of another namespace passes with probability 2^-32 (two namespaces share a tag).
inline constexpr int kNamespaceTagBits = 32;
inline constexpr uint64_t kNamespaceTagMask = ~uint64_t{0} << (64 - kNamespaceTagBits);

// `hash` with its tag bits replaced by those of `tagged` (a namespace id, or a key of it).
constexpr BlockKey WithNamespaceTag(const BlockKey& hash, const BlockKey& tagged) {
  return BlockKey{(tagged.high & kNamespaceTagMask) | (hash.high & ~kNamespaceTagMask), hash.low};
}

// True when `key` carries the tag of namespace `ns`.
constexpr bool KeyInNamespace(const BlockKey& key, const NamespaceId& ns) {
  return ((key.high ^ ns.high) & kNamespaceTagMask) == 0;
}

struct BlockKeyHash {
  // Keys are already uniform hashes: the low half is a fine bucket index.
  size_t operator()(const BlockKey& k) const noexcept { return static_cast<size_t>(k.low); }
};

}  // namespace strata

template <>
struct std::hash<strata::BlockKey> {
  size_t operator()(const strata::BlockKey& k) const noexcept { return strata::BlockKeyHash{}(k); }
};
