// The vLLM KV-event codec (lib/events/kv_event.h): golden bytes from Python's msgpack.packb of the
// same structures (msgspec writes the same bytes: smallest integers, float64, str, bin), both
// event encodings, decoding of either, unknown fields ignored, malformed input refused.
#include <catch2/catch.hpp>

#include <cstddef>
#include <string>

#include "events/kv_event.h"
#include "events/zmq_socket.h"

namespace strata::events {
namespace {

std::string Hex(const std::string& s) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    out += kDigits[c >> 4];
    out += kDigits[c & 15];
  }
  return out;
}

std::string Unhex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    out += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
  return out;
}

Result<KvEventBatch> Decode(const std::string& bytes) {
  return DecodeEventBatch(
      std::span(reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()));
}

KvEventBatch Sample() {
  KvEventBatch b;
  b.ts = 1.5;
  KvEvent stored;
  stored.kind = KvEventKind::kBlockStored;
  stored.block_hashes = {uint64_t{1}, ~uint64_t{0}};
  stored.block_size = 16;
  stored.medium = "CPU";
  KvEvent removed;
  removed.kind = KvEventKind::kBlockRemoved;
  removed.block_hashes = {std::string("\x01\x02", 2)};
  removed.medium = "STORAGE";
  KvEvent cleared;
  cleared.kind = KvEventKind::kAllBlocksCleared;
  b.events = {stored, removed, cleared};
  return b;
}

// msgpack.packb([1.5, [{"type": "BlockStored", "block_hashes": [1, 2**64-1],
//   "parent_block_hash": None, "token_ids": [], "block_size": 16, "lora_id": None,
//   "medium": "CPU", "lora_name": None}, {"type": "BlockRemoved", "block_hashes": [b"\x01\x02"],
//   "medium": "STORAGE"}, {"type": "AllBlocksCleared"}]]).hex()
constexpr const char* kSampleMap =
    "92cb3ff80000000000009388a474797065ab426c6f636b53746f726564ac626c6f636b5f686173686573920"
    "1cfffffffffffffffffb1706172656e745f626c6f636b5f68617368c0a9746f6b656e5f69647390aa626c6f"
    "636b5f73697a6510a76c6f72615f6964c0a66d656469756da3435055a96c6f72615f6e616d65c083a474797"
    "065ac426c6f636b52656d6f766564ac626c6f636b5f68617368657391c4020102a66d656469756da753544f"
    "5241474581a474797065b0416c6c426c6f636b73436c6561726564";

TEST_CASE("Tagged-map encoding is byte for byte what msgpack.packb writes", "[events]") {
  CHECK(Hex(EncodeEventBatch(Sample(), EventEncoding::kTaggedMap)) == kSampleMap);
}

TEST_CASE("Tagged-array encoding keeps vLLM's field order and a trailing dp rank", "[events]") {
  KvEventBatch b;
  b.ts = 1.5;
  b.data_parallel_rank = 3;
  KvEvent stored;
  stored.block_hashes = {uint64_t{7}};
  stored.block_size = 16;
  stored.medium = "CPU";
  KvEvent cleared;
  cleared.kind = KvEventKind::kAllBlocksCleared;
  b.events = {stored, cleared};
  // msgpack.packb([1.5, [["BlockStored", [7], None, [], 16, None, "CPU", None],
  //                      ["AllBlocksCleared"]], 3]).hex()
  CHECK(Hex(EncodeEventBatch(b, EventEncoding::kTaggedArray)) ==
        "93cb3ff80000000000009298ab426c6f636b53746f7265649107c09010c0a3435055c091b0416c6c426c6f63"
        "6b73436c656172656403");
}

TEST_CASE("Both encodings decode to the same values", "[events]") {
  for (EventEncoding enc : {EventEncoding::kTaggedMap, EventEncoding::kTaggedArray}) {
    auto d = Decode(EncodeEventBatch(Sample(), enc));
    REQUIRE(d.ok());
    CHECK(d->ts == 1.5);
    CHECK_FALSE(d->data_parallel_rank.has_value());
    REQUIRE(d->events.size() == 3);
    CHECK(d->events[0].kind == KvEventKind::kBlockStored);
    CHECK(d->events[0].block_hashes == Sample().events[0].block_hashes);
    CHECK(d->events[0].block_size == 16);
    CHECK(d->events[0].medium == "CPU");
    CHECK_FALSE(d->events[0].parent_block_hash.has_value());
    CHECK(d->events[1].kind == KvEventKind::kBlockRemoved);
    CHECK(HashToString(d->events[1].block_hashes.at(0)) == "b:0102");
    CHECK(d->events[1].medium == "STORAGE");
    CHECK(d->events[2].kind == KvEventKind::kAllBlocksCleared);
  }
}

TEST_CASE("Decoding ignores fields newer vLLM adds and reads a map batch", "[events]") {
  // msgpack.packb({"ts": 2.0, "events": [{"type": "BlockStored", "block_hashes": [5],
  //   "parent_block_hash": 4, "token_ids": [1, 2], "block_size": 2, "lora_id": None,
  //   "medium": "GPU", "lora_name": "a", "extra_keys": [[["mm", 0]]], "group_idx": 1,
  //   "kv_cache_spec_kind": "full_attention"}], "data_parallel_rank": 0}).hex()
  const std::string bytes = Unhex(
      "83a27473cb4000000000000000a66576656e7473918ba474797065ab426c6f636b53746f726564ac626c6f"
      "636b5f6861736865739105b1706172656e745f626c6f636b5f6861736804a9746f6b656e5f696473920102"
      "aa626c6f636b5f73697a6502a76c6f72615f6964c0a66d656469756da3475055a96c6f72615f6e616d65a1"
      "61aa65787472615f6b657973919192a26d6d00a967726f75705f69647801b26b765f63616368655f737065"
      "635f6b696e64ae66756c6c5f617474656e74696f6eb2646174615f706172616c6c656c5f72616e6b00");
  auto d = Decode(bytes);
  REQUIRE(d.ok());
  CHECK(d->ts == 2.0);
  CHECK(d->data_parallel_rank == 0);
  REQUIRE(d->events.size() == 1);
  const KvEvent& e = d->events[0];
  CHECK(e.block_hashes == std::vector<ExternalBlockHash>{uint64_t{5}});
  CHECK(e.parent_block_hash == ExternalBlockHash(uint64_t{4}));
  CHECK(e.token_ids == std::vector<int64_t>{1, 2});
  CHECK(e.lora_name == "a");
  CHECK(e.group_idx == 1);
}

TEST_CASE("Malformed batches are Corruption", "[events]") {
  for (const char* hex : {"", "c1", "90", "9201", "92cb3ff000000000000091a3666f6f",
                          "92cb3ff00000000000009181a474797065a3466f6f",  // unknown tag
                          "92cb3ff0000000000000919101",                  // tag not a string
                          "92cb3ff000000000000090c0c0"}) {                // trailing bytes
    auto d = Decode(Unhex(hex));
    CHECK_FALSE(d.ok());
    if (!d.ok()) CHECK(d.status().IsCorruption());
  }
}

TEST_CASE("Sequence numbers are 8 bytes big-endian, -1 ends a replay", "[events]") {
  CHECK(Hex(SeqBytes(0x0102)) == "0000000000000102");
  CHECK(SeqFromBytes(SeqBytes(123456789)) == 123456789);
  CHECK(SeqFromBytes(std::string(8, '\xff')) == kEndOfReplay);
}

}  // namespace
}  // namespace strata::events
