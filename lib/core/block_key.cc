#include "strata/block_key.h"

#include "byte_order.h"

namespace strata {

void BlockKey::ToBytes(std::span<std::byte, kSize> out) const {
  internal::StoreBE<uint64_t>(out.data(), high);
  internal::StoreBE<uint64_t>(out.data() + 8, low);
}

std::array<std::byte, BlockKey::kSize> BlockKey::ToBytes() const {
  std::array<std::byte, kSize> out;
  ToBytes(out);
  return out;
}

BlockKey BlockKey::FromBytes(std::span<const std::byte, kSize> in) {
  return BlockKey{internal::LoadBE64(in.data()), internal::LoadBE64(in.data() + 8)};
}

std::string BlockKey::ToHex() const {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(2 * kSize, '0');
  auto bytes = ToBytes();
  for (size_t i = 0; i < kSize; ++i) {
    auto b = static_cast<uint8_t>(bytes[i]);
    out[2 * i] = kDigits[b >> 4];
    out[2 * i + 1] = kDigits[b & 0xF];
  }
  return out;
}

std::optional<BlockKey> BlockKey::FromHex(std::string_view hex) {
  if (hex.size() != 2 * kSize) return std::nullopt;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::array<std::byte, kSize> bytes;
  for (size_t i = 0; i < kSize; ++i) {
    int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    bytes[i] = static_cast<std::byte>((hi << 4) | lo);
  }
  return FromBytes(bytes);
}

}  // namespace strata
