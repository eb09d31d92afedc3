// Namespace::Create refuses a spec whose block would exceed 4 GiB or whose block_bytes() product
// of five 32-bit fields would wrap in 64 bits (issue 14: size arithmetic cannot overflow
// silently), naming the fields; the largest allowed block is still accepted.
#include "strata/namespace.h"

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

namespace strata {
namespace {

NamespaceSpec Spec(uint32_t layers, uint32_t block_size, uint32_t heads, uint32_t head_dim) {
  NamespaceSpec s;
  s.model_id = "test/overflow";
  s.kv_dtype = KvDtype::kBFloat16;
  s.num_layers = layers;
  s.block_size = block_size;
  s.num_kv_heads = heads;
  s.head_dim = head_dim;
  return s;
}

void ExpectRefused(const NamespaceSpec& s, const std::string& says) {
  auto ns = Namespace::Create(s);
  REQUIRE_FALSE(ns.ok());
  CHECK(ns.status().IsInvalidArgument());
  const std::string msg(ns.status().message());
  INFO(msg);
  for (const char* field : {"num_layers", "block_size", "num_kv_heads", "head_dim", "kv_dtype"})
    CHECK(msg.find(field) != std::string::npos);
  CHECK(msg.find(says) != std::string::npos);
}

TEST_CASE("Namespace: block bytes that wrap 64 bits are refused, naming the fields", "[core]") {
  // 2 x 2 x 2^32-1 ^ 4 wraps: block_bytes() used to return the wrapped product.
  ExpectRefused(Spec(UINT32_MAX, UINT32_MAX, UINT32_MAX, UINT32_MAX), "overflows 64 bits");
  // 2^16 each: 2 x 2 x 2^64 wraps to 0 in 64 bits.
  ExpectRefused(Spec(65536, 65536, 65536, 65536), "overflows 64 bits");
}

TEST_CASE("Namespace: a block above 4 GiB is refused, 4 GiB exactly is accepted", "[core]") {
  // 2 planes x 2 bytes x 1024 layers x 1024 tokens x 2 heads x 512 dims = 4 GiB.
  auto at_limit = Namespace::Create(Spec(1024, 1024, 2, 512));
  REQUIRE(at_limit.ok());
  CHECK(at_limit->block_bytes() == Namespace::kMaxBlockBytes);
  ExpectRefused(Spec(1024, 1024, 2, 513), "is 4303355904 bytes");
  // MLA has one plane: twice the heads' worth fits.
  NamespaceSpec mla = Spec(1024, 2048, 1, 1024);
  mla.attention = AttentionKind::kMla;
  auto m = Namespace::Create(mla);
  REQUIRE(m.ok());
  CHECK(m->block_bytes() == Namespace::kMaxBlockBytes);
}

TEST_CASE("Namespace: an encoding decodes back to its spec, anything else is refused", "[core]") {
  NamespaceSpec s = Spec(2, 4, 64, 16);
  s.model_revision = "rev";
  s.lora_id = "lora";
  s.tenant_salt = "tenant-a";
  s.codec = Codec::kShuffleLz4;
  s.key_scheme = KeyScheme::kVllmXxhashCbor;
  s.hash_seed = "42";
  auto ns = Namespace::Create(s);
  REQUIRE(ns.ok());
  auto back = DecodeNamespace(ns->encoding());
  REQUIRE(back.ok());
  CHECK(FingerprintDifferences(*back, ns->spec()).empty());
  auto again = Namespace::Create(*back);
  REQUIRE(again.ok());
  CHECK(again->id() == ns->id());
  std::vector<std::byte> e = ns->encoding();
  CHECK(DecodeNamespace(std::span(e).first(e.size() - 1)).status().IsInvalidArgument());
  e.push_back(std::byte{0});
  CHECK(DecodeNamespace(e).status().IsInvalidArgument());
  e = ns->encoding();
  e[0] = std::byte{'X'};
  CHECK(DecodeNamespace(e).status().IsInvalidArgument());
  e = ns->encoding();
  e[8] = std::byte{99};  // version
  CHECK(DecodeNamespace(e).status().IsInvalidArgument());
  CHECK(DecodeNamespace({}).status().IsInvalidArgument());
}

}  // namespace
}  // namespace strata
