// The disk tier's record trailer (store/disk_record.h): what is encoded decodes
// to the same fields, byte for byte where the layout is drawn, and malformed
// trailers are refused.
#include "store/disk_record.h"

#include <catch2/catch.hpp>
#include <string>
#include <vector>

namespace strata::store::disk {
namespace {

TEST_CASE("disk record: little-endian integers as drawn", "[store]") {
  std::byte b[8]{};
  PutLe(b, 0x0102030405060708ULL, 8);
  CHECK(std::to_integer<int>(b[0]) == 0x08);
  CHECK(std::to_integer<int>(b[7]) == 0x01);
  CHECK(GetLe(b, 8) == 0x0102030405060708ULL);
  PutLe(b, 0xAABBCCDD, 4);
  CHECK(GetLe(b, 4) == 0xAABBCCDD);
  CHECK(RoundUp(1, kAlign) == 4096);
  CHECK(RoundUp(4096, kAlign) == 4096);
  CHECK(RoundUp(4097, kAlign) == 8192);
}

TEST_CASE("disk record: trailers round-trip with every combination of fields", "[store]") {
  const BlockKey parent{0x1122334455667788ULL, 0x99AABBCCDDEEFF00ULL};
  for (bool has_parent : {false, true}) {
    for (std::string tag : {std::string(), std::string("t"), std::string(300, 'x')}) {
      for (DiskCompression c :
           {DiskCompression::kNone, DiskCompression::kLz4, DiskCompression::kZstd}) {
        INFO("parent " << has_parent << " tag " << tag.size() << " compression " << int(c));
        const bool compressed = c != DiskCompression::kNone;
        const size_t n = 1 + TrailerBytes(has_parent, tag, compressed);
        std::vector<std::byte> buf(n + 3, std::byte{0xEE});  // room past the end stays unread
        EncodeTrailer(buf.data(), has_parent ? &parent : nullptr, tag, c, compressed ? 777 : 0);
        const uint8_t flags = std::to_integer<uint8_t>(buf[0]);
        CHECK(bool(flags & kHasParent) == has_parent);
        CHECK(bool(flags & kHasTag) == !tag.empty());
        CHECK(bool(flags & kCompressed) == compressed);
        bool got_parent = !has_parent;
        BlockKey got_key{};
        std::string got_tag = "stale";
        DiskCompression got_c = DiskCompression::kZstd;
        uint32_t stored = 5;
        REQUIRE(DecodeTrailer(buf.data(), n, &got_parent, &got_key, &got_tag, &got_c, &stored) ==
                n);
        CHECK(got_parent == has_parent);
        if (has_parent) CHECK(got_key == parent);
        CHECK(got_tag == tag);
        CHECK(got_c == c);
        CHECK(stored == (compressed ? 777u : 0u));
        // One byte short of any field: refused, never read past `avail`.
        if (n > 1)
          CHECK(DecodeTrailer(buf.data(), n - 1, &got_parent, &got_key, &got_tag, &got_c,
                              &stored) == 0);
        // A caller that cannot take compressed records refuses them (and only
        // them).
        CHECK((DecodeTrailer(buf.data(), n, &got_parent, &got_key, &got_tag) == 0) == compressed);
      }
    }
  }
}

TEST_CASE("disk record: malformed trailers are refused", "[store]") {
  bool has_parent;
  BlockKey parent;
  std::string tag;
  DiskCompression c;
  uint32_t stored;
  std::byte unknown_flag[1] = {std::byte{8}};
  CHECK(DecodeTrailer(unknown_flag, 1, &has_parent, &parent, &tag, &c, &stored) == 0);
  CHECK(DecodeTrailer(unknown_flag, 0, &has_parent, &parent, &tag, &c, &stored) == 0);
  std::byte empty_tag[3] = {std::byte{kHasTag}, std::byte{0}, std::byte{0}};
  CHECK(DecodeTrailer(empty_tag, 3, &has_parent, &parent, &tag, &c, &stored) == 0);
  std::byte unknown_codec[6] = {std::byte{kCompressed}, std::byte{99}, std::byte{1}};
  CHECK(DecodeTrailer(unknown_codec, 6, &has_parent, &parent, &tag, &c, &stored) == 0);
  std::byte zero_stored[6] = {std::byte{kCompressed}, std::byte{1}};
  CHECK(DecodeTrailer(zero_stored, 6, &has_parent, &parent, &tag, &c, &stored) == 0);
}

}  // namespace
}  // namespace strata::store::disk
