// The scalar conversions every codec (CPU and CUDA) is built on, checked against independent
// references: the compiler's _Float16, exact double arithmetic, and brute-force nearest search.
#include "strata_kernels/numeric.h"

#include <catch2/catch.hpp>

#include "convert_cpu.h"  // kernels/src: the bulk conversions the CPU codecs use

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

namespace strata::kernels {
namespace {

uint16_t CompilerHalfBits(float f) {
  _Float16 h = static_cast<_Float16>(f);
  uint16_t b;
  std::memcpy(&b, &h, 2);
  return b;
}

std::vector<float> InterestingFloats() {
  std::vector<float> v = {0.0f, -0.0f, 1.0f, -1.0f, 65504.0f, 65519.0f, 65520.0f, 1e9f, -1e9f,
                          5.96e-8f, 2.98e-8f, 2.99e-8f, 6.1e-5f, 448.0f, 464.0f, 1e-40f,
                          std::numeric_limits<float>::infinity(),
                          -std::numeric_limits<float>::infinity()};
  std::mt19937 rng(7);
  std::uniform_int_distribution<uint32_t> bits;
  for (int i = 0; i < 200000; ++i) {
    uint32_t u = bits(rng);
    float f;
    std::memcpy(&f, &u, 4);
    if (std::isnan(f)) continue;
    v.push_back(f);
  }
  std::uniform_real_distribution<float> mid(-70000.0f, 70000.0f);
  for (int i = 0; i < 100000; ++i) v.push_back(mid(rng));
  return v;
}

TEST_CASE("fp16 conversions match the compiler's _Float16", "[kernels]") {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = HalfToFloat(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      CHECK((h & 0x7c00) == 0x7c00);
      continue;
    }
    _Float16 ref;
    const uint16_t hb = static_cast<uint16_t>(h);
    std::memcpy(&ref, &hb, 2);
    REQUIRE(f == static_cast<float>(ref));
    REQUIRE(FloatToHalf(f) == hb);  // round trip
  }
  for (float f : InterestingFloats()) {
    INFO("f = " << f);
    REQUIRE(FloatToHalf(f) == CompilerHalfBits(f));
  }
}

TEST_CASE("fp16 directed rounding brackets the value", "[kernels]") {
  for (float f : InterestingFloats()) {
    const uint16_t dn = FloatToHalf(f, Round::kDown), up = FloatToHalf(f, Round::kUp);
    const double lo = HalfToFloat(dn), hi = HalfToFloat(up);
    INFO("f = " << f);
    REQUIRE(lo <= f);
    REQUIRE(hi >= f);
    if (lo == hi) {
      REQUIRE(lo == f);
    } else {
      // no fp16 value lies strictly between: the two are neighbours in the ordered encoding
      auto ord = [](uint16_t h) { return (h & 0x8000) ? -int(h & 0x7fff) : int(h & 0x7fff); };
      REQUIRE(ord(up) - ord(dn) == 1);
    }
  }
}

TEST_CASE("bf16 rounding is round-to-nearest-even", "[kernels]") {
  for (float f : InterestingFloats()) {
    if (!std::isfinite(f)) continue;
    const uint16_t b = FloatToBf16(f);
    const double v = Bf16ToFloat(b);
    if (std::isinf(v)) continue;  // overflow past bf16's largest finite value
    // the neighbours of b on each side are no nearer than v
    for (int d : {-1, 1}) {
      const uint16_t nb = static_cast<uint16_t>(b + d);
      const double n = Bf16ToFloat(nb);
      if (std::isnan(n) || std::isinf(n) || ((nb ^ b) & 0x8000)) continue;
      INFO("f = " << f);
      REQUIRE(std::fabs(v - f) <= std::fabs(n - f));
      if (std::fabs(v - f) == std::fabs(n - f)) REQUIRE((b & 1) == 0);
    }
  }
}

TEST_CASE("e4m3 encodes to the nearest code, ties to even, saturating at 448", "[kernels]") {
  std::vector<double> codes(128);
  for (int c = 0; c < 127; ++c) codes[c] = E4m3ToFloat(static_cast<uint8_t>(c));
  CHECK(std::isnan(E4m3ToFloat(0x7f)));
  CHECK(E4m3ToFloat(0x7e) == 448.0f);
  CHECK(E4m3ToFloat(0x01) == std::ldexp(1.0f, -9));
  for (int c = 0; c < 127; ++c) REQUIRE(FloatToE4m3(static_cast<float>(codes[c])) == c);
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-500.0f, 500.0f);
  std::uniform_real_distribution<float> small(-0.02f, 0.02f);
  for (int i = 0; i < 200000; ++i) {
    const float f = i % 2 ? u(rng) : small(rng);
    const uint8_t q = FloatToE4m3(f);
    const double a = std::fabs(double(f));
    if (a >= 448) {
      REQUIRE((q & 0x7f) == 0x7e);
      continue;
    }
    // brute force: the nearest magnitude code, ties to the even code
    int best = 0;
    for (int c = 1; c < 127; ++c) {
      const double dc = std::fabs(codes[c] - a), db = std::fabs(codes[best] - a);
      if (dc < db || (dc == db && (c & 1) == 0)) best = c;
    }
    INFO("f = " << f);
    REQUIRE((q & 0x7f) == best);
    if (best != 0) REQUIRE(((q >> 7) != 0) == (f < 0));
  }
  CHECK(FloatToE4m3(std::numeric_limits<float>::infinity()) == 0x7e);
  CHECK(FloatToE4m3(std::nanf("")) == 0x7f);
}

TEST_CASE("bulk fp16/bf16 conversions equal the scalar ones", "[kernels]") {
  std::vector<uint16_t> all(65536);
  for (uint32_t h = 0; h < 65536; ++h) all[h] = static_cast<uint16_t>(h);
  std::vector<float> f(all.size());
  for (bool bf16 : {false, true}) {
    internal::KvToFloat(bf16, all.data(), f.data(), all.size());
    for (uint32_t h = 0; h < 65536; ++h) {
      const float ref = bf16 ? Bf16ToFloat(all[h]) : HalfToFloat(all[h]);
      if (std::isnan(ref)) {
        REQUIRE(std::isnan(f[h]));
      } else {
        REQUIRE(FloatToBits(f[h]) == FloatToBits(ref));
      }
    }
  }
  std::vector<float> in;
  for (float v : InterestingFloats())
    if (!std::isnan(v)) in.push_back(v);
  std::vector<uint16_t> out(in.size());
  for (bool bf16 : {false, true}) {
    internal::FloatToKv(bf16, in.data(), out.data(), in.size());
    for (size_t i = 0; i < in.size(); ++i) {
      INFO("f = " << in[i]);
      REQUIRE(out[i] == (bf16 ? FloatToBf16(in[i]) : FloatToHalf(in[i])));
    }
  }
}

}  // namespace
}  // namespace strata::kernels
