// Engine hashes in KV events (lib/events/block_tag.h, docs/kv-events.md "Engine hashes"): the tag
// a block keeps in the store, byte for byte; the hash vLLM publishes for it (maybe_convert_block_
// hash: the low 64 bits read big-endian, or the bytes); and a real publisher that names tagged
// blocks by the engine's hash, chains them into one BlockStored per run with the first block's
// parent and every token, leaves secondary head shards out, and keeps Strata keys for the rest.
#include <catch2/catch.hpp>

#include <filesystem>
#include <string>
#include <unistd.h>

#include "events/block_tag.h"
#include "events/kv_event_publisher.h"
#include "events/zmq_socket.h"

namespace strata::events {
namespace {

std::string Unhex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    out += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
  return out;
}

EngineHash Hash(const std::string& hex) { return *EngineHash::FromHex(hex); }

// docs/keys.md: vllm-sha256-cbor, seed 'vllm-none-hash', tokens 0..31, block size 16.
const char* kH0 = "dc918a88b139e5afe60b88eda27508d4aee16c10fdc354791efea06206ac0749";
const char* kH1 = "c300ec275d7bf08af8fc63e76cdc0086911bbc7091e03c5cf892553bef84ef0c";

BlockTag Block1() {
  BlockTag t;
  t.hash = Hash(kH1);
  t.parent = Hash(kH0);
  t.block_size = 16;
  for (uint32_t i = 16; i < 32; ++i) t.token_ids.push_back(i);
  t.lora_name = "sql1";
  return t;
}

// python3 -c "import struct; print((b'\x01\x20' + h1 + b'\x20' + h0 + struct.pack('<II', 16, 16)
//   + struct.pack('<16I', *range(16, 32)) + b'\x04sql1').hex())"
constexpr const char* kBlock1Tag =
    "0120c300ec275d7bf08af8fc63e76cdc0086911bbc7091e03c5cf892553bef84ef0c20dc918a88b139e5afe6"
    "0b88eda27508d4aee16c10fdc354791efea06206ac07491000000010000000100000001100000012000000130"
    "000001400000015000000160000001700000018000000190000001a0000001b0000001c0000001d0000001e00"
    "00001f0000000473716c31";

TEST_CASE("A block tag is byte for byte its documented layout and decodes back", "[events]") {
  const std::string bytes = EncodeBlockTag(Block1());
  CHECK(bytes == Unhex(kBlock1Tag));
  auto back = DecodeBlockTag(bytes);
  REQUIRE(back.ok());
  CHECK(back->kind == BlockTagKind::kEngineBlock);
  CHECK(back->hash == Hash(kH1));
  CHECK(back->parent == Hash(kH0));
  CHECK(back->block_size == 16);
  CHECK(back->token_ids == Block1().token_ids);
  CHECK(back->lora_name == "sql1");

  BlockTag first;  // no parent, tokens unknown (SGLang), 16-byte hash (xxhash)
  first.hash = Hash("00112233445566778899aabbccddeeff");
  first.block_size = 64;
  auto f = DecodeBlockTag(EncodeBlockTag(first));
  REQUIRE(f.ok());
  CHECK(f->parent.size == 0);
  CHECK(f->token_ids.empty());
  CHECK(f->hash.size == 16);

  CHECK(SecondaryShardTag() == std::string(1, '\x02'));
  auto s = DecodeBlockTag(SecondaryShardTag());
  REQUIRE(s.ok());
  CHECK(s->kind == BlockTagKind::kSecondaryShard);
}

TEST_CASE("Malformed block tags are Corruption", "[events]") {
  const std::string good = Unhex(kBlock1Tag);
  CHECK(DecodeBlockTag("").status().IsCorruption());
  CHECK(DecodeBlockTag(std::string(1, '\x03')).status().IsCorruption());
  CHECK(DecodeBlockTag(std::string("\x02\x00", 2)).status().IsCorruption());
  for (size_t cut = 1; cut < good.size(); ++cut)
    CHECK(DecodeBlockTag(good.substr(0, cut)).status().IsCorruption());
  CHECK(DecodeBlockTag(good + "x").status().IsCorruption());
  std::string bad_len = good;
  bad_len[1] = 20;  // hash length
  CHECK(DecodeBlockTag(bad_len).status().IsCorruption());
}

TEST_CASE("Engine hashes are published as vLLM's maybe_convert_block_hash does", "[events]") {
  // int.from_bytes(h, "big") & (2**64 - 1)
  CHECK(std::get<uint64_t>(PublishedEngineHash(Hash(kH1), true)) == 17911472383915781900ull);
  CHECK(std::get<uint64_t>(PublishedEngineHash(Hash(kH0), true)) == 2233398808101521225ull);
  CHECK(std::get<std::string>(PublishedEngineHash(Hash(kH1), false)) == Unhex(kH1));
}

// Every batch the publisher kept, through its replay endpoint.
std::vector<KvEventBatch> Replay(const std::string& endpoint) {
  ZmqContext ctx;
  auto s = ZmqSocket::Open(ctx, ZMQ_DEALER);
  REQUIRE(s.ok());
  REQUIRE(s->Connect(endpoint).ok());
  REQUIRE(s->SendFrames({"", SeqBytes(0)}, false).ok());
  std::vector<KvEventBatch> out;
  for (;;) {
    REQUIRE(s->Poll(5000));
    auto frames = s->RecvFrames(false);
    REQUIRE(frames.ok());
    REQUIRE(frames->size() == 4);
    if (SeqFromBytes((*frames)[2]) == kEndOfReplay) return out;
    const std::string& p = (*frames)[3];
    auto b = DecodeEventBatch(std::span(reinterpret_cast<const std::byte*>(p.data()), p.size()));
    REQUIRE(b.ok());
    out.push_back(std::move(b).value());
  }
}

TEST_CASE("The publisher names tagged blocks by their engine hash, one event per chain run",
          "[events]") {
  const bool int_hashes = GENERATE(true, false);
  const std::string dir = std::filesystem::temp_directory_path() /
                          ("strata-block-tag-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  KvEventsOptions o;
  o.endpoint = "ipc://" + dir + "/pub";
  o.replay_endpoint = "ipc://" + dir + "/replay";
  o.int_hashes = int_hashes;
  o.block_size = 99;  // what untagged blocks get
  auto pub = KvEventPublisher::Open(o);
  REQUIRE(pub.ok());

  BlockTag b0;
  b0.hash = Hash(kH0);
  b0.block_size = 16;
  for (uint32_t i = 0; i < 16; ++i) b0.token_ids.push_back(i);
  const BlockTag b1 = Block1();
  BlockTag b1_plain = b1;
  b1_plain.lora_name.clear();
  const BlockKey k0{1, 10}, k1{1, 11}, shard{1, 12}, plain{1, 13};
  (*pub)->RecordStored(Tier::kHost, k0, EncodeBlockTag(b0));
  (*pub)->RecordStored(Tier::kHost, shard, SecondaryShardTag());
  (*pub)->RecordStored(Tier::kHost, k1, EncodeBlockTag(b1_plain));
  (*pub)->RecordStored(Tier::kHost, plain, {});
  (*pub)->RecordRemoved(Tier::kHost, k1, EncodeBlockTag(b1_plain));
  (*pub)->RecordRemoved(Tier::kHost, shard, SecondaryShardTag());
  (*pub)->RecordStored(Tier::kDisk, k1, EncodeBlockTag(b1_plain));
  (*pub)->Flush();
  const auto batches = Replay(o.replay_endpoint);
  std::filesystem::remove_all(dir);
  REQUIRE(batches.size() == 1);
  const auto& ev = batches[0].events;
  REQUIRE(ev.size() == 4);

  const auto h0 = PublishedEngineHash(Hash(kH0), int_hashes);
  const auto h1 = PublishedEngineHash(Hash(kH1), int_hashes);
  // The chain k0 -> k1 is one BlockStored, the shard is left out.
  CHECK(ev[0].kind == KvEventKind::kBlockStored);
  CHECK(ev[0].block_hashes == std::vector<ExternalBlockHash>{h0, h1});
  CHECK_FALSE(ev[0].parent_block_hash.has_value());
  std::vector<int64_t> tokens;
  for (int64_t i = 0; i < 32; ++i) tokens.push_back(i);
  CHECK(ev[0].token_ids == tokens);
  CHECK(ev[0].block_size == 16);
  CHECK(ev[0].medium == "CPU");
  // An untagged block: its Strata key, the configured block size.
  CHECK(ev[1].kind == KvEventKind::kBlockStored);
  CHECK(ev[1].block_hashes == std::vector<ExternalBlockHash>{PublishedHash(plain, int_hashes)});
  CHECK(ev[1].block_size == 99);
  CHECK(ev[1].token_ids.empty());
  // The removal names the engine hash (the shard's removal is left out too).
  CHECK(ev[2].kind == KvEventKind::kBlockRemoved);
  CHECK(ev[2].block_hashes == std::vector<ExternalBlockHash>{h1});
  // A block stored alone mid-chain names its parent, as vLLM does.
  CHECK(ev[3].kind == KvEventKind::kBlockStored);
  CHECK(ev[3].medium == "STORAGE");
  CHECK(ev[3].block_hashes == std::vector<ExternalBlockHash>{h1});
  REQUIRE(ev[3].parent_block_hash.has_value());
  CHECK(*ev[3].parent_block_hash == h0);
  CHECK(ev[3].token_ids.size() == 16);
  CHECK((*pub)->stats().blocks_stored == 4);
  CHECK((*pub)->stats().blocks_removed == 1);
}

}  // namespace
}  // namespace strata::events
