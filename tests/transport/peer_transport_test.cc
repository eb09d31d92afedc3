// PeerTransport between real UCX workers in one process (loopback transports UCX finds here):
// handshake and admission, bit-exact pulls into a registered memfd pool, unknown keys, malformed
// and wrong-version messages, and tenant isolation by namespace. Tests with separate processes
// (SIGKILL, stalls) are in peer_process_test.cc.
#include "transport/peer_transport.h"

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "strata/key_chain.h"
#include "strata/namespace.h"
#include "transport/testing/memfd_block_pool.h"
#include "transport/wire/messages.h"

namespace strata::transport {
namespace {

using testing::MemfdBlockPool;
constexpr char kSecret[] = "test-cluster-secret-0123456789";

Namespace MakeNs(std::string salt) {
  NamespaceSpec spec;
  spec.model_id = "test/model";
  spec.num_layers = 2;
  spec.num_kv_heads = 2;
  spec.head_dim = 64;
  spec.tenant_salt = std::move(salt);
  return *Namespace::Create(spec);
}

std::vector<uint32_t> Tokens(size_t blocks, uint32_t seed) {
  std::vector<uint32_t> t(blocks * 16);
  std::mt19937 rng(seed);
  for (auto& x : t) x = rng() % 50000;
  return t;
}

std::vector<std::byte> Payload(size_t n, uint32_t seed) {
  std::vector<std::byte> p(n);
  std::mt19937 rng(seed);
  for (auto& b : p) b = static_cast<std::byte>(rng());
  return p;
}

struct Node {
  std::unique_ptr<MemfdBlockPool> pool;
  std::unique_ptr<PeerTransport> transport;
};

Node MakeNode(const std::string& id, const std::string& secret, size_t slots, size_t slot_bytes,
              bool verify_on_landing = true,
              uint64_t coalesce_bytes = kDefaultPullCoalesceBytes) {
  Node n;
  n.pool = *MemfdBlockPool::Open(slots, slot_bytes);
  PeerTransportOptions o;
  o.node_id = id;
  o.cluster_secret = secret;
  o.regions = {n.pool->region()};
  o.request_timeout = std::chrono::milliseconds(2000);
  o.block_source = n.pool.get();
  o.verify_on_landing = verify_on_landing;
  o.pull_coalesce_bytes = coalesce_bytes;
  auto t = PeerTransport::Open(std::move(o));
  REQUIRE(t.ok());
  n.transport = std::move(*t);
  return n;
}

bool WaitUntil(const std::function<bool()>& cond) {
  for (int i = 0; i < 400; ++i) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return cond();
}

constexpr size_t kPayload = 64 * 1024;
constexpr size_t kSlot = kPayload + kBlockHeaderSize;

TEST_CASE("a pull is bit-exact verified and unknown keys are NotFound", "[transport][ucx]") {
  Node a = MakeNode("a", kSecret, 16, kSlot);
  Node b = MakeNode("b", kSecret, 16, kSlot);
  const Namespace ns = MakeNs("");
  const auto keys = ComputeBlockKeys(ns, Tokens(8, 1));
  for (size_t i = 0; i < keys.size(); ++i) a.pool->Put(i, keys[i], ns.id(), Payload(kPayload, i));

  REQUIRE(b.transport->Connect("a", a.transport->worker_address()).ok());
  std::vector<PullTarget> targets;
  for (size_t i = 0; i < keys.size(); ++i)
    targets.push_back(PullTarget::Into(keys[i], b.pool->slot(i), kSlot));
  // One key a does not hold, in the middle.
  targets[5].key = BlockKey{1, 2};
  auto r = b.transport->Pull("a", ns.id(), targets);
  REQUIRE(r.ok());
  REQUIRE(r->blocks.size() == 8);
  CHECK(r->LeadingOk() == 5);
  CHECK(r->blocks[5].IsNotFound());
  for (size_t i : {0, 1, 2, 3, 4, 6, 7}) {
    INFO(i);
    CHECK(r->blocks[i].ok());
    CHECK(std::memcmp(b.pool->slot(i), a.pool->slot(i), kSlot) == 0);
  }
  // Every pin was released once the sends completed.
  for (int i = 0; i < 200 && a.pool->pinned() != 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  CHECK(a.pool->pinned() == 0);
}

TEST_CASE("a pulled block whose bytes do not match its checksum is Corruption - where it lands or on the waiting thread",
          "[transport][ucx]") {
  const bool on_landing = GENERATE(true, false);
  INFO("verify_on_landing " << on_landing);
  Node a = MakeNode("a", kSecret, 16, kSlot);
  Node b = MakeNode("b", kSecret, 16, kSlot, on_landing);
  const Namespace ns = MakeNs("");
  const auto keys = ComputeBlockKeys(ns, Tokens(6, 2));
  for (size_t i = 0; i < keys.size(); ++i) a.pool->Put(i, keys[i], ns.id(), Payload(kPayload, i));
  // The holder's copy of block 3 rots after its checksum was written (one payload byte).
  a.pool->slot(3)[kBlockHeaderSize + 1000] ^= std::byte{0x40};

  REQUIRE(b.transport->Connect("a", a.transport->worker_address()).ok());
  std::vector<PullTarget> targets;
  for (size_t i = 0; i < keys.size(); ++i)
    targets.push_back(PullTarget::Into(keys[i], b.pool->slot(i), kSlot));
  auto r = b.transport->Pull("a", ns.id(), targets);
  REQUIRE(r.ok());
  REQUIRE(r->blocks.size() == 6);
  CHECK(r->LeadingOk() == 3);
  CHECK(r->blocks[3].IsCorruption());
  for (size_t i : {0, 1, 2, 4, 5}) {
    INFO(i);
    CHECK(r->blocks[i].ok());
    CHECK(std::memcmp(b.pool->slot(i), a.pool->slot(i), kSlot) == 0);
  }
  // Only the verified blocks count.
  CHECK(r->bytes == 5 * kSlot);
  CHECK(r->verify_s > 0);
}

// A peer that cannot be reached (its process gone: its port refuses connections) is not dialled
// again by every caller at once: after a failed attempt the next waits 100 ms, doubling to 2 s
// (UCX logs each refused connect as an ERROR, and membership, the directory's announces and every
// Fetch would otherwise dial it every few ms). A new address (a restarted node) is dialled at once.
TEST_CASE("an unreachable peer is dialled again only after a backoff - a new address at once",
          "[transport][ucx]") {
  Node b = MakeNode("b", kSecret, 4, kSlot);
  std::vector<std::byte> gone;
  {
    Node a = MakeNode("a", kSecret, 4, kSlot);
    gone = a.transport->worker_address();
  }
  const Status first = b.transport->Connect("a", gone);
  INFO(first.ToString());
  REQUIRE_FALSE(first.ok());
  CHECK(b.transport->Profile().connect_backoffs == 1);
  const Status again = b.transport->Connect("a", gone);
  INFO(again.ToString());
  CHECK(again.code() == first.code());  // the last attempt's code, answered from the backoff
  CHECK(again.message().find("next attempt in") != std::string_view::npos);
  CHECK(b.transport->Profile().connect_backoffs == 1);  // answered without an attempt
  // Past the first delay the peer is dialled again (and fails again: a second backoff).
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  const Status later = b.transport->Connect("a", gone);
  INFO(later.ToString());
  CHECK_FALSE(later.ok());
  CHECK(later.message().find("next attempt in") == std::string_view::npos);
  CHECK(b.transport->Profile().connect_backoffs == 2);
  // The peer restarted: a new worker address is dialled at once, and the session works.
  Node a2 = MakeNode("a", kSecret, 4, kSlot);
  REQUIRE(b.transport->Connect("a", a2.transport->worker_address()).ok());
  const Namespace ns = MakeNs("");
  const auto keys = ComputeBlockKeys(ns, Tokens(1, 5));
  a2.pool->Put(0, keys[0], ns.id(), Payload(kPayload, 5));
  auto r = b.transport->Pull("a", ns.id(), {PullTarget::Into(keys[0], b.pool->slot(0), kSlot)});
  REQUIRE(r.ok());
  CHECK(r->LeadingOk() == 1);
}

TEST_CASE("a peer with the wrong cluster secret is refused before it can pull",
          "[transport][ucx][auth]") {
  Node a = MakeNode("a", kSecret, 4, kSlot);
  Node bad = MakeNode("mallory", "another-secret-0123456789", 4, kSlot);
  const Namespace ns = MakeNs("");
  const auto keys = ComputeBlockKeys(ns, Tokens(1, 2));
  a.pool->Put(0, keys[0], ns.id(), Payload(kPayload, 9));

  Status st = bad.transport->Connect("a", a.transport->worker_address());
  CHECK(st.code() == StatusCode::kPermissionDenied);
  // No session: nothing can be pulled.
  CHECK_FALSE(bad.transport
                  ->PreparePull("a", ns.id(), {PullTarget::Into(keys[0], bad.pool->slot(0), kSlot)})
                  .ok());

  // Skipping the handshake: a raw PullRequest is refused with PermissionDenied.
  wire::PullRequest req{77, ns.id(), {keys[0]}, {kSlot}, {}};
  Status raw = bad.transport->SendRawUnauthenticatedForTest(
      a.transport->worker_address(), *wire::EncodeFrame(req), std::chrono::milliseconds(2000));
  CHECK(raw.code() == StatusCode::kPermissionDenied);
  CHECK(raw.message().find("handshake") != std::string_view::npos);
  CHECK(a.pool->pinned() == 0);

  // A peer that claims to be "a" but does not know our secret fails our check of its MAC.
  Node impostor = MakeNode("a", "impostor-secret-0123456789", 4, kSlot);
  Node b = MakeNode("b", kSecret, 4, kSlot);
  CHECK(b.transport->Connect("a", impostor.transport->worker_address()).code() ==
        StatusCode::kPermissionDenied);

  // The node keeps serving good peers.
  REQUIRE(b.transport->Connect("a", a.transport->worker_address()).ok());
  auto r = b.transport->Pull("a", ns.id(), {PullTarget::Into(keys[0], b.pool->slot(0), kSlot)});
  REQUIRE(r.ok());
  CHECK(r->LeadingOk() == 1);
}

TEST_CASE("malformed truncated and wrong-version messages get clear errors - the node serves on",
          "[transport][ucx][wire]") {
  Node a = MakeNode("a", kSecret, 4, kSlot);
  Node b = MakeNode("b", kSecret, 4, kSlot);
  const Namespace ns = MakeNs("");
  const auto keys = ComputeBlockKeys(ns, Tokens(1, 3));
  a.pool->Put(0, keys[0], ns.id(), Payload(kPayload, 3));
  REQUIRE(b.transport->Connect("a", a.transport->worker_address()).ok());
  const auto wait = std::chrono::milliseconds(2000);

  auto good = *wire::EncodeFrame(wire::PullRequest{5, ns.id(), {keys[0]}, {kSlot}, {}});
  SECTION("garbage") {
    std::vector<std::byte> junk(100, std::byte{0x5a});
    CHECK(b.transport->SendRawForTest("a", junk, wait).IsCorruption());
  }
  SECTION("truncated") {
    auto t = good;
    t.resize(t.size() - 3);
    CHECK(b.transport->SendRawForTest("a", t, wait).IsCorruption());
  }
  SECTION("empty") { CHECK(b.transport->SendRawForTest("a", {}, wait).IsCorruption()); }
  SECTION("wrong protocol version") {
    auto t = good;
    t[4] = std::byte{9};
    Status st = b.transport->SendRawForTest("a", t, wait);
    CHECK(st.code() == StatusCode::kNotSupported);
    CHECK(st.message().find("version 9") != std::string_view::npos);
  }
  SECTION("a response where a request belongs") {
    CHECK(b.transport->SendRawForTest("a", *wire::EncodeFrame(wire::AnnounceAck{1}), wait)
              .IsInvalidArgument());
  }
  SECTION("no directory on this node") {
    auto r = b.transport->Lookup("a", {keys[0]});
    CHECK(r.status().code() == StatusCode::kNotSupported);
  }
  SECTION("a 60000-key lookup (a control message large enough for rendezvous)") {
    std::vector<BlockKey> many(60000, keys[0]);
    auto r = b.transport->Lookup("a", many);
    CHECK(r.status().code() == StatusCode::kNotSupported);  // decoded, answered
  }
  SECTION("a control message over the transport's limit is refused unread") {
    std::vector<std::byte> huge(9 << 20, std::byte{1});
    CHECK(b.transport->SendRawForTest("a", huge, std::chrono::milliseconds(500)).ok());
  }
  auto r = b.transport->Pull("a", ns.id(), {PullTarget::Into(keys[0], b.pool->slot(0), kSlot)});
  REQUIRE(r.ok());
  CHECK(r->LeadingOk() == 1);
  CHECK(std::memcmp(b.pool->slot(0), a.pool->slot(0), kSlot) == 0);
}

TEST_CASE("a salted namespace is never served to a request without the salt",
          "[transport][ucx][tenant]") {
  Node a = MakeNode("a", kSecret, 8, kSlot);
  Node b = MakeNode("b", kSecret, 8, kSlot);
  const Namespace salted = MakeNs("tenant-42-salt");
  const Namespace plain = MakeNs("");
  REQUIRE(salted.id() != plain.id());
  const auto tokens = Tokens(2, 4);
  const auto salted_keys = ComputeBlockKeys(salted, tokens);
  const auto plain_keys = ComputeBlockKeys(plain, tokens);
  for (size_t i = 0; i < 2; ++i) {
    a.pool->Put(i, salted_keys[i], salted.id(), Payload(kPayload, 40 + i));
    CHECK(salted_keys[i] != plain_keys[i]);  // by construction: the salt is inside every key
  }
  REQUIRE(b.transport->Connect("a", a.transport->worker_address()).ok());
  // Same tokens without the salt: different keys, nothing found.
  auto r1 = b.transport->Pull("a", plain.id(),
                              {PullTarget::Into(plain_keys[0], b.pool->slot(0), kSlot),
                               PullTarget::Into(plain_keys[1], b.pool->slot(1), kSlot)});
  REQUIRE(r1.ok());
  CHECK(r1->blocks[0].IsNotFound());
  CHECK(r1->blocks[1].IsNotFound());
  // Even knowing the salted keys, a request naming another namespace is refused.
  auto r2 = b.transport->Pull("a", plain.id(),
                              {PullTarget::Into(salted_keys[0], b.pool->slot(2), kSlot)});
  REQUIRE(r2.ok());
  CHECK(r2->blocks[0].IsNotFound());
  // With the salt, the blocks are served.
  auto r3 = b.transport->Pull("a", salted.id(),
                              {PullTarget::Into(salted_keys[0], b.pool->slot(3), kSlot),
                               PullTarget::Into(salted_keys[1], b.pool->slot(4), kSlot)});
  REQUIRE(r3.ok());
  CHECK(r3->LeadingOk() == 2);
}

TEST_CASE("prepare checks destinations - post issues", "[transport][ucx]") {
  Node a = MakeNode("a", kSecret, 4, kSlot);
  Node b = MakeNode("b", kSecret, 4, kSlot);
  const Namespace ns = MakeNs("");
  const auto keys = ComputeBlockKeys(ns, Tokens(2, 5));
  a.pool->Put(0, keys[0], ns.id(), Payload(kPayload, 5));
  a.pool->Put(1, keys[1], ns.id(), Payload(kPayload, 6));
  CHECK(b.transport->PreparePull("a", ns.id(), {PullTarget::Into(keys[0], b.pool->slot(0), kSlot)})
            .status()
            .code() == StatusCode::kUnavailable);  // no session yet
  REQUIRE(b.transport->Connect("a", a.transport->worker_address()).ok());
  std::vector<std::byte> outside(kSlot);
  CHECK(b.transport->PreparePull("a", ns.id(), {PullTarget::Into(keys[0], outside.data(), kSlot)})
            .status()
            .IsInvalidArgument());
  auto op = b.transport->PreparePull("a", ns.id(),
                                     {PullTarget::Into(keys[0], b.pool->slot(0), kSlot),
                                      PullTarget::Into(keys[1], b.pool->slot(1), kSlot)});
  REQUIRE(op.ok());
  REQUIRE((*op)->Post().ok());
  PullResult r = (*op)->Wait();
  CHECK(r.LeadingOk() == 2);
  CHECK(r.bytes == 2 * kSlot);
}

// Each block of a multi-block message lands in its own place and is verified alone: mixed
// sizes, a corrupt block in the middle of a message, a block refused on arrival.
TEST_CASE("small blocks come several per message - each verified alone", "[transport][ucx]") {
  const uint64_t coalesce = GENERATE(uint64_t{0}, uint64_t{1} << 20, uint64_t{256} << 10);
  const bool on_landing = GENERATE(true, false);
  const bool split = GENERATE(false, true);
  INFO("pull_coalesce_bytes " << coalesce << ", verify_on_landing " << on_landing << ", split "
                              << split);
  // Payloads from 1 byte to 700 KiB: blocks of at most half the message go together, larger
  // ones alone, and a message is never longer than the puller asked for.
  const std::vector<size_t> sizes = {1,     4096,  65536, 65536, 100000, 700 << 10,
                                     65536, 3000,  65536, 200000, 65536, 65536,
                                     65536, 65536, 65536, 65536, 65536, 12345};
  constexpr size_t kBig = (700 << 10) + kBlockHeaderSize;
  Node a = MakeNode("a", kSecret, sizes.size(), kBig);
  Node b = MakeNode("b", kSecret, sizes.size(), kBig, on_landing, coalesce);
  const Namespace ns = MakeNs("");
  const auto keys = ComputeBlockKeys(ns, Tokens(sizes.size(), 9));
  for (size_t i = 0; i < keys.size(); ++i) a.pool->Put(i, keys[i], ns.id(), Payload(sizes[i], i));
  // Block 8 rots at the holder (in the middle of a message); block 11 finds no room on arrival.
  a.pool->slot(8)[kBlockHeaderSize + 777] ^= std::byte{0x01};
  constexpr size_t kNoRoom = 11;

  REQUIRE(b.transport->Connect("a", a.transport->worker_address()).ok());
  std::vector<std::array<std::byte, kBlockHeaderSize>> headers(sizes.size());
  std::vector<PullTarget> targets;
  for (size_t i = 0; i < keys.size(); ++i) {
    if (!split) {
      targets.push_back(PullTarget::Into(keys[i], b.pool->slot(i), kBig));
      continue;
    }
    // The node's form: the header apart, the payload's place chosen when its header arrives.
    PullTarget t;
    t.key = keys[i];
    t.header_dest = headers[i].data();
    t.capacity = kBig - kBlockHeaderSize;
    std::byte* slot = b.pool->slot(i) + kBlockHeaderSize;
    t.allocate = [slot, i](const BlockHeader&) { return i == kNoRoom ? nullptr : slot; };
    targets.push_back(std::move(t));
  }
  const TransferProfile before = a.transport->Profile();
  auto r = b.transport->Pull("a", ns.id(), targets);
  REQUIRE(r.ok());
  REQUIRE(r->blocks.size() == sizes.size());
  for (size_t i = 0; i < sizes.size(); ++i) {
    INFO("block " << i << " of " << sizes[i] << " bytes: " << r->blocks[i].ToString());
    const bool coalesced = coalesce > 0 && 2 * sizes[i] <= coalesce && sizes[i] < kCoalesceBlockBelow;
    if (i == 8) {
      CHECK(r->blocks[i].IsCorruption());
    } else if (split && !coalesced) {
      // Sent alone, in the contiguous form of this test pool, which a split target refuses
      // (docs/wire-protocol.md, "Split blocks"); in a multi-block message every block is split.
      CHECK(r->blocks[i].IsCorruption());
    } else if (split && i == kNoRoom) {
      CHECK(r->blocks[i].code() == StatusCode::kResourceExhausted);
    } else {
      REQUIRE(r->blocks[i].ok());
      CHECK(std::memcmp(b.pool->slot(i) + kBlockHeaderSize, a.pool->slot(i) + kBlockHeaderSize,
                        sizes[i]) == 0);
      if (split) CHECK(std::memcmp(headers[i].data(), a.pool->slot(i), kBlockHeaderSize) == 0);
      if (!split) CHECK(std::memcmp(b.pool->slot(i), a.pool->slot(i), kBlockHeaderSize) == 0);
    }
  }
  const TransferProfile after = a.transport->Profile();
  const uint64_t blocks = after.served_blocks - before.served_blocks;
  const uint64_t messages = after.served_messages - before.served_messages;
  CHECK(blocks == sizes.size());
  if (coalesce == 0) {
    CHECK(messages == blocks);
  } else {
    // 1 MiB: the 700 KiB block alone, the other 17 (1 040 338 bytes) in one message (more if
    // the AM header holds fewer entries); 256 KiB: the 700 KiB and 200 KB blocks alone, the
    // other 16 (840 338 bytes) in messages of at most 256 KiB: at least four.
    INFO(messages << " messages");
    CHECK(messages < blocks / 2);
    CHECK(messages >= (coalesce == (uint64_t{1} << 20) ? 2u : 6u));
  }
  for (int i = 0; i < 200 && a.pool->pinned() != 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  CHECK(a.pool->pinned() == 0);
}

// A BlockSource in the node's split form whose payloads lie back to back in a memfd region
// (as a node's host tier places blocks stored one after another in adjacent chunks of a slab),
// their headers apart.
class PackedSource : public BlockSource {
 public:
  PackedSource(MemfdBlockPool* area, size_t payload) : area_(area), payload_(payload) {}
  void Put(size_t i, const BlockKey& key, const NamespaceId& ns,
           std::span<const std::byte> payload) {
    const BlockHeader h = MakeBlockHeader(key, ns, Codec::kNone, payload);
    headers_[key].first = i;
    EncodeBlockHeader(h, std::span<std::byte, kBlockHeaderSize>(headers_[key].second));
    std::memcpy(Payload(i), payload.data(), payload.size());
  }
  std::byte* Payload(size_t i) const { return area_->slot(0) + i * payload_; }
  Result<PinnedBlock> Pin(const BlockKey& key) override {
    auto it = headers_.find(key);
    if (it == headers_.end()) return Status::NotFound("not here");
    pins_.fetch_add(1);
    return PinnedBlock{Payload(it->second.first), payload_, 0, it->second.second.data()};
  }
  void Unpin(uint64_t) override { pins_.fetch_sub(1); }
  int pinned() const { return pins_.load(); }

 private:
  MemfdBlockPool* area_;
  size_t payload_;
  std::map<BlockKey, std::pair<size_t, std::array<std::byte, kBlockHeaderSize>>> headers_;
  std::atomic<int> pins_{0};
};

TEST_CASE("adjacent blocks travel as one contiguous message - each verified alone",
          "[transport][ucx]") {
  // 64 KiB payloads back to back on both sides: a message of 1 MiB carries 16 of them as one
  // contiguous buffer (UCX's zero-copy rendezvous); places that do not follow each other on the
  // puller take the iov form. Either way each block is verified alone.
  const bool adjacent_places = GENERATE(true, false);
  const bool on_landing = GENERATE(true, false);
  INFO("adjacent places " << adjacent_places << ", verify_on_landing " << on_landing);
  constexpr size_t kBlocks = 40;
  auto area = *MemfdBlockPool::Open(kBlocks, kPayload);
  PackedSource source(area.get(), kPayload);
  PeerTransportOptions o;
  o.node_id = "a";
  o.cluster_secret = kSecret;
  o.regions = {area->region()};
  o.block_source = &source;
  auto a = PeerTransport::Open(std::move(o));
  REQUIRE(a.ok());
  Node b = MakeNode("b", kSecret, kBlocks, kPayload, on_landing, uint64_t{1} << 20);
  const Namespace ns = MakeNs("");
  const auto keys = ComputeBlockKeys(ns, Tokens(kBlocks, 5));
  for (size_t i = 0; i < kBlocks; ++i) source.Put(i, keys[i], ns.id(), Payload(kPayload, i));
  // Block 21 rots at the holder, in the middle of the second message.
  source.Payload(21)[999] ^= std::byte{0x01};

  REQUIRE(b.transport->Connect("a", (*a)->worker_address()).ok());
  std::vector<std::array<std::byte, kBlockHeaderSize>> headers(kBlocks);
  std::vector<PullTarget> targets;
  auto place = [&](size_t i) {  // the puller's place for block i
    return b.pool->slot(0) + (adjacent_places ? i : kBlocks - 1 - i) * kPayload;
  };
  for (size_t i = 0; i < kBlocks; ++i) {
    PullTarget t;
    t.key = keys[i];
    t.header_dest = headers[i].data();
    t.capacity = kPayload;
    t.allocate = [where = place(i)](const BlockHeader&) { return where; };
    targets.push_back(std::move(t));
  }
  const TransferProfile held = (*a)->Profile();
  const TransferProfile pulled = b.transport->Profile();
  auto r = b.transport->Pull("a", ns.id(), targets);
  REQUIRE(r.ok());
  REQUIRE(r->blocks.size() == kBlocks);
  for (size_t i = 0; i < kBlocks; ++i) {
    INFO("block " << i << ": " << r->blocks[i].ToString());
    if (i == 21) {
      CHECK(r->blocks[i].IsCorruption());
      continue;
    }
    REQUIRE(r->blocks[i].ok());
    CHECK(std::memcmp(place(i), source.Payload(i), kPayload) == 0);
  }
  const TransferProfile held_after = (*a)->Profile();
  const TransferProfile pulled_after = b.transport->Profile();
  const uint64_t messages = held_after.served_messages - held.served_messages;
  CHECK(messages >= 3);
  CHECK(messages <= 4);  // 16 per message unless the AM header holds fewer entries
  CHECK(held_after.served_contiguous - held.served_contiguous == messages);
  CHECK(pulled_after.landed_multi - pulled.landed_multi == messages);
  CHECK(pulled_after.landed_contiguous - pulled.landed_contiguous ==
        (adjacent_places ? messages : 0));
  CHECK(WaitUntil([&] { return source.pinned() == 0; }));
}

// A BlockSource whose `deferred` keys are not at hand: Pin answers NotFound and PinLater parks
// them until the test releases them (the node's disk tier, promoting on another thread).
class DeferringSource : public BlockSource {
 public:
  explicit DeferringSource(MemfdBlockPool* pool) : pool_(pool) {}
  std::set<BlockKey> deferred;  // set before serving
  Result<PinnedBlock> Pin(const BlockKey& key) override {
    if (deferred.count(key)) return Status::NotFound("on disk");
    return pool_->Pin(key);
  }
  bool PinLater(const BlockKey& key, PinReady ready) override {
    if (!deferred.count(key)) return false;
    std::lock_guard<std::mutex> lock(mu_);
    parked_.emplace_back(key, std::move(ready));
    return true;
  }
  void Unpin(uint64_t pin) override { pool_->Unpin(pin); }
  size_t parked() {
    std::lock_guard<std::mutex> lock(mu_);
    return parked_.size();
  }
  // Answers every parked key from another thread: pinned from the pool, or `fail`.
  void Release(const std::set<BlockKey>& fail) {
    std::vector<std::pair<BlockKey, PinReady>> all;
    {
      std::lock_guard<std::mutex> lock(mu_);
      all.swap(parked_);
    }
    std::thread([this, all = std::move(all), fail]() mutable {
      for (auto& [key, ready] : all)
        ready(fail.count(key) ? Result<PinnedBlock>(Status::NotFound("promotion failed"))
                              : pool_->Pin(key));
    }).join();
  }

 private:
  MemfdBlockPool* pool_;
  std::mutex mu_;
  std::vector<std::pair<BlockKey, PinReady>> parked_;
};

TEST_CASE("a deferred block is served when ready while other pulls go on - a failed one is "
          "NotFound",
          "[transport][ucx]") {
  Node a = MakeNode("a", kSecret, 8, kSlot);
  Node b = MakeNode("b", kSecret, 8, kSlot);
  const Namespace ns = MakeNs("");
  const auto keys = ComputeBlockKeys(ns, Tokens(4, 9));
  for (size_t i = 0; i < keys.size(); ++i) a.pool->Put(i, keys[i], ns.id(), Payload(kPayload, i));
  // `a` serves through the deferring source (its transport reads the source only on requests).
  DeferringSource source(a.pool.get());
  source.deferred = {keys[0], keys[1]};
  PeerTransportOptions o;
  o.node_id = "a2";
  o.cluster_secret = kSecret;
  o.regions = {a.pool->region()};
  o.block_source = &source;
  auto a2 = PeerTransport::Open(std::move(o));
  REQUIRE(a2.ok());
  REQUIRE(b.transport->Connect("a2", (*a2)->worker_address()).ok());

  // Blocks 0 and 1 are parked; the pull waits for them.
  auto op = b.transport->PreparePull("a2", ns.id(),
                                     {PullTarget::Into(keys[0], b.pool->slot(0), kSlot),
                                      PullTarget::Into(keys[1], b.pool->slot(1), kSlot),
                                      PullTarget::Into(keys[2], b.pool->slot(2), kSlot)});
  REQUIRE(op.ok());
  REQUIRE((*op)->Post().ok());
  REQUIRE(WaitUntil([&] { return source.parked() == 2; }));
  // Meanwhile another pull from the same holder completes: the progress thread is not held.
  auto other = b.transport->Pull("a2", ns.id(), {PullTarget::Into(keys[3], b.pool->slot(3), kSlot)});
  REQUIRE(other.ok());
  CHECK(other->LeadingOk() == 1);
  CHECK(source.parked() == 2);
  // Block 0 becomes ready, block 1 cannot be promoted.
  source.Release({keys[1]});
  PullResult r = (*op)->Wait();
  REQUIRE(r.blocks.size() == 3);
  CHECK(r.blocks[0].ok());
  CHECK(r.blocks[1].IsNotFound());
  CHECK(r.blocks[2].ok());
  for (size_t i : {0, 2, 3}) CHECK(std::memcmp(b.pool->slot(i), a.pool->slot(i), kSlot) == 0);
  for (int i = 0; i < 200 && a.pool->pinned() != 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  CHECK(a.pool->pinned() == 0);
}

// A pull that sees no data for kProbeAfter (100 ms) makes the puller probe the holder's control
// endpoint. The probe is a request with its own id, and the holder (here without a directory: it
// answers with an Error) answers under that id: the puller matches every answer to its probe.
// Sent as request 0, the Error came back "about no request of ours" and was never matched.
TEST_CASE("a quiet pull's probe is answered under the probe's own request id", "[transport][ucx]") {
  Node a = MakeNode("a", kSecret, 8, kSlot);
  Node b = MakeNode("b", kSecret, 8, kSlot);
  const Namespace ns = MakeNs("");
  const auto keys = ComputeBlockKeys(ns, Tokens(2, 11));
  for (size_t i = 0; i < keys.size(); ++i) a.pool->Put(i, keys[i], ns.id(), Payload(kPayload, i));
  DeferringSource source(a.pool.get());
  source.deferred = {keys[0]};
  PeerTransportOptions o;
  o.node_id = "a3";
  o.cluster_secret = kSecret;
  o.regions = {a.pool->region()};
  o.block_source = &source;
  o.request_timeout = std::chrono::milliseconds(5000);
  auto a3 = PeerTransport::Open(std::move(o));
  REQUIRE(a3.ok());
  REQUIRE(b.transport->Connect("a3", (*a3)->worker_address()).ok());
  const TransferProfile before = b.transport->Profile();
  auto op = b.transport->PreparePull("a3", ns.id(),
                                     {PullTarget::Into(keys[0], b.pool->slot(0), kSlot),
                                      PullTarget::Into(keys[1], b.pool->slot(1), kSlot)});
  REQUIRE(op.ok());
  REQUIRE((*op)->Post().ok());
  REQUIRE(WaitUntil([&] { return source.parked() == 1; }));
  // Block 0 is parked: the pull waits, quiet, and the puller probes the holder.
  auto probes = [&] { return b.transport->Profile().probes - before.probes; };
  auto answered = [&] {
    return b.transport->Profile().probes_answered - before.probes_answered;
  };
  REQUIRE(WaitUntil([&] { return probes() >= 2; }));
  CHECK(WaitUntil([&] { return answered() >= 2; }));
  source.Release({});
  PullResult r = (*op)->Wait();
  REQUIRE(r.blocks.size() == 2);
  CHECK(r.LeadingOk() == 2);  // the probes' Errors failed nothing
  for (size_t i : {0, 1}) CHECK(std::memcmp(b.pool->slot(i), a.pool->slot(i), kSlot) == 0);
  // Every probe sent is answered under its id (none is in flight once the pull is done and the
  // last answer had time to arrive).
  CHECK(WaitUntil([&] { return answered() == probes(); }));
  CHECK(WaitUntil([&] { return a.pool->pinned() == 0; }));
}

// A BlockSource whose Pin of `stall` blocks the holder's progress thread until Unstall(): the
// holder has posted the sends of the blocks before it and cannot progress them.
class StallingSource : public BlockSource {
 public:
  StallingSource(MemfdBlockPool* pool, const BlockKey& stall) : pool_(pool), stall_(stall) {}
  Result<PinnedBlock> Pin(const BlockKey& key) override {
    if (key == stall_) {
      stalled_ = true;
      while (!go_) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return pool_->Pin(key);
  }
  void Unpin(uint64_t pin) override { pool_->Unpin(pin); }
  bool stalled() const { return stalled_; }
  void Unstall() { go_ = true; }

 private:
  MemfdBlockPool* pool_;
  BlockKey stall_;
  std::atomic<bool> stalled_{false};
  std::atomic<bool> go_{false};
};

// A pull that fails while UCX has a receive into one of its places ends at once (no grace
// timer), and that place is held: the block fails, PullResult::held names it, and its release
// runs only once UCX reports the receive, or when the transport (its UCX worker) is gone. UCX
// cannot cancel an active-message receive, and on tcp a force-closed endpoint keeps reading
// its connection, so a place handed back at the failure could still be written: the test makes
// the holder's bytes flow after the pull ended and checks where they went.
TEST_CASE("a pull that fails with bytes landing holds their place until UCX reports the receive",
          "[transport][ucx]") {
  // Large enough that its bytes take tens of ms over tcp: the holder stalls before they are
  // all sent.
  constexpr size_t kBig = size_t{64} << 20;
  constexpr size_t kBigSlot = kBig + kBlockHeaderSize;
  auto pool_a = *MemfdBlockPool::Open(2, kBigSlot);
  auto pool_b = *MemfdBlockPool::Open(2, kBigSlot);
  const Namespace ns = MakeNs("");
  const auto keys = ComputeBlockKeys(ns, Tokens(2, 21));
  for (size_t i = 0; i < keys.size(); ++i) pool_a->Put(i, keys[i], ns.id(), Payload(kBig, 30 + i));
  StallingSource source(pool_a.get(), keys[1]);
  struct Unstaller {  // a failed REQUIRE must not leave the holder's progress thread stalled
    StallingSource& s;
    ~Unstaller() { s.Unstall(); }
  };
  auto open = [&](const std::string& id, MemfdBlockPool* pool, BlockSource* src, int timeout_ms) {
    PeerTransportOptions o;
    o.node_id = id;
    o.cluster_secret = kSecret;
    o.tls = "tcp";  // fragments over a socket: the receive waits for the holder's progress
    o.regions = {pool->region()};
    o.block_source = src;
    o.request_timeout = std::chrono::milliseconds(timeout_ms);
    auto t = PeerTransport::Open(std::move(o));
    REQUIRE(t.ok());
    return std::move(*t);
  };
  auto a = open("a", pool_a.get(), &source, 5000);
  Unstaller unstall{source};
  auto b = open("b", pool_b.get(), nullptr, 1000);
  REQUIRE(b->Connect("a", a->worker_address()).ok());
  std::memset(pool_b->slot(0), 0x5a, 2 * kBigSlot);
  const TransferProfile before = b->Profile();
  auto op = b->PreparePull("a", ns.id(), {PullTarget::Into(keys[0], pool_b->slot(0), kBigSlot)});
  REQUIRE(op.ok());
  REQUIRE((*op)->Post().ok());
  // Once the holder is sending block 0, a second pull makes it pin block 1, which stalls its
  // progress thread: block 0's bytes stop flowing, and the first request times out with UCX's
  // receive into slot 0 posted.
  REQUIRE(WaitUntil([&] { return a->Profile().max_sends_in_flight >= 1; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  auto op2 = b->PreparePull("a", ns.id(), {PullTarget::Into(keys[1], pool_b->slot(1), kBigSlot)});
  REQUIRE(op2.ok());
  REQUIRE((*op2)->Post().ok());
  PullResult r = (*op)->Wait();
  PullResult r2 = (*op2)->Wait();
  CHECK(source.stalled());
  REQUIRE(r.blocks.size() == 1);
  CHECK(!r.blocks[0].ok());
  CHECK(!r2.blocks[0].ok());
  REQUIRE(r.held == std::vector<uint32_t>{0});
  CHECK(r2.held.empty());  // never accepted: nothing of it was given to UCX
  CHECK(b->Profile().held_blocks - before.held_blocks == 1);
  std::atomic<int> released{0};
  (*op)->ReleaseHeld(0, [&] { ++released; });
  // Slot 1 was never given to UCX: untouched. Slot 0 stays held while the holder is stalled
  // (UCX has nothing to report), here for longer than the 300 ms grace after which the
  // transport used to hand such places back.
  std::this_thread::sleep_for(std::chrono::milliseconds(350));
  CHECK(released == 0);
  CHECK(std::all_of(pool_b->slot(1), pool_b->slot(1) + kBigSlot,
                    [](std::byte x) { return x == std::byte{0x5a}; }));
  source.Unstall();
  // The holder's progress resumes. Whatever UCX does with the receive, the release runs only
  // after its report: if the bytes arrive (tcp still reads the closed endpoint's connection),
  // they are block 0's, written into the place that was held for them.
  const bool reported = WaitUntil([&] { return released == 1; });
  if (reported) {
    CHECK(std::memcmp(pool_b->slot(0), pool_a->slot(0), kBigSlot) == 0);
    CHECK(b->Profile().held_released - before.held_released == 1);
  }
  std::printf("[transport] tcp receive of a failed pull: %s\n",
              reported ? "reported by UCX after the pull ended (its bytes landed)"
                       : "never reported; released when the worker was destroyed");
  std::fflush(stdout);
  b.reset();  // destroys the worker: a place still held is released now
  CHECK(released == 1);
}

// The progress threads' default spin follows the CPUs this process may run on: none below 4
// (spinning threads starve the threads they wait for on 2 cores), 2000 rounds from 4.
TEST_CASE("the default progress spin is 0 below 4 usable CPUs and 2000 from 4", "[transport]") {
  cpu_set_t original;
  CPU_ZERO(&original);
  REQUIRE(::sched_getaffinity(0, sizeof(original), &original) == 0);
  std::vector<int> cpus;
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &original)) cpus.push_back(c);
  auto run_on = [&](size_t n) {
    cpu_set_t set;
    CPU_ZERO(&set);
    for (size_t i = 0; i < n; ++i) CPU_SET(cpus[i], &set);
    REQUIRE(::sched_setaffinity(0, sizeof(set), &set) == 0);  // this thread only
  };
  run_on(1);
  CHECK(AutoProgressSpinRounds() == 0);
  CHECK(PeerTransportOptions{}.progress_spin_rounds == 0);
  if (cpus.size() >= 4) {
    run_on(4);
    CHECK(AutoProgressSpinRounds() == 2000);
  } else {
    WARN("only " << cpus.size() << " usable CPUs: the 4-CPU side is not checked here");
  }
  REQUIRE(::sched_setaffinity(0, sizeof(original), &original) == 0);
  CHECK(AutoProgressSpinRounds() == (cpus.size() >= 4 ? 2000 : 0));
}

TEST_CASE("TransferProfile::ForEachField names every field once", "[transport]") {
  TransferProfile p;
  std::set<std::string> names;
  size_t calls = 0;
  p.ForEachField([&](const char* name, auto value) {
    static_assert(sizeof(value) == 8);
    names.insert(name);
    ++calls;
  });
  CHECK(calls == names.size());
  // Every field is 8 bytes: a field added to the struct but not to the list fails here.
  CHECK(calls * 8 == sizeof(TransferProfile));
}

}  // namespace
}  // namespace strata::transport
