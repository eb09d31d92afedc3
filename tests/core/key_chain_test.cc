// Key scheme tests: the documented vectors (docs/keys.md), an independent check with the
// `xxh128sum` tool, chain properties, incremental extension, and keys identical across processes.
#include "strata/key_chain.h"

#include <cstdio>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "../lib/run_command.h"

namespace strata {
namespace {

NamespaceSpec DefaultSpec() {
  NamespaceSpec s;
  s.model_id = "meta-llama/Llama-3.1-8B-Instruct";
  s.kv_dtype = KvDtype::kBFloat16;
  s.num_layers = 32;
  s.num_kv_heads = 8;
  s.head_dim = 128;
  s.block_size = 16;
  return s;
}

Namespace Make(const NamespaceSpec& s) {
  auto ns = Namespace::Create(s);
  REQUIRE(ns.ok());
  return std::move(ns).value();
}

std::vector<uint32_t> Iota(uint32_t from, uint32_t n, uint32_t step = 1) {
  std::vector<uint32_t> t(n);
  for (uint32_t i = 0; i < n; ++i) t[i] = from + i * step;
  return t;
}

std::vector<std::string> Hex(const std::vector<BlockKey>& keys) {
  std::vector<std::string> out;
  for (const auto& k : keys) out.push_back(k.ToHex());
  return out;
}

std::string RunCommand(const std::string& cmd) {
  const auto r = testing::RunCommand(cmd);
  INFO("command: " << cmd << "\noutput: " << r.output);
  REQUIRE(r.exit_code == 0);
  return r.output;
}

std::string TempPath(const std::string& name) {
  return std::string(STRATA_BINARY_DIR) + "/test-tmp-" + name + "-" + std::to_string(getpid());
}

TEST_CASE("Documented test vectors hold (docs/keys.md)", "[core]") {
  SECTION("V1: default namespace, tokens 0..31, block 16") {
    Namespace ns = Make(DefaultSpec());
    CHECK(ns.id().ToHex() == "187c067a43dd7ddd405c25c0db1fcd76");
    CHECK(Hex(ComputeBlockKeys(ns, Iota(0, 32))) ==
          std::vector<std::string>{"187c067a01aeafae57409d9461d2813c",
                                   "187c067a7d12525e26dcfba4b50b7705"});
  }
  SECTION("V2: block size 4, tokens 1..9, the 9th token is an unkeyed tail") {
    auto s = DefaultSpec();
    s.block_size = 4;
    Namespace ns = Make(s);
    CHECK(ns.id().ToHex() == "d7c102ab47bed61620e0128092fa23d9");
    CHECK(Hex(ComputeBlockKeys(ns, Iota(1, 9))) ==
          std::vector<std::string>{"d7c102ab01cb1f4f9a29b0aea702549a",
                                   "d7c102ab0a52a203a05ccfec8d205c93"});
  }
  SECTION("V3: tenant salt 'tenant-a'") {
    auto s = DefaultSpec();
    s.tenant_salt = "tenant-a";
    Namespace ns = Make(s);
    CHECK(ns.id().ToHex() == "65b1bb83de4852c4f41535e27ef90a35");
    CHECK(Hex(ComputeBlockKeys(ns, Iota(0, 16))) ==
          std::vector<std::string>{"65b1bb834235bfe0d398342cfa415115"});
  }
  SECTION("V4: the largest token id") {
    Namespace ns = Make(DefaultSpec());
    CHECK(Hex(ComputeBlockKeys(ns, std::vector<uint32_t>(16, 4294967295u))) ==
          std::vector<std::string>{"187c067a9a9d430e297f5d51afe8c2d2"});
  }
  SECTION("V5: MLA fp8 namespace, block 64") {
    NamespaceSpec s;
    s.model_id = "deepseek-ai/DeepSeek-V3";
    s.model_revision = "main";
    s.kv_dtype = KvDtype::kFloat8E4M3;
    s.attention = AttentionKind::kMla;
    s.num_layers = 61;
    s.num_kv_heads = 1;
    s.head_dim = 576;
    s.block_size = 64;
    Namespace ns = Make(s);
    CHECK(ns.id().ToHex() == "40016617403f8a9e40adb9bdbdae8a39");
    CHECK(Hex(ComputeBlockKeys(ns, Iota(0, 128, 7))) ==
          std::vector<std::string>{"40016617a8684d06450c429db6927998",
                                   "400166177f20a6dab5a571857cf4f16c"});
  }
  SECTION("V6: per-block extra bytes on the first block") {
    Namespace ns = Make(DefaultSpec());
    KeyChain chain(ns);
    std::vector<std::byte> extra;
    for (int i = 1; i <= 8; ++i) extra.push_back(std::byte(i));
    REQUIRE(chain.AppendBlock(Iota(100, 16), extra).ok());
    chain.Append(Iota(116, 16));
    CHECK(Hex(chain.keys()) == std::vector<std::string>{"187c067a79cb8ee8e5b19cf16caab565",
                                                        "187c067a32e11c500bbb5950fad7b1b5"});
  }
}

TEST_CASE("Every key carries its namespace's tag - a key of another namespace is refused",
          "[core]") {
  const Namespace ns = Make(DefaultSpec());
  NamespaceSpec salted = DefaultSpec();
  salted.tenant_salt = "tenant-a";
  const Namespace other = Make(salted);
  REQUIRE((ns.id().high >> 32) != (other.id().high >> 32));  // V1's and V3's tags differ
  std::vector<BlockKey> keys = ComputeBlockKeys(ns, Iota(0, 16 * 40));
  keys.push_back(HeadShardKey(keys[3], 5));
  for (const BlockKey& k : keys) {
    CHECK(k.high >> 32 == ns.id().high >> 32);
    CHECK(KeyInNamespace(k, ns.id()));
    CHECK_FALSE(KeyInNamespace(k, other.id()));
  }
  CHECK(CheckKeysInNamespace(keys, ns.id(), "Store").ok());
  CHECK(CheckKeysInNamespace({}, ns.id(), "Store").ok());
  // One key of the other namespace among ours: refused, naming the block, its tag and ours.
  keys.insert(keys.begin() + 7, ComputeBlockKeys(other, Iota(0, 16))[0]);
  const Status st = CheckKeysInNamespace(keys, ns.id(), "Store");
  CHECK(st.IsInvalidArgument());
  const std::string msg(st.message());
  CHECK(msg.find("block 7") != std::string::npos);
  CHECK(msg.find("65b1bb83") != std::string::npos);  // the key's tag (V3's namespace)
  CHECK(msg.find("187c067a") != std::string::npos);  // the namespace's
  // The tag is the top 32 bits: a key whose other 96 bits change keeps it.
  const BlockKey forged{(ns.id().high & kNamespaceTagMask) | 0x1234, 99};
  CHECK(KeyInNamespace(forged, ns.id()));
  CHECK_FALSE(KeyInNamespace(BlockKey{forged.high ^ (uint64_t{1} << 32), 99}, ns.id()));
}

TEST_CASE("Head shard keys: documented vector, distinct per head", "[core]") {
  const BlockKey k = BlockKey::FromHex("187c067a01aeafae57409d9461d2813c").value();
  CHECK(HeadShardKey(k, 3).ToHex() == "187c067a522feed0eb744f376fcdf3aa");
  CHECK(HeadShardKey(k, 0).ToHex() == "187c067a2b302e2e756d2c5e101bd4dd");
  std::set<BlockKey> seen;
  for (uint32_t h = 0; h < 64; ++h) seen.insert(HeadShardKey(k, h));
  CHECK(seen.size() == 64);
  CHECK(seen.count(k) == 0);
}

TEST_CASE("Keys agree with the independent xxh128sum tool over the documented frame", "[core]") {
  // Builds the frame bytes by hand from docs/keys.md (not with the library's encoder) and hashes
  // them with xxHash's own command-line tool.
  Namespace ns = Make(DefaultSpec());
  auto write = [](const std::string& path, const std::vector<uint8_t>& bytes) {
    std::ofstream f(path, std::ios::binary);
    f.write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  };
  auto hex_to_bytes = [](const std::string& hex) {
    std::vector<uint8_t> b;
    for (size_t i = 0; i < hex.size(); i += 2) b.push_back(std::stoi(hex.substr(i, 2), nullptr, 16));
    return b;
  };
  std::vector<uint32_t> tokens = Iota(0, 32);
  std::vector<BlockKey> keys = ComputeBlockKeys(ns, tokens);
  REQUIRE(keys.size() == 2);

  std::string prev_hex = ns.id().ToHex();
  for (size_t b = 0; b < 2; ++b) {
    std::vector<uint8_t> frame = hex_to_bytes(prev_hex);
    for (size_t i = 0; i < 16; ++i) {
      uint32_t t = tokens[b * 16 + i];
      for (int j = 0; j < 4; ++j) frame.push_back(static_cast<uint8_t>(t >> (8 * j)));
    }
    std::string path = TempPath("frame" + std::to_string(b));
    write(path, frame);
    std::string out = RunCommand("xxh128sum " + path);
    std::remove(path.c_str());
    // The key is the hash with its first 8 hex digits (32 bits) replaced by the namespace's tag.
    CHECK(ns.id().ToHex().substr(0, 8) + out.substr(8, 24) == keys[b].ToHex());
    prev_hex = keys[b].ToHex();
  }

  // The namespace fingerprint is XXH3-128 of its canonical encoding.
  std::vector<uint8_t> enc;
  for (auto b : ns.encoding()) enc.push_back(static_cast<uint8_t>(b));
  std::string path = TempPath("ns");
  write(path, enc);
  std::string out = RunCommand("xxh128sum " + path);
  std::remove(path.c_str());
  CHECK(out.substr(0, 32) == ns.id().ToHex());
}

TEST_CASE("Changing a token changes its block's key and every later one, no earlier one",
          "[core]") {
  Namespace ns = Make(DefaultSpec());
  std::mt19937 rng(7);
  std::vector<uint32_t> tokens(16 * 20);
  for (auto& t : tokens) t = rng() % 128256;
  const auto base = ComputeBlockKeys(ns, tokens);
  REQUIRE(base.size() == 20);
  for (size_t pos : {size_t{0}, size_t{15}, size_t{16}, size_t{77}, size_t{319}}) {
    auto changed = tokens;
    changed[pos] ^= 1;
    const auto keys = ComputeBlockKeys(ns, changed);
    const size_t block = pos / 16;
    for (size_t b = 0; b < keys.size(); ++b) {
      INFO("changed token " << pos << ", block " << b);
      if (b < block) CHECK(keys[b] == base[b]);
      else CHECK(keys[b] != base[b]);
    }
  }
}

TEST_CASE("Every namespace field changes every key", "[core]") {
  const auto tokens = Iota(1000, 64);
  const auto base = ComputeBlockKeys(Make(DefaultSpec()), tokens);
  std::vector<std::pair<std::string, NamespaceSpec>> variants;
  auto add = [&](const char* name, auto mutate) {
    NamespaceSpec s = DefaultSpec();
    mutate(s);
    variants.emplace_back(name, s);
  };
  add("model_id", [](NamespaceSpec& s) { s.model_id += "x"; });
  add("model_revision", [](NamespaceSpec& s) { s.model_revision = "abc"; });
  add("kv_dtype", [](NamespaceSpec& s) { s.kv_dtype = KvDtype::kFloat16; });
  add("attention", [](NamespaceSpec& s) {
    s.attention = AttentionKind::kMla;
    s.num_kv_heads = 1;  // MLA has one latent "head"
  });
  add("num_layers", [](NamespaceSpec& s) { s.num_layers = 33; });
  add("num_kv_heads", [](NamespaceSpec& s) { s.num_kv_heads = 4; });
  add("head_dim", [](NamespaceSpec& s) { s.head_dim = 64; });
  add("codec", [](NamespaceSpec& s) { s.codec = Codec::kShuffleZstd; });
  add("lora_id", [](NamespaceSpec& s) { s.lora_id = "adapter-1"; });
  add("tenant_salt", [](NamespaceSpec& s) { s.tenant_salt = "t"; });
  // String fields are length-prefixed: moving bytes between adjacent strings must change the id.
  add("string boundaries", [](NamespaceSpec& s) {
    s.model_id = "meta-llama/Llama-3.1-8B-Instruc";
    s.model_revision = "t";
  });
  for (const auto& [name, spec] : variants) {
    INFO("field " << name);
    const auto keys = ComputeBlockKeys(Make(spec), tokens);
    REQUIRE(keys.size() == base.size());
    for (size_t b = 0; b < keys.size(); ++b) CHECK(keys[b] != base[b]);
  }
}

TEST_CASE("Only full blocks are keyed", "[core]") {
  Namespace ns = Make(DefaultSpec());
  CHECK(ComputeBlockKeys(ns, Iota(0, 15)).empty());
  CHECK(ComputeBlockKeys(ns, Iota(0, 16)).size() == 1);
  CHECK(ComputeBlockKeys(ns, Iota(0, 47)).size() == 2);
  CHECK(ComputeBlockKeys(ns, {}).empty());
  // A longer prompt's keys extend a shorter one's.
  auto short_keys = ComputeBlockKeys(ns, Iota(0, 40));
  auto long_keys = ComputeBlockKeys(ns, Iota(0, 400));
  REQUIRE(short_keys.size() == 2);
  CHECK(std::equal(short_keys.begin(), short_keys.end(), long_keys.begin()));
}

TEST_CASE("Incremental extension equals keying all tokens at once", "[core]") {
  std::mt19937 rng(11);
  for (uint32_t block_size : {1u, 3u, 16u, 100u, 256u, 512u}) {
    auto spec = DefaultSpec();
    spec.block_size = block_size;
    Namespace ns = Make(spec);
    std::vector<uint32_t> tokens(block_size * 9 + block_size / 2);
    for (auto& t : tokens) t = rng();
    const auto all = ComputeBlockKeys(ns, tokens);
    KeyChain chain(ns);
    size_t at = 0;
    while (at < tokens.size()) {
      size_t n = std::min<size_t>(tokens.size() - at, rng() % (2 * block_size + 1));
      chain.Append(std::span<const uint32_t>(tokens).subspan(at, n));
      at += n;
      CHECK(chain.num_tokens() == at);
      CHECK(chain.keys().size() == at / block_size);
    }
    INFO("block size " << block_size);
    CHECK(chain.keys() == all);
    CHECK(chain.pending_tokens() == tokens.size() % block_size);
  }
}

TEST_CASE("AppendBlock: extra bytes change the key and bad use is rejected", "[core]") {
  Namespace ns = Make(DefaultSpec());
  const auto block = Iota(5, 16);
  KeyChain plain(ns), with_empty(ns), with_extra(ns);
  plain.Append(block);
  REQUIRE(with_empty.AppendBlock(block, {}).ok());
  std::vector<std::byte> extra{std::byte{0xAB}};
  REQUIRE(with_extra.AppendBlock(block, extra).ok());
  CHECK(plain.keys() == with_empty.keys());
  CHECK(plain.keys() != with_extra.keys());
  CHECK(ChainBlockKey(ns.id(), block, extra) == with_extra.keys()[0]);

  KeyChain c(ns);
  CHECK(c.AppendBlock(Iota(0, 15), {}).IsInvalidArgument());
  c.Append(Iota(0, 3));
  CHECK(c.AppendBlock(Iota(0, 16), {}).IsInvalidArgument());
  CHECK(c.keys().empty());
  CHECK(c.pending_tokens() == 3);
}

TEST_CASE("Namespace validation names the bad field", "[core]") {
  auto expect_invalid = [](NamespaceSpec s, const std::string& field) {
    auto ns = Namespace::Create(s);
    REQUIRE_FALSE(ns.ok());
    CHECK(ns.status().IsInvalidArgument());
    CHECK(std::string(ns.status().message()).find(field) != std::string::npos);
  };
  auto s = DefaultSpec();
  s.model_id.clear();
  expect_invalid(s, "model_id");
  s = DefaultSpec();
  s.block_size = 0;
  expect_invalid(s, "block_size");
  s = DefaultSpec();
  s.attention = AttentionKind::kMla;  // an MLA namespace has one latent "head"
  expect_invalid(s, "num_kv_heads");
  s = DefaultSpec();
  s.kv_dtype = static_cast<KvDtype>(99);
  expect_invalid(s, "kv_dtype");
  s = DefaultSpec();
  s.codec = static_cast<Codec>(99);
  expect_invalid(s, "codec");
  CHECK(Make(DefaultSpec()).block_bytes() == 2ull * 32 * 16 * 8 * 128 * 2);
}

TEST_CASE("BlockKey hex and byte forms round-trip", "[core]") {
  BlockKey k{0x0123456789abcdefULL, 0xfedcba9876543210ULL};
  CHECK(k.ToHex() == "0123456789abcdeffedcba9876543210");
  CHECK(BlockKey::FromHex(k.ToHex()) == k);
  CHECK(BlockKey::FromHex("0123456789ABCDEFFEDCBA9876543210") == k);
  CHECK_FALSE(BlockKey::FromHex("0123").has_value());
  CHECK_FALSE(BlockKey::FromHex("0123456789abcdeffedcba987654321g").has_value());
  CHECK(BlockKey::FromBytes(k.ToBytes()) == k);
  CHECK(static_cast<uint8_t>(k.ToBytes()[0]) == 0x01);
}

TEST_CASE("Keys are identical across separate processes", "[core][integration]") {
  // Two separate `strata keys` processes and this process must agree: the top failure of other
  // caches is keys that differ between processes (hash seeds, pointer hashing, locale).
  std::mt19937 rng(1234);
  std::string path = TempPath("tokens");
  std::vector<uint32_t> tokens(16 * 50 + 7);
  {
    std::ofstream f(path);
    for (size_t i = 0; i < tokens.size(); ++i) {
      tokens[i] = rng() % 128256;
      f << tokens[i] << (i % 10 == 9 ? "\n" : ", ");
    }
  }
  const std::string cmd = std::string(STRATA_CLI_PATH) + " keys --json --salt s1 --tokens " + path;
  std::string a = RunCommand(cmd);
  std::string b = RunCommand("env -i PYTHONHASHSEED=1 LANG=C " + cmd);
  std::remove(path.c_str());
  CHECK(a == b);
  auto j = nlohmann::json::parse(a);
  auto spec = DefaultSpec();
  spec.tenant_salt = "s1";
  Namespace ns = Make(spec);
  CHECK(j["namespace"] == ns.id().ToHex());
  CHECK(j["unkeyed_tail_tokens"] == 7);
  CHECK(j["keys"].get<std::vector<std::string>>() == Hex(ComputeBlockKeys(ns, tokens)));
}

}  // namespace
}  // namespace strata
