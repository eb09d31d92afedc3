// Wire format: round trips, and rejection of malformed, truncated, oversized and wrong-version
// input with a clear Status; the handshake MACs.
#include <catch2/catch.hpp>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>

#include "strata/block_format.h"
#include "transport/wire/auth.h"
#include "transport/wire/messages.h"

namespace strata::wire {
namespace {

BlockKey Key(uint64_t i) { return BlockKey{0x1234 + i, 0xabcdef00 + i * 7}; }

std::vector<std::byte> Bytes(size_t n, uint8_t fill) {
  return std::vector<std::byte>(n, static_cast<std::byte>(fill));
}

void StoreU16(std::byte* p, uint16_t v) {
  p[0] = static_cast<std::byte>(v & 0xff);
  p[1] = static_cast<std::byte>(v >> 8);
}

TEST_CASE("every message type round-trips through a frame", "[transport][wire]") {
  std::vector<Message> messages;
  messages.push_back(Hello{kProtocolVersion, "node-a", Bytes(kNonceSize, 1), Bytes(40, 2), 3});
  messages.push_back(HelloAck{"node-b", Bytes(kNonceSize, 3), Bytes(kMacSize, 4), 3});
  messages.push_back(Auth{Bytes(kMacSize, 5), 3, "node-a"});
  messages.push_back(AuthOk{.request_id = 3, .session = Bytes(kSessionSize, 6), .same_host = {}});
  messages.push_back(ErrorMessage{7, StatusCode::kPermissionDenied, "no"});
  messages.push_back(LookupRequest{9, {Key(1), Key(2), Key(3)}, Bytes(kSessionSize, 7)});
  messages.push_back(LookupResponse{9, {{"a", "b"}, {}, {"c"}}});
  messages.push_back(Announce{11, "node-c", {Key(4)}, {Key(5), Key(6)}, true, {}});
  messages.push_back(AnnounceAck{11});
  messages.push_back(AuthOk{3, Bytes(kSessionSize, 6), SameHost{"boot", 4026531840, 4026531836, 1000, 4242}});
  wire::MappedBlock mb;
  mb.index = 1;
  mb.slab = 7;
  mb.generation = 2;
  mb.fd = 33;
  mb.offset = 4096;
  mb.length = 65536;
  mb.header.fill(std::byte{9});
  messages.push_back(MappedBlocks{15, {mb}});
  messages.push_back(PullRelease{15, Bytes(16, 8)});
  messages.push_back(PullRequest{13, Key(99), {Key(7), Key(8)}, {4096, 8192}, Bytes(16, 8)});

  for (const Message& m : messages) {
    auto frame = EncodeFrame(m);
    REQUIRE(frame.ok());
    auto back = DecodeFrame(*frame);
    INFO(MessageTypeName(TypeOf(m)));
    REQUIRE(back.ok());
    REQUIRE(back->index() == m.index());
    // Re-encoding the decoded message gives the same bytes.
    auto again = EncodeFrame(*back);
    REQUIRE(again.ok());
    CHECK(*again == *frame);
  }
  auto pull = std::get<PullRequest>(*DecodeFrame(*EncodeFrame(messages.back())));
  CHECK(pull.namespace_id == Key(99));
  CHECK(pull.keys == std::vector<BlockKey>{Key(7), Key(8)});
  CHECK(pull.capacities == std::vector<uint64_t>{4096, 8192});
  CHECK_FALSE(pull.mapped);
  PullRequest mapped_pull{13, Key(99), {Key(7)}, {4096}, Bytes(16, 8), 0, true};
  CHECK(std::get<PullRequest>(*DecodeFrame(*EncodeFrame(mapped_pull))).mapped);
  auto ok = std::get<AuthOk>(*DecodeFrame(*EncodeFrame(messages[9])));
  REQUIRE(ok.same_host.has_value());
  CHECK(*ok.same_host == SameHost{"boot", 4026531840, 4026531836, 1000, 4242});
  CHECK_FALSE(std::get<AuthOk>(*DecodeFrame(*EncodeFrame(messages[3]))).same_host.has_value());
  auto blocks = std::get<MappedBlocks>(*DecodeFrame(*EncodeFrame(messages[10])));
  REQUIRE(blocks.blocks.size() == 1);
  CHECK(blocks.blocks[0].fd == 33);
  CHECK(blocks.blocks[0].offset == 4096);
  CHECK(blocks.blocks[0].length == 65536);
  CHECK(blocks.blocks[0].header == mb.header);
}

TEST_CASE("truncated frames are Corruption at every length", "[transport][wire]") {
  auto frame = *EncodeFrame(LookupRequest{1, {Key(1), Key(2)}, {}});
  for (size_t n = 0; n < frame.size(); ++n) {
    auto r = DecodeFrame(std::span<const std::byte>(frame.data(), n));
    INFO("length " << n);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().IsCorruption());
  }
}

TEST_CASE("a wrong protocol version is NotSupported and names the version", "[transport][wire]") {
  auto frame = *EncodeFrame(AuthOk{.request_id = 1, .session = Bytes(kSessionSize, 1), .same_host = {}});
  StoreU16(frame.data() + 4, 77);
  auto r = DecodeFrame(frame);
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == StatusCode::kNotSupported);
  CHECK(r.status().message().find("77") != std::string_view::npos);
  CHECK(*PeekFrameVersion(frame) == 77);
}

