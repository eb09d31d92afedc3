// What the engine-memory tests share (huge_pages_test.cc, kv_share_test.cc): an engine's KV cache
// in one large mapping, filled before it is registered as an engine's is, and the daemon's count
// of stored blocks by the path their bytes came (Stats `store_paths`).
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "strata/client.h"
#include "tests/lib/paged_test_util.h"

namespace strata::engine_kv {

using paged_test::kBlockSize;
using paged_test::kHeadDim;
using paged_test::kLayers;

// An engine's KV cache of kLayers layers of 4 MiB in vLLM's layout, in one mapping from `fd`
// (anonymous when -1, or a file's), zeroed and filled before it is registered, as an engine does.
struct EngineKv {
  static constexpr uint64_t kMiB = uint64_t{1} << 20;
  static constexpr uint32_t kHeads = 4;
  static constexpr uint64_t kChunk = uint64_t{kBlockSize} * kHeads * kHeadDim * 2;
  static constexpr uint32_t kPagesPerLayer = 4 * kMiB / (2 * kChunk);  // 256
  static constexpr uint64_t kLayerBytes = 2 * kPagesPerLayer * kChunk;
  std::byte* mapping = nullptr;
  uint64_t mapped = 0;
  std::byte* base = nullptr;  // 2 MiB-aligned

  explicit EngineKv(int fd = -1) {
    mapped = kLayers * kLayerBytes + 2 * kMiB;
    if (fd >= 0) REQUIRE(::ftruncate(fd, static_cast<off_t>(mapped)) == 0);
    void* m = ::mmap(nullptr, mapped, PROT_READ | PROT_WRITE,
                     fd >= 0 ? MAP_PRIVATE : MAP_PRIVATE | MAP_ANONYMOUS, fd, 0);
    REQUIRE(m != MAP_FAILED);
    mapping = static_cast<std::byte*>(m);
    base = mapping + (2 * kMiB - reinterpret_cast<uintptr_t>(mapping) % (2 * kMiB)) % (2 * kMiB);
    std::memset(base, 0, kLayers * kLayerBytes);
    for (uint64_t i = 0; i < kLayers * kLayerBytes; i += 8) {
      const uint64_t v = i * 0x9E3779B97F4A7C15ull;
      std::memcpy(base + i, &v, 8);
    }
  }
  ~EngineKv() { ::munmap(mapping, mapped); }
  KvCacheSpec Spec() const {
    KvCacheSpec s;
    s.layout = KvLayout::kVllmFlashAttn;
    for (uint32_t l = 0; l < kLayers; ++l) s.layers.push_back(base + l * kLayerBytes);
    s.num_blocks = kPagesPerLayer;
    return s;
  }
  std::byte* Chunk(uint32_t layer, uint32_t plane, int32_t page) const {
    return base + layer * kLayerBytes + (uint64_t{plane} * kPagesPerLayer + page) * kChunk;
  }
};

// Blocks the daemon published, by path (Stats `store_paths`).
struct StorePaths {
  uint64_t staging = 0, cross_memory = 0, gather = 0, mapped = 0;
};
inline StorePaths StorePathsOf(Client& client) {
  auto stats = client.Stats();
  REQUIRE(stats.ok());
  const nlohmann::json j = nlohmann::json::parse(*stats)["store_paths"];
  return {j["staging"]["blocks"].get<uint64_t>(), j["cross_memory"]["blocks"].get<uint64_t>(),
          j["cross_memory_gather"]["blocks"].get<uint64_t>(),
          j["mapped_gather"]["blocks"].get<uint64_t>()};
}

}  // namespace strata::engine_kv
