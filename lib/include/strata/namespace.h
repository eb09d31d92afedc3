// Namespace: everything that makes KV bytes incompatible, fingerprinted into a 128-bit id.
// Two requests share cached blocks only when their namespaces have equal fingerprints.
//
// The canonical encoding that is hashed is drawn in docs/keys.md; equal specs give equal
// fingerprints on every host, process, restart and build. Changing the encoding is a format break
// and bumps kNamespaceEncodingVersion.
//
// Thread-safety: a Namespace is immutable after Create() and may be shared across threads.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "strata/block_key.h"
#include "strata/result.h"

namespace strata {

// Element type of the engine's KV cache. Values are part of the on-disk/wire format: never reuse.
enum class KvDtype : uint8_t {
  kFloat16 = 1,
  kBFloat16 = 2,
  kFloat8E4M3 = 3,
  kFloat8E5M2 = 4,
  kFloat32 = 5,
};

// How attention stores KV: separate K and V planes (MHA/GQA/MQA), or one latent (MLA).
enum class AttentionKind : uint8_t {
  kKeyValue = 1,
  kMla = 2,
};

// Block payload codec. Values are part of the on-disk/wire format: never reuse.
enum class Codec : uint16_t {
  kNone = 0,          // raw KV bytes in the Strata block layout
  kShuffleZstd = 1,   // lossless: byte-plane shuffle + zstd
  kShuffleLz4 = 2,    // lossless: byte-plane shuffle + lz4
  kFp8E4M3 = 3,       // lossy: FP8 e4m3 with per-block scales
  kInt8Group = 4,     // lossy: INT8 per-token-group
  kInt4Kivi = 5,      // lossy: INT4, per-channel keys, per-token values (KIVI)
};

// How block keys are computed from tokens (docs/keys.md, "Key schemes"). The engine schemes
// reproduce a serving engine's own block hash, so that Strata, the engine, its KV events and the
// routers above it name a prefix with the same hash. Values are part of the namespace encoding:
// never reuse.
enum class KeyScheme : uint16_t {
  kStrata = 0,          // "strata": the XXH3-128 chain of docs/keys.md
  kVllmSha256Cbor = 1,  // "vllm-sha256-cbor": vLLM --prefix-caching-hash-algo sha256_cbor
  kVllmXxhashCbor = 2,  // "vllm-xxhash-cbor": vLLM --prefix-caching-hash-algo xxhash_cbor
  kSglang = 3,          // "sglang": SGLang HiCache's chained SHA-256 page hash
};

// vLLM's NONE_HASH seed when PYTHONHASHSEED is unset and the algorithm is cryptographic
// (vllm/v1/core/kv_cache_utils.py, DEFAULT_NONE_HASH_SEED).
inline constexpr std::string_view kVllmDefaultHashSeed = "vllm-none-hash";

std::string_view KvDtypeName(KvDtype dtype);
std::string_view CodecName(Codec codec);
std::string_view KeySchemeName(KeyScheme scheme);
// Parse the names above ("fp16", "bf16", "fp8_e4m3", "fp8_e5m2", "fp32"; "none", "shuffle_zstd",
// ...). InvalidArgument on an unknown name.
Result<KvDtype> ParseKvDtype(std::string_view name);
Result<Codec> ParseCodec(std::string_view name);
// "strata", "vllm-sha256-cbor", "vllm-xxhash-cbor" or "sglang".
Result<KeyScheme> ParseKeyScheme(std::string_view name);
// Bytes per element of `dtype`.
size_t KvDtypeSize(KvDtype dtype);

struct NamespaceSpec {
  std::string model_id;        // e.g. "meta-llama/Llama-3.1-8B-Instruct"
  std::string model_revision;  // e.g. a git sha of the weights. Default: "" (unspecified).
  KvDtype kv_dtype = KvDtype::kBFloat16;  // Default: bf16 (in C++, C, Python and the CLI)
  AttentionKind attention = AttentionKind::kKeyValue;
  uint32_t num_layers = 0;    // REQUIRES: > 0
  uint32_t num_kv_heads = 0;  // the model's KV heads (all ranks together); 1 for MLA. REQUIRES: > 0
  uint32_t head_dim = 0;      // per-head dim; the latent dim for MLA. REQUIRES: > 0
  uint32_t block_size = 16;   // tokens per block. Default: 16 (vLLM). REQUIRES: > 0
  Codec codec = Codec::kNone;
  std::string lora_id;      // adapter id; "" for the base model
  std::string tenant_salt;  // isolates tenants: blocks never match across salts. Default: ""
  // How keys are computed. For the vLLM schemes lora_id is vLLM's LoRA name (an extra key of
  // every block) and tenant_salt its cache_salt (an extra key of the first block), so that a
  // request's namespace carries exactly what vLLM folds into its hashes. Default: kStrata.
  KeyScheme key_scheme = KeyScheme::kStrata;
  // The seed of the chain's root. vLLM schemes: the string vLLM derives NONE_HASH from (its
  // PYTHONHASHSEED); "" means kVllmDefaultHashSeed for vllm-sha256-cbor, and is refused for
  // vllm-xxhash-cbor, whose unseeded vLLM draws a random root per process. Must be "" for the
  // strata and sglang schemes, which have no seed. Default: "".
  std::string hash_seed;
};

inline constexpr uint16_t kNamespaceEncodingVersion = 3;

class Namespace {
 public:
  // The largest block_bytes() a namespace may have: 4 GiB.
  static constexpr uint64_t kMaxBlockBytes = uint64_t{4} << 30;