TEST_CASE("bad magic unknown type bad checksum and garbage bodies are rejected",
          "[transport][wire]") {
  auto good = *EncodeFrame(LookupRequest{1, {Key(1)}, {}});
  SECTION("magic") {
    auto f = good;
    f[0] = std::byte{'X'};
    CHECK(DecodeFrame(f).status().IsCorruption());
  }
  SECTION("unknown type") {
    auto f = good;
    StoreU16(f.data() + 6, 999);
    CHECK(DecodeFrame(f).status().code() == StatusCode::kNotSupported);
  }
  SECTION("flipped body byte fails the checksum") {
    auto f = good;
    f.back() ^= std::byte{0x40};
    auto r = DecodeFrame(f);
    CHECK(r.status().IsCorruption());
    CHECK(r.status().message().find("checksum") != std::string_view::npos);
  }
  SECTION("random bodies never crash the decoder") {
    std::mt19937 rng(7);
    for (int i = 0; i < 2000; ++i) {
      std::vector<std::byte> f(kFrameHeaderSize + rng() % 64);
      for (auto& b : f) b = static_cast<std::byte>(rng());
      // Valid header around a random body, so the Protobuf parser sees the garbage.
      auto hdr = *EncodeFrame(AnnounceAck{});
      std::memcpy(f.data(), hdr.data(), 8);
      StoreU16(f.data() + 6, static_cast<uint16_t>(1 + rng() % 10));
      const uint32_t len = static_cast<uint32_t>(f.size() - kFrameHeaderSize);
      for (int k = 0; k < 4; ++k) f[8 + k] = static_cast<std::byte>((len >> (8 * k)) & 0xff);
      const auto sum = static_cast<uint32_t>(
          PayloadChecksum(std::span<const std::byte>(f.data() + kFrameHeaderSize, len)));
      for (int k = 0; k < 4; ++k) f[12 + k] = static_cast<std::byte>((sum >> (8 * k)) & 0xff);
      auto r = DecodeFrame(f);  // ok or an error; never a crash
      if (!r.ok()) CHECK_FALSE(r.status().message().empty());
    }
  }
}

TEST_CASE("limits: oversized bodies too many keys short keys and nonces", "[transport][wire]") {
  SECTION("a frame header announcing a huge body") {
    auto f = *EncodeFrame(AnnounceAck{});
    const uint32_t huge = 0xfffffff0u;
    for (int k = 0; k < 4; ++k) f[8 + k] = static_cast<std::byte>((huge >> (8 * k)) & 0xff);
    CHECK(DecodeFrame(f).status().IsInvalidArgument());
  }
  SECTION("too many keys to encode") {
    LookupRequest m;
    m.keys.resize(kMaxKeysPerMessage + 1);
    CHECK(EncodeFrame(m).status().IsInvalidArgument());
  }
  SECTION("a nonce of the wrong size is refused on both ends") {
    CHECK(
        EncodeFrame(Hello{kProtocolVersion, "a", Bytes(5, 1), {}, 0}).status().IsInvalidArgument());
    CHECK(EncodeFrame(AuthOk{.request_id = 1, .session = Bytes(3, 1), .same_host = {}}).status().IsInvalidArgument());
  }
  SECTION("pull capacities must match keys") {
    CHECK(EncodeFrame(PullRequest{1, Key(1), {Key(1)}, {}, {}}).status().IsInvalidArgument());
  }
}

TEST_CASE("data headers round-trip and reject bad input", "[transport][wire]") {
  DataHeader h{StatusCode::kOk, 42, 7, 2 * 1024 * 1024};
  std::array<std::byte, kDataHeaderSize> buf;
  EncodeDataHeader(h, buf);
  auto back = DecodeDataHeader(buf);
  REQUIRE(back.ok());
  CHECK(*back == h);
  CHECK(DecodeDataHeader(std::span<const std::byte>(buf.data(), 31)).status().IsCorruption());
  auto bad = buf;
  bad[0] = std::byte{0};
  CHECK(DecodeDataHeader(bad).status().IsCorruption());
  bad = buf;
  StoreU16(bad.data() + 4, kProtocolVersion + 1);
  CHECK(DecodeDataHeader(bad).status().code() == StatusCode::kNotSupported);
  bad = buf;
  bad[6] = std::byte{200};
  CHECK(DecodeDataHeader(bad).status().IsCorruption());
}

