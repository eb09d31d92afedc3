// kernels/ is a leaf and carries its own copies of the codec and dtype ids; they are part of the
// on-disk/wire format and must equal lib/core's (strata/namespace.h).
#include <catch2/catch.hpp>

#include "strata/namespace.h"
#include "strata_kernels/codec.h"
#include "strata_kernels/kv_layout.h"

namespace strata::kernels {
namespace {

#define STRATA_SAME_ID(A, B) static_assert(static_cast<int>(A) == static_cast<int>(B), #A " != " #B)
STRATA_SAME_ID(Codec::kNone, strata::Codec::kNone);
STRATA_SAME_ID(Codec::kShuffleZstd, strata::Codec::kShuffleZstd);
STRATA_SAME_ID(Codec::kShuffleLz4, strata::Codec::kShuffleLz4);
STRATA_SAME_ID(Codec::kFp8E4M3, strata::Codec::kFp8E4M3);
STRATA_SAME_ID(Codec::kInt8Group, strata::Codec::kInt8Group);
STRATA_SAME_ID(Codec::kInt4Kivi, strata::Codec::kInt4Kivi);
STRATA_SAME_ID(KvDtype::kFloat16, strata::KvDtype::kFloat16);
STRATA_SAME_ID(KvDtype::kBFloat16, strata::KvDtype::kBFloat16);
STRATA_SAME_ID(KvDtype::kFloat8E4M3, strata::KvDtype::kFloat8E4M3);
STRATA_SAME_ID(KvDtype::kFloat8E5M2, strata::KvDtype::kFloat8E5M2);
STRATA_SAME_ID(KvDtype::kFloat32, strata::KvDtype::kFloat32);

TEST_CASE("codec and dtype names and ids agree with lib/core", "[kernels]") {
  for (int c = 0; c <= 5; ++c) {
    CHECK(CodecName(static_cast<Codec>(c)) == strata::CodecName(static_cast<strata::Codec>(c)));
  }
  for (int d = 1; d <= 5; ++d) {
    CHECK(KvDtypeName(static_cast<KvDtype>(d)) ==
          strata::KvDtypeName(static_cast<strata::KvDtype>(d)));
    CHECK(KvDtypeBytes(static_cast<KvDtype>(d)) ==
          strata::KvDtypeSize(static_cast<strata::KvDtype>(d)));
  }
}

TEST_CASE("Strata block bytes agree with Namespace::block_bytes", "[kernels]") {
  strata::NamespaceSpec spec;
  spec.model_id = "m";
  spec.kv_dtype = strata::KvDtype::kBFloat16;
  spec.num_layers = 32;
  spec.num_kv_heads = 8;
  spec.head_dim = 128;
  spec.block_size = 16;
  auto ns = strata::Namespace::Create(spec);
  REQUIRE(ns.ok());
  BlockShape shape{32, 2, 16, 8, 128, KvDtype::kBFloat16};
  CHECK(shape.bytes() == ns->block_bytes());
  spec.attention = strata::AttentionKind::kMla;
  spec.num_kv_heads = 1;
  spec.head_dim = 576;
  auto mla = strata::Namespace::Create(spec);
  REQUIRE(mla.ok());
  BlockShape mla_shape{32, 1, 16, 1, 576, KvDtype::kBFloat16};
  CHECK(mla_shape.bytes() == mla->block_bytes());
}

}  // namespace
}  // namespace strata::kernels
