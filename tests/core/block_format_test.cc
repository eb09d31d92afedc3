// Block header format: round trip, truncation, and detection of every single-bit flip in the
// header and in the payload.
#include "strata/block_format.h"

#include <random>
#include <vector>

#include <catch2/catch.hpp>

namespace strata {
namespace {

struct Fixture {
  BlockKey key{0x1111222233334444ULL, 0x5555666677778888ULL};
  NamespaceId ns{0x99990000aaaabbbbULL, 0xccccddddeeeeffffULL};
  std::vector<std::byte> payload;
  BlockHeader header;
  std::array<std::byte, kBlockHeaderSize> encoded;

  explicit Fixture(size_t payload_size, Codec codec = Codec::kNone) : payload(payload_size) {
    std::mt19937 rng(payload_size);
    for (auto& b : payload) b = static_cast<std::byte>(rng());
    header = MakeBlockHeader(key, ns, codec, payload);
    EncodeBlockHeader(header, encoded);
  }
};

TEST_CASE("Block header round-trips", "[core]") {
  for (Codec codec : {Codec::kNone, Codec::kShuffleZstd, Codec::kInt4Kivi}) {
    Fixture f(4096, codec);
    auto decoded = DecodeBlockHeader(f.encoded);
    REQUIRE(decoded.ok());
    CHECK(*decoded == f.header);
    CHECK(decoded->payload_length == 4096);
    CHECK(decoded->codec == codec);
    CHECK(VerifyPayload(*decoded, f.payload).ok());
  }
  // The magic is the documented "STBK" and the version follows it.
  Fixture f(0);
  CHECK(static_cast<char>(f.encoded[0]) == 'S');
  CHECK(static_cast<char>(f.encoded[3]) == 'K');
  CHECK(static_cast<uint8_t>(f.encoded[4]) == kBlockFormatVersion);
  CHECK(VerifyPayload(f.header, f.payload).ok());
}

TEST_CASE("Truncated headers are rejected with a clear status", "[core]") {
  Fixture f(128);
  for (size_t n = 0; n < kBlockHeaderSize; ++n) {
    auto decoded = DecodeBlockHeader(std::span<const std::byte>(f.encoded.data(), n));
    REQUIRE_FALSE(decoded.ok());
    CHECK(decoded.status().IsCorruption());
    CHECK(std::string(decoded.status().message()).find("truncated") != std::string::npos);
  }
}

TEST_CASE("Every single-bit flip in a header is detected", "[core]") {
  Fixture f(1024);
  for (size_t bit = 0; bit < kBlockHeaderSize * 8; ++bit) {
    auto copy = f.encoded;
    copy[bit / 8] ^= std::byte(1u << (bit % 8));
    auto decoded = DecodeBlockHeader(copy);
    INFO("bit " << bit);
    CHECK_FALSE(decoded.ok());
  }
}

TEST_CASE("Every single-bit flip in a payload is detected", "[core]") {
  Fixture f(2048);
  auto payload = f.payload;
  for (size_t bit = 0; bit < payload.size() * 8; ++bit) {
    payload[bit / 8] ^= std::byte(1u << (bit % 8));
    Status st = VerifyPayload(f.header, payload);
    if (st.ok()) FAIL("undetected flip of payload bit " << bit);
    CHECK(st.IsCorruption());
    payload[bit / 8] ^= std::byte(1u << (bit % 8));
  }
  CHECK(VerifyPayload(f.header, payload).ok());
}

TEST_CASE("Payload length mismatches and bad fields are corruption", "[core]") {
  Fixture f(512);
  auto shorter = std::span<const std::byte>(f.payload).first(511);
  CHECK(VerifyPayload(f.header, shorter).IsCorruption());

  // A well-formed header (valid checksum) with an unknown codec or a newer version.
  BlockHeader h = f.header;
  h.codec = static_cast<Codec>(77);
  std::array<std::byte, kBlockHeaderSize> buf;
  EncodeBlockHeader(h, buf);
  auto decoded = DecodeBlockHeader(buf);
  REQUIRE_FALSE(decoded.ok());
  CHECK(decoded.status().IsCorruption());

  h = f.header;
  h.version = kBlockFormatVersion + 1;
  EncodeBlockHeader(h, buf);
  decoded = DecodeBlockHeader(buf);
  REQUIRE_FALSE(decoded.ok());
  CHECK(decoded.status().code() == StatusCode::kNotSupported);

  h = f.header;
  h.payload_length = kMaxBlockPayload + 1;
  EncodeBlockHeader(h, buf);
  CHECK(DecodeBlockHeader(buf).status().IsCorruption());
}

}  // namespace
}  // namespace strata

namespace strata {
namespace {

TEST_CASE("CopyWithChecksum copies and sums like PayloadChecksum at every size", "[core]") {
  std::mt19937 rng(5);
  for (size_t n : {size_t{0}, size_t{1}, size_t{63}, size_t{4096}, size_t{128} << 10,
                   (size_t{128} << 10) + 1, size_t{2} << 20, (size_t{3} << 20) + 17}) {
    std::vector<std::byte> src(n), dst(n);
    for (auto& b : src) b = static_cast<std::byte>(rng());
    INFO("size " << n);
    CHECK(CopyWithChecksum(dst.data(), src.data(), n) == PayloadChecksum(src));
    CHECK(dst == src);
  }
  // The documented value: XXH3-64 of the empty payload (xxHash's own test vector).
  CHECK(PayloadChecksum({}) == 0x2D06800538D394C2ULL);
}

TEST_CASE("PayloadChecksumStream over any split equals PayloadChecksum", "[core]") {
  std::mt19937 rng(9);
  for (size_t n : {size_t{0}, size_t{1}, size_t{240}, size_t{4096}, size_t{512} << 10,
                   (size_t{2} << 20) + 12345}) {
    std::vector<std::byte> data(n);
    for (auto& b : data) b = static_cast<std::byte>(rng());
    for (int split = 0; split < 4; ++split) {
      INFO("size " << n << ", split " << split);
      PayloadChecksumStream sum;
      size_t at = 0;
      while (at < n) {
        const size_t piece = std::min(n - at, split == 0 ? n : 1 + rng() % (n / (split * 3) + 1));
        sum.Update(std::span(data).subspan(at, piece));
        at += piece;
      }
      CHECK(sum.Digest() == PayloadChecksum(data));
    }
  }
}

}  // namespace
}  // namespace strata
