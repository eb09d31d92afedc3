// Engine key schemes (strata/engine_keys.h, docs/keys.md "Key schemes"): the canonical CBOR
// encoder against RFC 8949 Appendix A, SHA-256 against FIPS 180-2, the vLLM and SGLang chains
// against vectors computed with cbor2 + hashlib + xxhash (tests/tools/engine_keys_test.py checks
// many more through the CLI), namespace validation of scheme and seed, and fingerprint comparison.
#include "strata/engine_keys.h"

#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "cbor.h"
#include "sha256.h"
#include "strata/key_chain.h"

namespace strata {
namespace {

std::string Hex(const std::vector<std::byte>& b) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string s;
  for (std::byte x : b) {
    s.push_back(kDigits[static_cast<uint8_t>(x) >> 4]);
    s.push_back(kDigits[static_cast<uint8_t>(x) & 15]);
  }
  return s;
}

template <typename F>
std::string Cbor(F&& write) {
  std::vector<std::byte> out;
  internal::CborWriter w(out);
  write(w);
  return Hex(out);
}

NamespaceSpec Spec(KeyScheme scheme, std::string seed = "") {
  NamespaceSpec s;
  s.model_id = "meta-llama/Llama-3.1-8B-Instruct";
  s.num_layers = 32;
  s.num_kv_heads = 8;
  s.head_dim = 128;
  s.block_size = 16;
  s.key_scheme = scheme;
  s.hash_seed = std::move(seed);
  return s;
}

Namespace Make(const NamespaceSpec& s) {
  auto ns = Namespace::Create(s);
  INFO(ns.status().ToString());
  REQUIRE(ns.ok());
  return std::move(ns).value();
}

std::vector<uint32_t> Iota(uint32_t from, uint32_t n) {
  std::vector<uint32_t> t(n);
  for (uint32_t i = 0; i < n; ++i) t[i] = from + i;
  return t;
}

std::vector<std::string> HashHex(const SchemeKeys& k) {
  std::vector<std::string> out;
  for (const auto& h : k.hashes) out.push_back(h.ToHex());
  return out;
}

TEST_CASE("CBOR encoder: RFC 8949 Appendix A vectors, shortest heads", "[core]") {
  using W = internal::CborWriter;
  CHECK(Cbor([](W& w) { w.Uint(0); }) == "00");
  CHECK(Cbor([](W& w) { w.Uint(23); }) == "17");
  CHECK(Cbor([](W& w) { w.Uint(24); }) == "1818");
  CHECK(Cbor([](W& w) { w.Uint(255); }) == "18ff");
  CHECK(Cbor([](W& w) { w.Uint(256); }) == "190100");
  CHECK(Cbor([](W& w) { w.Uint(65535); }) == "19ffff");
  CHECK(Cbor([](W& w) { w.Uint(65536); }) == "1a00010000");
  CHECK(Cbor([](W& w) { w.Uint(1000000); }) == "1a000f4240");
  CHECK(Cbor([](W& w) { w.Uint(4294967295u); }) == "1affffffff");
  CHECK(Cbor([](W& w) { w.Uint(4294967296u); }) == "1b0000000100000000");
  CHECK(Cbor([](W& w) { w.Uint(UINT64_MAX); }) == "1bffffffffffffffff");
  CHECK(Cbor([](W& w) { w.Int(-1); }) == "20");
  CHECK(Cbor([](W& w) { w.Int(-10); }) == "29");
  CHECK(Cbor([](W& w) { w.Int(-100); }) == "3863");
  CHECK(Cbor([](W& w) { w.Int(-1000); }) == "3903e7");
  CHECK(Cbor([](W& w) { w.Int(INT64_MIN); }) == "3b7fffffffffffffff");
  CHECK(Cbor([](W& w) { w.Int(7); }) == "07");
  CHECK(Cbor([](W& w) { w.Bytes({}); }) == "40");
  const std::vector<std::byte> four{std::byte{1}, std::byte{2}, std::byte{3}, std::byte{4}};
  CHECK(Cbor([&](W& w) { w.Bytes(four); }) == "4401020304");
  CHECK(Cbor([](W& w) { w.Text(""); }) == "60");
  CHECK(Cbor([](W& w) { w.Text("a"); }) == "6161");
  CHECK(Cbor([](W& w) { w.Text("IETF"); }) == "6449455446");
  CHECK(Cbor([](W& w) { w.Text("\xc3\xbc"); }) == "62c3bc");  // "ü"
  CHECK(Cbor([](W& w) { w.Text(std::string(24, 'x')); }).substr(0, 4) == "7818");
  CHECK(Cbor([](W& w) { w.Null(); }) == "f6");
  CHECK(Cbor([](W& w) { w.ArrayHeader(0); }) == "80");
  CHECK(Cbor([](W& w) {
          w.ArrayHeader(3);
          w.Uint(1);
          w.ArrayHeader(2);
          w.Uint(2);
          w.Uint(3);
          w.ArrayHeader(2);
          w.Uint(4);
          w.Uint(5);
        }) == "8301820203820405");
  CHECK(Cbor([](W& w) {
          w.ArrayHeader(25);
          for (int i = 1; i <= 25; ++i) w.Uint(i);
        }).substr(0, 6) == "981901");
  // cbor2.dumps(('a', (1, 2), None), canonical=True)
  CHECK(Cbor([](W& w) {
          w.ArrayHeader(3);
          w.Text("a");
          w.ArrayHeader(2);
          w.Uint(1);
          w.Uint(2);
          w.Null();
        }) == "836161820102f6");
}

TEST_CASE("SHA-256 (libcrypto): FIPS 180-2 vectors", "[core]") {
  auto hex = [](std::string_view s) {
    const auto d = internal::Sha256({reinterpret_cast<const std::byte*>(s.data()), s.size()});
    return Hex(std::vector<std::byte>(d.begin(), d.end()));
  };
  CHECK(hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

// Vectors computed with Debian's python3-cbor2 5.4.6, hashlib and python3-xxhash 3.2.0:
//   sha = lambda o: hashlib.sha256(cbor2.dumps(o, canonical=True)).digest()
//   root = sha("vllm-none-hash"); h0 = sha((root, tuple(range(16)), None)); ...
TEST_CASE("vllm-sha256-cbor: vLLM's chain with the default seed", "[core]") {
  Namespace ns = Make(Spec(KeyScheme::kVllmSha256Cbor));
  CHECK(ns.spec().hash_seed == "vllm-none-hash");
  CHECK(EngineRootHash(ns).ToHex() ==
        "9bd96a485ad84efdafb72ee48a1d7a69bcead0f8f0433173941b276b9581eef0");
  auto k = ComputeSchemeKeys(ns, Iota(0, 40));
  REQUIRE(k.ok());
  CHECK(HashHex(*k) ==
        std::vector<std::string>{
            "dc918a88b139e5afe60b88eda27508d4aee16c10fdc354791efea06206ac0749",
            "c300ec275d7bf08af8fc63e76cdc0086911bbc7091e03c5cf892553bef84ef0c"});
  // The Strata key is XXH3-128(ns_id || engine hash) under the namespace's tag (docs/keys.md's
  // `strata keys` example), and ComputeBlockKeys follows the scheme.
  REQUIRE(k->keys.size() == 2);
  CHECK(k->keys[1] == KeyOfEngineHash(ns.id(), k->hashes[1]));
  CHECK(ComputeBlockKeys(ns, Iota(0, 40)) == k->keys);
  for (const BlockKey& key : k->keys) CHECK(KeyInNamespace(key, ns.id()));
  // An explicit "vllm-none-hash" is the same namespace as the default.
  CHECK(Make(Spec(KeyScheme::kVllmSha256Cbor, "vllm-none-hash")).id() == ns.id());
}

TEST_CASE("vllm-xxhash-cbor: LoRA, multimodal item and cache_salt extra keys", "[core]") {
  auto s = Spec(KeyScheme::kVllmXxhashCbor, "0");
  s.lora_id = "sql";
  s.tenant_salt = "abc";
  Namespace ns = Make(s);
  CHECK(EngineRootHash(ns).ToHex() == "1ebe36576dcb573f26b99533a20aaeca");
  const std::vector<MultimodalItem> mm{{"img1", 3, 20}};
  auto k = ComputeSchemeKeys(ns, Iota(0, 40), mm);
  REQUIRE(k.ok());
  // xx((root, t[0:16], ('sql', ('img1', 3), 'abc'))), xx((h0, t[16:32], ('sql', ('img1', -13))))
  CHECK(HashHex(*k) == std::vector<std::string>{"fc4e202c38b08235165ba1a58329ddb4",
                                                "9e4d6a9ae30d1c124da6656ad4f28b23"});
}

TEST_CASE("sglang: chained SHA-256 over LE32 tokens, first page without a parent", "[core]") {
  Namespace ns = Make(Spec(KeyScheme::kSglang));
  CHECK(EngineRootHash(ns).size == 0);
  auto k = ComputeSchemeKeys(ns, Iota(0, 40));
  REQUIRE(k.ok());
  CHECK(HashHex(*k) ==
        std::vector<std::string>{
            "5d85718ec594b982c252d0279e5966ffca33a5eaf2a455038d3ab331fde70cea",
            "4681c0107c38f402cd1bc30b0b09a65202dba31f98269d9d7f63f5e0dea6901a"});
}

TEST_CASE("Engine schemes: KeyChain appends equal the one-shot keys", "[core]") {
  for (KeyScheme scheme :
       {KeyScheme::kVllmSha256Cbor, KeyScheme::kVllmXxhashCbor, KeyScheme::kSglang}) {
    auto s = Spec(scheme, scheme == KeyScheme::kVllmXxhashCbor ? "42" : "");
    s.tenant_salt = scheme == KeyScheme::kSglang ? "" : "salt";
    Namespace ns = Make(s);
    const auto tokens = Iota(1000, 16 * 5 + 3);
    auto all = ComputeSchemeKeys(ns, tokens);
    REQUIRE(all.ok());
    KeyChain chain(ns);
    chain.Append(std::span(tokens).first(7));
    chain.Append(std::span(tokens).subspan(7, 30));
    REQUIRE(chain.AppendBlock(std::span(tokens).subspan(37, 16), {}).ok() == false);  // pending
    chain.Append(std::span(tokens).subspan(37));
    INFO(KeySchemeName(scheme));
    CHECK(chain.keys() == all->keys);
    CHECK(chain.engine_hashes() == all->hashes);
    CHECK(chain.pending_tokens() == 3);
    // Extra bytes belong to the strata scheme only.
    KeyChain fresh(ns);
    const std::vector<std::byte> extra{std::byte{1}};
    CHECK(fresh.AppendBlock(std::span(tokens).first(16), extra).IsInvalidArgument());
    REQUIRE(fresh.AppendBlock(std::span(tokens).first(16), {}).ok());
    CHECK(fresh.keys().front() == all->keys.front());
  }
}

TEST_CASE("Engine schemes: namespaces differ by scheme, seed and model, hashes only by seed",
          "[core]") {
  Namespace a = Make(Spec(KeyScheme::kVllmSha256Cbor));
  Namespace b = Make(Spec(KeyScheme::kVllmSha256Cbor, "1"));
  auto other_model = Spec(KeyScheme::kVllmSha256Cbor);
  other_model.model_id = "Qwen/Qwen3-8B";
  Namespace c = Make(other_model);
  Namespace strata = Make(Spec(KeyScheme::kStrata));
  CHECK(a.id() != b.id());
  CHECK(a.id() != c.id());
  CHECK(a.id() != strata.id());
  const auto tokens = Iota(5, 32);
  auto ka = ComputeSchemeKeys(a, tokens), kb = ComputeSchemeKeys(b, tokens),
       kc = ComputeSchemeKeys(c, tokens);
  REQUIRE((ka.ok() && kb.ok() && kc.ok()));
  CHECK(ka->hashes != kb->hashes);
  // vLLM's hash does not name the model; the Strata key does, so a shared store keeps them apart.
  CHECK(ka->hashes == kc->hashes);
  CHECK(ka->keys[0] != kc->keys[0]);
}

TEST_CASE("Namespace: key scheme and seed validation", "[core]") {
  CHECK(ParseKeyScheme("vllm-sha256-cbor").value() == KeyScheme::kVllmSha256Cbor);
  CHECK(ParseKeyScheme("sglang").value() == KeyScheme::kSglang);
  CHECK(ParseKeyScheme("sha256_cbor").status().IsInvalidArgument());
  CHECK(KeySchemeName(KeyScheme::kVllmXxhashCbor) == "vllm-xxhash-cbor");
  auto xx = Namespace::Create(Spec(KeyScheme::kVllmXxhashCbor));
  REQUIRE_FALSE(xx.ok());
  CHECK(std::string(xx.status().message()).find("PYTHONHASHSEED") != std::string::npos);
  CHECK(Namespace::Create(Spec(KeyScheme::kStrata, "x")).status().IsInvalidArgument());
  CHECK(Namespace::Create(Spec(KeyScheme::kSglang, "x")).status().IsInvalidArgument());
  auto bad = Spec(KeyScheme::kStrata);
  bad.key_scheme = static_cast<KeyScheme>(77);
  CHECK(Namespace::Create(bad).status().IsInvalidArgument());
  // The scheme sits at bytes [14, 16) of the version-3 encoding.
  Namespace sg = Make(Spec(KeyScheme::kSglang));
  CHECK(sg.encoding()[8] == std::byte{3});
  CHECK(sg.encoding()[14] == std::byte{3});
  CHECK(sg.encoding()[15] == std::byte{0});
  // Multimodal items: vLLM schemes only, sorted by offset.
  const std::vector<MultimodalItem> mm{{"a", 0, 4}};
  CHECK(ComputeSchemeKeys(sg, Iota(0, 16), mm).status().IsInvalidArgument());
  Namespace v = Make(Spec(KeyScheme::kVllmSha256Cbor));
  const std::vector<MultimodalItem> unsorted{{"a", 8, 2}, {"b", 1, 2}};
  CHECK(ComputeSchemeKeys(v, Iota(0, 16), unsorted).status().IsInvalidArgument());
}

TEST_CASE("FingerprintDifferences names every differing field, seeds after defaults", "[core]") {
  auto ours = Spec(KeyScheme::kVllmSha256Cbor);
  auto theirs = ours;
  CHECK(FingerprintDifferences(ours, theirs).empty());
  theirs.hash_seed = "vllm-none-hash";  // the default spelled out
  CHECK(FingerprintDifferences(ours, theirs).empty());
  theirs.key_scheme = KeyScheme::kVllmXxhashCbor;
  theirs.hash_seed = "0";
  theirs.block_size = 32;
  theirs.kv_dtype = KvDtype::kFloat8E4M3;
  const auto diff = FingerprintDifferences(ours, theirs);
  CHECK(diff == std::vector<std::string>{"kv_dtype: 'bf16' vs 'fp8_e4m3'",
                                         "block_size: '16' vs '32'",
                                         "key_scheme: 'vllm-sha256-cbor' vs 'vllm-xxhash-cbor'",
                                         "hash_seed: 'vllm-none-hash' vs '0'"});
}

}  // namespace
}  // namespace strata