  // Validates `spec` and computes its fingerprint. InvalidArgument names the bad field; a spec
  // whose block_bytes() would exceed kMaxBlockBytes (or overflow) names the fields multiplied.
  // A vllm-sha256-cbor spec with an empty hash_seed gets kVllmDefaultHashSeed: spec() shows the
  // seed that the keys use.
  static Result<Namespace> Create(NamespaceSpec spec);

  const NamespaceSpec& spec() const { return spec_; }
  const NamespaceId& id() const { return id_; }
  uint32_t block_size() const { return spec_.block_size; }
  // The canonical bytes that id() hashes (docs/keys.md).
  const std::vector<std::byte>& encoding() const { return encoding_; }
  // Bytes of one uncompressed block of KV of every head: planes x layers x block_size x heads x
  // head_dim x dtype size (planes = 2 for K/V, 1 for MLA). The paged API stores a block as one
  // shard per KV head, each block_bytes() / num_kv_heads (MLA: one shard of block_bytes()).
  uint64_t block_bytes() const;

 private:
  Namespace() = default;
  NamespaceSpec spec_;
  std::vector<std::byte> encoding_;
  NamespaceId id_;
};

// The canonical encoding of `spec` (no validation). Exposed for tests and tools.
std::vector<std::byte> EncodeNamespace(const NamespaceSpec& spec);
// The spec an encoding was made of (no validation: Namespace::Create checks the fields).
// InvalidArgument for bytes that are not an encoding of this version: wrong magic or version,
// truncated, trailing bytes. The daemon reads a client's namespace with it (its tenant salt).
Result<NamespaceSpec> DecodeNamespace(std::span<const std::byte> encoding);

// The fingerprint fields in which `ours` and `theirs` differ, as "field: ours vs theirs" lines
// (empty when they agree): model_id, model_revision, kv_dtype, attention, num_layers,
// num_kv_heads, head_dim, block_size, codec, lora_id, tenant_salt, key_scheme, hash_seed (seeds
// compared after the scheme's default is applied). An adapter compares the namespace it was
// configured with against what its engine announces and reports a mismatch, never silent misses.
std::vector<std::string> FingerprintDifferences(const NamespaceSpec& ours,
                                                const NamespaceSpec& theirs);

}  // namespace strata
