// CopyWithChecksum and ScatterWithChecksum (lib/core/checksum_copy.cc): the fused copy-and-hash
// returns exactly PayloadChecksum (libxxhash's XXH3-64) of the bytes and copies them exactly, for
// every XXH3 length class (short, mid-size, one block, many blocks, a partial last stripe), every
// destination alignment (32-byte streamed, 16-byte streamed, unaligned) and pieces of rows.
#include <algorithm>
#include <cstring>
#include <random>
#include <vector>

#include <catch2/catch.hpp>

#include "checksum_copy.h"
#include "strata/block_format.h"

namespace strata {
namespace {

std::vector<std::byte> Random(size_t n, uint32_t seed) {
  std::vector<std::byte> v(n);
  std::mt19937 rng(seed);
  for (auto& b : v) b = static_cast<std::byte>(rng());
  return v;
}

constexpr size_t kLengths[] = {0,    1,    16,   17,   128,  129,  240,  241,  255,   256,
                               257,  1023, 1024, 1025, 1088, 1089, 4096, 4097, 65536, 65600,
                               262144 + 63, 262144, 1 << 20};

TEST_CASE("CopyWithChecksum equals memcpy plus XXH3-64 for every length and alignment",
          "[core]") {
  for (size_t n : kLengths) {
    const auto src = Random(n + 64, static_cast<uint32_t>(n));
    for (size_t src_off : {0, 3}) {
      for (size_t dst_off : {0, 16, 5}) {
        std::vector<std::byte> dst(n + 128, std::byte{0xEE});
        // 64-byte aligned start, then the offset under test.
        auto* base = reinterpret_cast<std::byte*>(
            (reinterpret_cast<uintptr_t>(dst.data()) + 63) & ~uintptr_t{63});
        const uint64_t sum = CopyWithChecksum(base + dst_off, src.data() + src_off, n);
        INFO("n=" << n << " src_off=" << src_off << " dst_off=" << dst_off);
        REQUIRE(sum == PayloadChecksum({src.data() + src_off, n}));
        REQUIRE(std::equal(base + dst_off, base + dst_off + n, src.data() + src_off));
        REQUIRE(base[dst_off + n] == std::byte{0xEE});
      }
    }
  }
}

TEST_CASE("StreamCopy and StreamScatter copy exactly the bytes asked for, any length and alignment",
          "[core]") {
  for (size_t n : kLengths) {
    const auto src = Random(n + 64, static_cast<uint32_t>(n) + 11);
    for (size_t src_off : {0, 3}) {
      for (size_t dst_off : {0, 16, 32, 5}) {
        std::vector<std::byte> dst(n + 128, std::byte{0xEE});
        auto* base = reinterpret_cast<std::byte*>(
            (reinterpret_cast<uintptr_t>(dst.data()) + 63) & ~uintptr_t{63});
        StreamCopy(base + dst_off, src.data() + src_off, n);
        INFO("n=" << n << " src_off=" << src_off << " dst_off=" << dst_off);
        REQUIRE(std::equal(base + dst_off, base + dst_off + n, src.data() + src_off));
        REQUIRE(base[dst_off + n] == std::byte{0xEE});
        if (dst_off > 0) REQUIRE(base[dst_off - 1] == std::byte{0xEE});
      }
    }
  }
  for (size_t piece : {64, 128, 4096, 100}) {  // 100: not whole stripes (plain copies)
    for (size_t n : {size_t{256}, size_t{4096}, size_t{65536}, size_t{1000}}) {
      const auto src = Random(n, static_cast<uint32_t>(n + piece) + 5);
      const size_t count = (n + piece - 1) / piece;
      std::vector<std::byte> out(count * (piece + 64) + 64, std::byte{0xEE});
      std::vector<std::byte*> dst(count);
      for (size_t i = 0; i < count; ++i) dst[i] = out.data() + 16 + (count - 1 - i) * (piece + 64);
      StreamScatter(src.data(), n, piece, dst.data());
      INFO("piece=" << piece << " n=" << n);
      for (size_t i = 0; i < count; ++i) {
        const size_t len = std::min(piece, n - i * piece);
        REQUIRE(std::equal(dst[i], dst[i] + len, src.data() + i * piece));
        REQUIRE(dst[i][len] == std::byte{0xEE});
      }
    }
  }
}

TEST_CASE("ScatterWithChecksum writes each piece to its place and hashes the whole", "[core]") {
  for (size_t piece : {64, 128, 256, 4096}) {
    for (size_t n : {size_t{256}, size_t{4096}, size_t{65536}, size_t{262144}, size_t{1000}}) {
      const auto src = Random(n, static_cast<uint32_t>(n + piece));
      const size_t count = (n + piece - 1) / piece;
      // Pieces go to a shuffled set of slots, 64 bytes apart from each other.
      std::vector<std::byte> out(count * (piece + 64) + 64);
      std::vector<std::byte*> dst(count);
      std::vector<size_t> slot(count);
      for (size_t i = 0; i < count; ++i) slot[i] = i;
      std::shuffle(slot.begin(), slot.end(), std::mt19937(7));
      for (size_t i = 0; i < count; ++i) dst[i] = out.data() + 16 + slot[i] * (piece + 64);
      const uint64_t sum = ScatterWithChecksum(src.data(), n, piece, dst.data());
      INFO("piece=" << piece << " n=" << n);
      REQUIRE(sum == PayloadChecksum(src));
      for (size_t i = 0; i < count; ++i) {
        const size_t len = std::min(piece, n - i * piece);
        REQUIRE(std::equal(dst[i], dst[i] + len, src.data() + i * piece));
      }
    }
  }
}


TEST_CASE("GatherWithChecksum assembles strided rows and hashes them as PayloadChecksum", "[core]") {
  // Rows of `row` bytes taken from `heads`-interleaved chunks, as the daemon's gather of one head
  // shard: every XXH3 length class it takes (one block, a partial last block, many blocks), rows
  // of one stripe and of many, appended a few rows per call.
  for (size_t row : {64, 256, 1024}) {
    for (size_t rows_total : {size_t{4}, size_t{16}, size_t{17}, size_t{1024}, size_t{1027}}) {
      const size_t n = row * rows_total;
      if (n < 256) continue;  // below XXH3's long-input sizes: Fits refuses (checked below)
      constexpr size_t kHeads = 3, kHead = 1;
      const auto chunks = Random(rows_total * kHeads * row, static_cast<uint32_t>(n + row));
      std::vector<std::byte> expected(n);
      for (size_t r = 0; r < rows_total; ++r)
        std::memcpy(expected.data() + r * row, chunks.data() + (r * kHeads + kHead) * row, row);
      std::vector<std::byte> out(n + 64 + 32, std::byte{0xEE});
      auto* dst = reinterpret_cast<std::byte*>(
          (reinterpret_cast<uintptr_t>(out.data()) + 31) & ~uintptr_t{31});
      INFO("row=" << row << " rows=" << rows_total);
      REQUIRE(GatherWithChecksum::Fits(dst, n) == (__builtin_cpu_supports("avx2") != 0));
      if (!GatherWithChecksum::Fits(dst, n)) continue;
      GatherWithChecksum g(dst, n);
      for (size_t r = 0; r < rows_total;) {
        const size_t take = std::min<size_t>(rows_total - r, 1 + r % 5);  // 1..5 rows a call
        g.AppendRows(chunks.data() + (r * kHeads + kHead) * row, take, kHeads * row, row);
        r += take;
      }
      REQUIRE(g.Finish() == PayloadChecksum(expected));
      REQUIRE(std::equal(dst, dst + n, expected.data()));
      REQUIRE(dst[n] == std::byte{0xEE});
    }
  }
  std::vector<std::byte> small(512 + 32);
  auto* aligned = reinterpret_cast<std::byte*>(
      (reinterpret_cast<uintptr_t>(small.data()) + 31) & ~uintptr_t{31});
  CHECK(!GatherWithChecksum::Fits(aligned, 192));      // XXH3's mid-size path
  CHECK(!GatherWithChecksum::Fits(aligned, 320 + 8));  // not whole stripes
  CHECK(!GatherWithChecksum::Fits(aligned + 16, 320)); // not 32-byte aligned
}

}  // namespace
}  // namespace strata