TEST_CASE("multi-block data headers round-trip and reject bad input", "[transport][wire]") {
  std::vector<std::byte> buf(MultiDataHeaderSize(3));
  std::array<std::byte, 64> block_header{};
  for (uint32_t e = 0; e < 3; ++e) {
    block_header.fill(static_cast<std::byte>(0x10 + e));
    EncodeMultiEntry(7 + e, 1000 * (e + 1), block_header,
                     std::span<std::byte, kMultiEntrySize>(
                         buf.data() + kMultiHeaderSize + e * kMultiEntrySize, kMultiEntrySize));
  }
  EncodeMultiDataHeader(42, 6000, 3, buf);
  auto h = DecodeMultiDataHeader(buf);
  REQUIRE(h.ok());
  CHECK(h->request_id == 42);
  CHECK(h->length == 6000);
  REQUIRE(h->count == 3);
  for (uint32_t e = 0; e < 3; ++e) {
    CHECK(h->IndexAt(e) == 7 + e);
    CHECK(h->LengthAt(e) == 1000 * (e + 1));
    CHECK(h->BlockHeaderAt(e)[63] == static_cast<std::byte>(0x10 + e));
  }
  // A count that disagrees with the size, a truncation, a bad magic, another version.
  CHECK(DecodeMultiDataHeader(std::span<const std::byte>(buf.data(), buf.size() - 1))
            .status()
            .IsCorruption());
  CHECK(DecodeMultiDataHeader(std::span<const std::byte>(buf.data(), 10)).status().IsCorruption());
  auto bad = buf;
  StoreU16(bad.data() + 6, 0);
  CHECK(DecodeMultiDataHeader(bad).status().IsCorruption());
  bad = buf;
  bad[0] = std::byte{0};
  CHECK(DecodeMultiDataHeader(bad).status().IsCorruption());
  bad = buf;
  StoreU16(bad.data() + 4, kProtocolVersion + 1);
  CHECK(DecodeMultiDataHeader(bad).status().code() == StatusCode::kNotSupported);
  // A pull request carries the largest message its puller takes.
  PullRequest req{5, Key(1), {Key(2)}, {100}, std::vector<std::byte>(16), 1 << 20};
  auto frame = EncodeFrame(req);
  REQUIRE(frame.ok());
  auto m = DecodeFrame(*frame);
  REQUIRE(m.ok());
  CHECK(std::get<PullRequest>(*m).max_message_bytes == uint64_t{1} << 20);
}

TEST_CASE("handshake MACs bind the secret both nonces both ids and the role", "[transport][wire]") {
  const std::string secret = "0123456789abcdef-secret";
  auto cn = RandomNonce();
  auto sn = RandomNonce();
  CHECK(cn != sn);
  auto mac = HandshakeMac(secret, MacRole::kServer, cn, sn, "a", "b");
  REQUIRE(mac.size() == kMacSize);
  CHECK(VerifyHandshakeMac(secret, MacRole::kServer, cn, sn, "a", "b", mac));
  CHECK_FALSE(
      VerifyHandshakeMac("0123456789abcdef-other", MacRole::kServer, cn, sn, "a", "b", mac));
  CHECK_FALSE(VerifyHandshakeMac(secret, MacRole::kClient, cn, sn, "a", "b", mac));
  CHECK_FALSE(VerifyHandshakeMac(secret, MacRole::kServer, sn, cn, "a", "b", mac));
  CHECK_FALSE(VerifyHandshakeMac(secret, MacRole::kServer, cn, sn, "b", "a", mac));
  CHECK_FALSE(VerifyHandshakeMac(secret, MacRole::kServer, cn, sn, "a", "b",
                                 std::span<const std::byte>(mac.data(), 31)));
  // Known answer: HMAC-SHA256 with an empty transcript part is still deterministic.
  CHECK(HandshakeMac(secret, MacRole::kClient, cn, sn, "a", "b") ==
        HandshakeMac(secret, MacRole::kClient, cn, sn, "a", "b"));
}

TEST_CASE("the cluster secret comes from config environment or file", "[transport][wire]") {
  ClusterSecretSource src;
  src.env_var = "STRATA_TEST_SECRET_UNSET_VAR";
  CHECK(LoadClusterSecret(src).status().IsInvalidArgument());
  src.value = "short";
  CHECK(LoadClusterSecret(src).status().IsInvalidArgument());
  src.value = "a-long-enough-secret";
  CHECK(*LoadClusterSecret(src) == "a-long-enough-secret");
  src.value.clear();
  ::setenv("STRATA_TEST_SECRET_SET_VAR", "from-the-environment", 1);
  src.env_var = "STRATA_TEST_SECRET_SET_VAR";
  CHECK(*LoadClusterSecret(src) == "from-the-environment");
  ::unsetenv("STRATA_TEST_SECRET_SET_VAR");
  const std::string path = std::string(STRATA_BINARY_DIR) + "/transport_test_secret.txt";
  std::ofstream(path) << "secret-from-a-file-123\n";
  src.file = path;
  CHECK(*LoadClusterSecret(src) == "secret-from-a-file-123");
  src.file = path + ".missing";
  CHECK(LoadClusterSecret(src).status().IsInvalidArgument());
}

}  // namespace
}  // namespace strata::wire
