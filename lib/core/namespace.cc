#include "strata/namespace.h"

#include <cstring>
#include <string>

#include "byte_order.h"
#include "xxh3.h"

namespace strata {
namespace {

constexpr char kNamespaceMagic[8] = {'S', 'T', 'R', 'A', 'T', 'A', 'N', 'S'};

struct DtypeEntry {
  KvDtype dtype;
  std::string_view name;
  size_t size;
};
constexpr DtypeEntry kDtypes[] = {
    {KvDtype::kFloat16, "fp16", 2},       {KvDtype::kBFloat16, "bf16", 2},
    {KvDtype::kFloat8E4M3, "fp8_e4m3", 1}, {KvDtype::kFloat8E5M2, "fp8_e5m2", 1},
    {KvDtype::kFloat32, "fp32", 4},
};

struct CodecEntry {
  Codec codec;
  std::string_view name;
};
constexpr CodecEntry kCodecs[] = {
    {Codec::kNone, "none"},         {Codec::kShuffleZstd, "shuffle_zstd"},
    {Codec::kShuffleLz4, "shuffle_lz4"}, {Codec::kFp8E4M3, "fp8_e4m3"},
    {Codec::kInt8Group, "int8_group"},   {Codec::kInt4Kivi, "int4_kivi"},
};

struct KeySchemeEntry {
  KeyScheme scheme;
  std::string_view name;
};
constexpr KeySchemeEntry kKeySchemes[] = {
    {KeyScheme::kStrata, "strata"},
    {KeyScheme::kVllmSha256Cbor, "vllm-sha256-cbor"},
    {KeyScheme::kVllmXxhashCbor, "vllm-xxhash-cbor"},
    {KeyScheme::kSglang, "sglang"},
};

class Encoder {
 public:
  template <typename T>
  void Put(T v) {
    size_t at = out_.size();
    out_.resize(at + sizeof(T));
    internal::StoreLE<T>(out_.data() + at, v);
  }
  void PutString(std::string_view s) {
    Put<uint32_t>(static_cast<uint32_t>(s.size()));
    const auto* p = reinterpret_cast<const std::byte*>(s.data());
    out_.insert(out_.end(), p, p + s.size());
  }
  void PutRaw(const char* p, size_t n) {
    const auto* b = reinterpret_cast<const std::byte*>(p);
    out_.insert(out_.end(), b, b + n);
  }
  std::vector<std::byte> Take() { return std::move(out_); }

 private:
  std::vector<std::byte> out_;
};

}  // namespace

std::string_view KvDtypeName(KvDtype dtype) {
  for (const auto& e : kDtypes)
    if (e.dtype == dtype) return e.name;
  return "unknown";
}

size_t KvDtypeSize(KvDtype dtype) {
  for (const auto& e : kDtypes)
    if (e.dtype == dtype) return e.size;
  return 0;
}

std::string_view CodecName(Codec codec) {
  for (const auto& e : kCodecs)
    if (e.codec == codec) return e.name;
  return "unknown";
}

std::string_view KeySchemeName(KeyScheme scheme) {
  for (const auto& e : kKeySchemes)
    if (e.scheme == scheme) return e.name;
  return "unknown";
}

Result<KeyScheme> ParseKeyScheme(std::string_view name) {
  for (const auto& e : kKeySchemes)
    if (e.name == name) return e.scheme;
  return Status::InvalidArgument(
      "unknown key scheme '" + std::string(name) +
      "' (expected strata, vllm-sha256-cbor, vllm-xxhash-cbor or sglang)");
}

Result<KvDtype> ParseKvDtype(std::string_view name) {
  for (const auto& e : kDtypes)
    if (e.name == name) return e.dtype;
  return Status::InvalidArgument("unknown KV dtype '" + std::string(name) +
                                 "' (expected fp16, bf16, fp8_e4m3, fp8_e5m2 or fp32)");
}

Result<Codec> ParseCodec(std::string_view name) {
  for (const auto& e : kCodecs)
    if (e.name == name) return e.codec;
  return Status::InvalidArgument(
      "unknown codec '" + std::string(name) +
      "' (expected none, shuffle_zstd, shuffle_lz4, fp8_e4m3, int8_group or int4_kivi)");
}

std::vector<std::byte> EncodeNamespace(const NamespaceSpec& spec) {
  // Layout drawn in docs/keys.md, "Namespace encoding".
  Encoder e;
  e.PutRaw(kNamespaceMagic, sizeof(kNamespaceMagic));
  e.Put<uint16_t>(kNamespaceEncodingVersion);
  e.Put<uint8_t>(static_cast<uint8_t>(spec.kv_dtype));
  e.Put<uint8_t>(static_cast<uint8_t>(spec.attention));
  e.Put<uint16_t>(static_cast<uint16_t>(spec.codec));
  e.Put<uint16_t>(static_cast<uint16_t>(spec.key_scheme));
  e.Put<uint32_t>(spec.num_layers);
  e.Put<uint32_t>(spec.num_kv_heads);
  e.Put<uint32_t>(spec.head_dim);
  e.Put<uint32_t>(spec.block_size);
  e.PutString(spec.model_id);
  e.PutString(spec.model_revision);
  e.PutString(spec.lora_id);
  e.PutString(spec.tenant_salt);
  e.PutString(spec.hash_seed);
  return e.Take();
}

namespace {

// Reads the fields EncodeNamespace writes, in its order.
class Decoder {
 public:
  explicit Decoder(std::span<const std::byte> in) : in_(in) {}
  template <typename T>
  bool Get(T* v) {
    if (in_.size() - at_ < sizeof(T)) return false;
    *v = internal::LoadLE<T>(in_.data() + at_);
    at_ += sizeof(T);
    return true;
  }
  bool GetString(std::string* s) {
    uint32_t n = 0;
    if (!Get(&n) || in_.size() - at_ < n) return false;
    s->assign(reinterpret_cast<const char*>(in_.data() + at_), n);
    at_ += n;
    return true;
  }
  bool done() const { return at_ == in_.size(); }

