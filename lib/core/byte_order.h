// Private to lib/core: fixed-endian encoding helpers for the canonical formats.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace strata::internal {

template <typename T>
constexpr T ByteSwap(T v) {
  if constexpr (sizeof(T) == 1) return v;
  else if constexpr (sizeof(T) == 2) return static_cast<T>(__builtin_bswap16(v));
  else if constexpr (sizeof(T) == 4) return static_cast<T>(__builtin_bswap32(v));
  else return static_cast<T>(__builtin_bswap64(v));
}

template <typename T>
inline void StoreLE(std::byte* p, T v) {
  if constexpr (std::endian::native == std::endian::big) v = ByteSwap(v);
  std::memcpy(p, &v, sizeof(T));
}

template <typename T>
inline T LoadLE(const std::byte* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  if constexpr (std::endian::native == std::endian::big) v = ByteSwap(v);
  return v;
}

template <typename T>
inline void StoreBE(std::byte* p, T v) {
  if constexpr (std::endian::native == std::endian::little) v = ByteSwap(v);
  std::memcpy(p, &v, sizeof(T));
}

inline uint64_t LoadBE64(const std::byte* p) {
  uint64_t v;
  std::memcpy(&v, p, sizeof(v));
  if constexpr (std::endian::native == std::endian::little) v = ByteSwap(v);
  return v;
}

// Copies `n` uint32 tokens to `dst` in little-endian order.
inline void StoreTokensLE(std::byte* dst, const uint32_t* tokens, size_t n) {
  if constexpr (std::endian::native == std::endian::little) {
    std::memcpy(dst, tokens, n * sizeof(uint32_t));
  } else {
    for (size_t i = 0; i < n; ++i) StoreLE<uint32_t>(dst + 4 * i, tokens[i]);
  }
}

}  // namespace strata::internal
