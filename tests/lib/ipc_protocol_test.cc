// The engine <-> daemon protocol: round trips of every message, and rejection of malformed input.
#include "ipc/ipc_protocol.h"

#include <random>

#include <catch2/catch.hpp>

namespace strata::ipc {
namespace {

std::span<const std::byte> Bytes(const std::string& s) {
  return std::as_bytes(std::span<const char>(s));
}

std::vector<BlockKey> SomeKeys(size_t n) {
  std::vector<BlockKey> keys;
  for (size_t i = 0; i < n; ++i) keys.push_back({i * 7 + 1, i * 13 + 2});
  return keys;
}

TEST_CASE("Every request type round-trips", "[lib]") {
  const NamespaceId ns{0xAB, 0xCD};
  std::vector<Request> requests = {
      {1, Hello{kIpcProtocolVersion, "engine-1", 1 << 28}},
      {2, LookupRequest{.keys = SomeKeys(5), .ns = std::nullopt}},
      {3, StoreBeginRequest{.ns = ns, .keys = SomeKeys(3), .sizes = {}}},
      {4, StoreCommitRequest{ns, Codec::kShuffleLz4, SomeKeys(2), {BlockKey{}, BlockKey{5, 6}},
                             {0, 8192}, {4000, 8192}}},
      {5, StoreCommitRequest{ns, Codec::kNone, {}, {}, {}, {}}},
      {6, LoadRequest{ns, SomeKeys(4), 1500}},
      {7, UnpinRequest{SomeKeys(1)}},
      {8, PrefetchRequest{SomeKeys(9)}},
      {9, StatsRequest{}},
      {10, ClearRequest{ns}},
      {11, ClearRequest{std::nullopt}},
      {12, OpenNamespaceRequest{{std::byte{1}, std::byte{2}, std::byte{3}}}},
      {13, MapSlabRequest{41}},
  };
  for (const auto& r : requests) {
    auto decoded = DecodeRequest(Bytes(EncodeRequest(r)));
    REQUIRE(decoded.ok());
    CHECK(decoded->id == r.id);
    CHECK(decoded->body.index() == r.body.index());
    // Re-encoding the decoded request gives the same bytes.
    CHECK(EncodeRequest(*decoded) == EncodeRequest(r));
  }
  auto d = DecodeRequest(Bytes(EncodeRequest(requests[3])));
  const auto& sc = std::get<StoreCommitRequest>(d->body);
  CHECK(sc.ns == ns);
  CHECK(sc.codec == Codec::kShuffleLz4);
  CHECK(sc.keys == SomeKeys(2));
  CHECK(sc.parents == std::vector<BlockKey>{BlockKey{}, BlockKey{5, 6}});
  CHECK(sc.staging_offsets == std::vector<uint64_t>{0, 8192});
  CHECK(sc.lengths == std::vector<uint64_t>{4000, 8192});
  auto h = DecodeRequest(Bytes(EncodeRequest(requests[0])));
  CHECK(std::get<Hello>(h->body).staging_bytes == (1u << 28));
}

TEST_CASE("Every response type round-trips and errors carry code and message", "[lib]") {
  std::vector<Response> responses;
  responses.push_back({1, Status::OK(), HelloReply{1, 1 << 30, "0.1.0", 16 << 20}});
  responses.push_back({2, Status::OK(), LookupReply{2, {Tier::kHost, Tier::kDisk}}});
  responses.push_back({3, Status::OK(), StoreBeginReply{{0, 1, 1}}});
  responses.push_back({4, Status::OK(), StoreCommitReply{7, 2}});
  responses.push_back({5, Status::OK(), LoadReply{{{64, 128, 0xFFFFFFFFFFFFFFFFull, Codec::kNone}}}});
  responses.push_back({6, Status::OK(), UnpinReply{}});
  responses.push_back({7, Status::OK(), PrefetchReply{3}});
  responses.push_back({8, Status::OK(), StatsReply{"{\"a\":1}"}});
  responses.push_back({9, Status::OK(), ClearReply{12}});
  responses.push_back({10, Status::OK(), OpenNamespaceReply{NamespaceId{3, 4}}});
  responses.push_back({11, Status::OK(), MapSlabReply{7}});
  responses.push_back(
      {12, Status::OK(), LoadReply{{{16 << 20, 128, 1, Codec::kShuffleZstd, 9}}}});
  for (const auto& r : responses) {
    auto decoded = DecodeResponse(Bytes(EncodeResponse(r)));
    REQUIRE(decoded.ok());
    CHECK(decoded->id == r.id);
    CHECK(decoded->status.ok());
    CHECK(EncodeResponse(*decoded) == EncodeResponse(r));
  }
  Response err{5, Status::NoSpace("pool full"), {}};
  auto decoded = DecodeResponse(Bytes(EncodeResponse(err)));
  REQUIRE(decoded.ok());
  CHECK(decoded->status.IsNoSpace());
  CHECK(decoded->status.message() == "pool full");
  auto hello = DecodeResponse(Bytes(EncodeResponse(responses[0])));
  CHECK(std::get<HelloReply>(hello->body).slab_bytes == (16u << 20));
  // verify_loads travels as its negation, so that a reply without the field (a daemon before the
  // setting) has its clients verify.
  CHECK(std::get<HelloReply>(hello->body).verify_loads);
  HelloReply unverified{1, 1 << 30, "0.1.0", 16 << 20};
  unverified.verify_loads = false;
  auto off = DecodeResponse(Bytes(EncodeResponse({13, Status::OK(), unverified})));
  REQUIRE(off.ok());
  CHECK_FALSE(std::get<HelloReply>(off->body).verify_loads);
  auto load = DecodeResponse(Bytes(EncodeResponse(responses.back())));
  CHECK(std::get<LoadReply>(load->body).locations[0].generation == 9);
  auto open = DecodeRequest(Bytes(EncodeRequest({1, OpenNamespaceRequest{{std::byte{7}}}})));
  CHECK(std::get<OpenNamespaceRequest>(open->body).encoding == std::vector{std::byte{7}});
}

TEST_CASE("Malformed requests are rejected with a clear status", "[lib]") {
  auto expect_bad = [](const std::string& body, const std::string& needle) {
    auto d = DecodeRequest(Bytes(body));
    REQUIRE_FALSE(d.ok());
    CHECK(d.status().IsInvalidArgument());
    INFO(d.status().ToString());
    CHECK(std::string(d.status().message()).find(needle) != std::string::npos);
  };
  expect_bad("\xff\xff\xff", "not a Request");
  expect_bad("", "no body");
  // Keys that are not a multiple of 16 bytes.
  std::string enc = EncodeRequest({1, LookupRequest{.keys = SomeKeys(2), .ns = std::nullopt}});
  std::string truncated_keys = enc;
  {
    // Build by hand: a LookupRequest whose keys field is 17 bytes.
    Request r{1, LookupRequest{}};
    std::string body = EncodeRequest(r);
    // field 11 (lookup), length-delimited, containing field 1 (keys) of 17 bytes
    std::string inner = std::string("\x0a\x11", 2) + std::string(17, 'k');
    body += std::string("\x5a", 1) + static_cast<char>(inner.size()) + inner;
    expect_bad(body, "multiple of 16");
  }
  // store_commit with mismatched lists.
  {
    StoreCommitRequest sc{NamespaceId{1, 2}, Codec::kNone, SomeKeys(3), SomeKeys(3), {1, 2},
                          {1, 2, 3}};
    expect_bad(EncodeRequest({1, sc}), "offsets");
  }
  // Unknown codec.
  {
    StoreCommitRequest sc{NamespaceId{1, 2}, static_cast<Codec>(999), SomeKeys(1), SomeKeys(1),
                          {1}, {1}};
    expect_bad(EncodeRequest({1, sc}), "codec");
  }
  // Every truncation of a valid message is rejected or decodes to a well-formed request.
  std::string good = EncodeRequest({42, StoreCommitRequest{NamespaceId{1, 2}, Codec::kNone,
                                                           SomeKeys(4), SomeKeys(4), {1, 2, 3, 4},
                                                           {5, 6, 7, 8}}});
  for (size_t n = 0; n < good.size(); ++n) {
    auto d = DecodeRequest(Bytes(good.substr(0, n)));
    if (d.ok()) CHECK(d->body.index() < std::variant_size_v<RequestBody>);
  }
  // Random garbage never crashes the decoder.
  std::mt19937 rng(3);
  for (int i = 0; i < 2000; ++i) {
    std::string junk(rng() % 64, '\0');
    for (auto& c : junk) c = static_cast<char>(rng());
    (void)DecodeRequest(Bytes(junk));
  }
}

}  // namespace
}  // namespace strata::ipc