 private:
  std::span<const std::byte> in_;
  size_t at_ = 0;
};

}  // namespace

Result<NamespaceSpec> DecodeNamespace(std::span<const std::byte> encoding) {
  if (encoding.size() < sizeof(kNamespaceMagic) ||
      std::memcmp(encoding.data(), kNamespaceMagic, sizeof(kNamespaceMagic)) != 0)
    return Status::InvalidArgument("namespace encoding: no STRATANS magic");
  Decoder d(encoding.subspan(sizeof(kNamespaceMagic)));
  NamespaceSpec spec;
  uint16_t version = 0, codec = 0, scheme = 0;
  uint8_t dtype = 0, attention = 0;
  if (!d.Get(&version)) return Status::InvalidArgument("namespace encoding: truncated");
  if (version != kNamespaceEncodingVersion)
    return Status::InvalidArgument("namespace encoding: version " + std::to_string(version) +
                                   ", expected " + std::to_string(kNamespaceEncodingVersion));
  const bool ok = d.Get(&dtype) && d.Get(&attention) && d.Get(&codec) && d.Get(&scheme) &&
                  d.Get(&spec.num_layers) && d.Get(&spec.num_kv_heads) &&
                  d.Get(&spec.head_dim) && d.Get(&spec.block_size) &&
                  d.GetString(&spec.model_id) && d.GetString(&spec.model_revision) &&
                  d.GetString(&spec.lora_id) && d.GetString(&spec.tenant_salt) &&
                  d.GetString(&spec.hash_seed);
  if (!ok) return Status::InvalidArgument("namespace encoding: truncated");
  if (!d.done()) return Status::InvalidArgument("namespace encoding: trailing bytes");
  spec.kv_dtype = static_cast<KvDtype>(dtype);
  spec.attention = static_cast<AttentionKind>(attention);
  spec.codec = static_cast<Codec>(codec);
  spec.key_scheme = static_cast<KeyScheme>(scheme);
  return spec;
}

namespace {

// The seed the keys of `spec` use: the vllm-sha256-cbor default applied.
std::string_view EffectiveSeed(const NamespaceSpec& spec) {
  if (spec.key_scheme == KeyScheme::kVllmSha256Cbor && spec.hash_seed.empty())
    return kVllmDefaultHashSeed;
  return spec.hash_seed;
}

}  // namespace

std::vector<std::string> FingerprintDifferences(const NamespaceSpec& ours,
                                                const NamespaceSpec& theirs) {
  std::vector<std::string> out;
  auto add = [&out](std::string_view field, std::string a, std::string b) {
    if (a != b) out.push_back(std::string(field) + ": '" + a + "' vs '" + b + "'");
  };
  auto num = [](auto v) { return std::to_string(static_cast<uint64_t>(v)); };
  add("model_id", ours.model_id, theirs.model_id);
  add("model_revision", ours.model_revision, theirs.model_revision);
  add("kv_dtype", std::string(KvDtypeName(ours.kv_dtype)),
      std::string(KvDtypeName(theirs.kv_dtype)));
  add("attention", ours.attention == AttentionKind::kMla ? "mla" : "kv",
      theirs.attention == AttentionKind::kMla ? "mla" : "kv");
  add("num_layers", num(ours.num_layers), num(theirs.num_layers));
  add("num_kv_heads", num(ours.num_kv_heads), num(theirs.num_kv_heads));
  add("head_dim", num(ours.head_dim), num(theirs.head_dim));
  add("block_size", num(ours.block_size), num(theirs.block_size));
  add("codec", std::string(CodecName(ours.codec)), std::string(CodecName(theirs.codec)));
  add("lora_id", ours.lora_id, theirs.lora_id);
  add("tenant_salt", ours.tenant_salt, theirs.tenant_salt);
  add("key_scheme", std::string(KeySchemeName(ours.key_scheme)),
      std::string(KeySchemeName(theirs.key_scheme)));
  add("hash_seed", std::string(EffectiveSeed(ours)), std::string(EffectiveSeed(theirs)));
  return out;
}

Result<Namespace> Namespace::Create(NamespaceSpec spec) {
  if (spec.model_id.empty()) return Status::InvalidArgument("namespace: model_id is empty");
  if (KvDtypeSize(spec.kv_dtype) == 0)
    return Status::InvalidArgument("namespace: unknown kv_dtype value " +
                                   std::to_string(static_cast<int>(spec.kv_dtype)));
  if (spec.attention != AttentionKind::kKeyValue && spec.attention != AttentionKind::kMla)
    return Status::InvalidArgument("namespace: unknown attention kind");
  if (CodecName(spec.codec) == "unknown")
    return Status::InvalidArgument("namespace: unknown codec value " +
                                   std::to_string(static_cast<int>(spec.codec)));
  if (spec.num_layers == 0) return Status::InvalidArgument("namespace: num_layers must be > 0");
  if (spec.num_kv_heads == 0) return Status::InvalidArgument("namespace: num_kv_heads must be > 0");
  if (spec.head_dim == 0) return Status::InvalidArgument("namespace: head_dim must be > 0");
  if (spec.block_size == 0) return Status::InvalidArgument("namespace: block_size must be > 0");
  if (spec.attention == AttentionKind::kMla && spec.num_kv_heads != 1)
    return Status::InvalidArgument("namespace: an MLA namespace has num_kv_heads 1");
  if (KeySchemeName(spec.key_scheme) == "unknown")
    return Status::InvalidArgument("namespace: unknown key_scheme value " +
                                   std::to_string(static_cast<int>(spec.key_scheme)));
  if ((spec.key_scheme == KeyScheme::kStrata || spec.key_scheme == KeyScheme::kSglang) &&
      !spec.hash_seed.empty())
    return Status::InvalidArgument("namespace: key_scheme " +
                                   std::string(KeySchemeName(spec.key_scheme)) +
                                   " has no seed; hash_seed must be empty");
  if (spec.key_scheme == KeyScheme::kVllmXxhashCbor && spec.hash_seed.empty())
    return Status::InvalidArgument(
        "namespace: key_scheme vllm-xxhash-cbor needs hash_seed (the engine's PYTHONHASHSEED): "
        "without one vLLM draws a random root hash per process, which no other process matches");
  spec.hash_seed = std::string(EffectiveSeed(spec));
  // block_bytes() is a product of five 32-bit fields: it could wrap in 64 bits, and no pool
  // holds a block above kMaxBlockBytes. Checked here so block_bytes() never overflows.
  const uint64_t planes = spec.attention == AttentionKind::kMla ? 1 : 2;
  uint64_t bytes = planes * KvDtypeSize(spec.kv_dtype);
  bool overflow = false;
  for (uint64_t f : {uint64_t{spec.num_layers}, uint64_t{spec.block_size},
                     uint64_t{spec.num_kv_heads}, uint64_t{spec.head_dim}})
    overflow |= __builtin_mul_overflow(bytes, f, &bytes);
  if (overflow || bytes > kMaxBlockBytes)
    return Status::InvalidArgument(
        "namespace: a block of " + std::to_string(planes) + " planes x num_layers " +
        std::to_string(spec.num_layers) + " x block_size " + std::to_string(spec.block_size) +
        " x num_kv_heads " + std::to_string(spec.num_kv_heads) + " x head_dim " +
        std::to_string(spec.head_dim) + " x " + std::to_string(KvDtypeSize(spec.kv_dtype)) +
        "-byte kv_dtype " + (overflow ? std::string("overflows 64 bits")
                                      : "is " + std::to_string(bytes) + " bytes") +
        "; the largest block is 4 GiB");
  Namespace ns;
  ns.encoding_ = EncodeNamespace(spec);
  ns.id_ = internal::Xxh3_128(ns.encoding_.data(), ns.encoding_.size());
  ns.spec_ = std::move(spec);
  return ns;
}

uint64_t Namespace::block_bytes() const {
  uint64_t planes = spec_.attention == AttentionKind::kMla ? 1 : 2;
  return planes * spec_.num_layers * spec_.block_size * spec_.num_kv_heads * spec_.head_dim *
         KvDtypeSize(spec_.kv_dtype);
}

}  // namespace strata
