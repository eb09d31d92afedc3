#include "store_test_util.h"

#include <cstdlib>
#include <filesystem>
#include <stdexcept>

namespace strata::store::testing {

BlockKey TestKey(uint64_t i, uint64_t salt) {
  uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ULL ^ (salt * 0xD1B54A32D192ED03ULL);
  x ^= x >> 31;
  x *= 0xBF58476D1CE4E5B9ULL;
  x ^= x >> 29;
  return BlockKey{x ^ 0xA5A5A5A5A5A5A5A5ULL, x * 0x94D049BB133111EBULL + i};
}

static uint64_t Next(uint64_t& s) {
  s ^= s << 13;
  s ^= s >> 7;
  s ^= s << 17;
  return s;
}

std::vector<std::byte> TestPayload(const BlockKey& key, size_t size) {
  std::vector<std::byte> out(size);
  uint64_t s = key.low ^ (key.high << 1) ^ size;
  if (s == 0) s = 1;
  size_t i = 0;
  for (; i + 8 <= size; i += 8) {
    const uint64_t v = Next(s);
    for (int b = 0; b < 8; ++b) out[i + b] = static_cast<std::byte>(v >> (8 * b));
  }
  const uint64_t v = Next(s);
  for (int b = 0; i < size; ++i, ++b) out[i] = static_cast<std::byte>(v >> (8 * b));
  return out;
}

BlockHeader TestHeader(const BlockKey& key, const std::vector<std::byte>& payload) {
  return MakeBlockHeader(key, BlockKey{0x5354524154410000ULL, 0x7465737400000001ULL}, Codec::kNone,
                         payload);
}

bool IsTestPayload(const BlockKey& key, const std::byte* payload, size_t size) {
  const auto want = TestPayload(key, size);
  for (size_t i = 0; i < size; ++i)
    if (want[i] != payload[i]) return false;
  return true;
}

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl = std::string(base && *base ? base : "/tmp") + "/strata-store-test-XXXXXX";
  if (mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

}  // namespace strata::store::testing
