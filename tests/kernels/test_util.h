// Helpers shared by the kernels/ tests: engine caches as host buffers, element access, stats.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "strata_kernels/kv_layout.h"
#include "strata_kernels/numeric.h"

namespace strata::kernels::testing {

// An engine's paged cache in host memory: one buffer per layer.
struct HostCache {
  PagedKvSpec spec;
  std::vector<std::vector<std::byte>> layers;

  explicit HostCache(const PagedKvSpec& s) : spec(s), layers(s.num_layers) {
    for (auto& l : layers) l.resize(s.layer_bytes());
  }
  std::vector<std::span<const std::byte>> ConstViews() const {
    std::vector<std::span<const std::byte>> v;
    for (const auto& l : layers) v.emplace_back(l);
    return v;
  }
  std::vector<std::span<std::byte>> Views() {
    std::vector<std::span<std::byte>> v;
    for (auto& l : layers) v.emplace_back(l);
    return v;
  }
};

inline void FillPattern(std::vector<std::byte>& buf, uint64_t seed) {
  uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
  for (auto& b : buf) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    b = static_cast<std::byte>(s >> 24);
  }
}

// Decoded value of element i of a block of `dtype`.
inline double ElemValue(KvDtype dtype, const std::byte* base, uint64_t i) {
  uint16_t h;
  switch (dtype) {
    case KvDtype::kFloat16:
      std::memcpy(&h, base + 2 * i, 2);
      return HalfToFloat(h);
    case KvDtype::kBFloat16:
      std::memcpy(&h, base + 2 * i, 2);
      return Bf16ToFloat(h);
    case KvDtype::kFloat8E4M3:
      return E4m3ToFloat(static_cast<uint8_t>(base[i]));
    case KvDtype::kFloat8E5M2:
      return HalfToFloat(static_cast<uint16_t>(uint16_t(base[i]) << 8));
    case KvDtype::kFloat32: {
      float f;
      std::memcpy(&f, base + 4 * i, 4);
      return f;
    }
  }
  return 0;
}

// Half an ulp of `dtype` at magnitude |v| (the rounding error of storing v in dtype).
inline double HalfUlp(KvDtype dtype, double v) {
  const double a = std::fabs(v);
  switch (dtype) {
    case KvDtype::kFloat16: return std::max(a * std::ldexp(1.0, -11), std::ldexp(1.0, -25));
    case KvDtype::kBFloat16: return std::max(a * std::ldexp(1.0, -8), std::ldexp(1.0, -134));
    default: return 0;
  }
}

struct ErrorStats {
  double max_abs = 0;
  double rel_l2 = 0;  // ||x - x'|| / ||x||
  double cosine = 1;
};

inline ErrorStats CompareBlocks(KvDtype dtype, const std::byte* a, const std::byte* b, uint64_t n) {
  double dot = 0, na = 0, nb = 0, nd = 0, mx = 0;
  for (uint64_t i = 0; i < n; ++i) {
    const double x = ElemValue(dtype, a, i), y = ElemValue(dtype, b, i);
    dot += x * y;
    na += x * x;
    nb += y * y;
    nd += (x - y) * (x - y);
    mx = std::max(mx, std::fabs(x - y));
  }
  ErrorStats s;
  s.max_abs = mx;
  s.rel_l2 = na > 0 ? std::sqrt(nd / na) : 0;
  s.cosine = (na > 0 && nb > 0) ? dot / std::sqrt(na * nb) : 1;
  return s;
}

}  // namespace strata::kernels::testing
