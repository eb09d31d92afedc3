#include "namespace_flags.h"

#include "command_registry.h"

namespace strata::cli {

void NamespaceFlags::AddTo(CLI::App& cmd) {
  cmd.add_option("--model", model, "Model id")->capture_default_str();
  cmd.add_option("--revision", revision, "Model revision (weights sha)");
  cmd.add_option("--dtype", dtype, "KV dtype: fp16, bf16, fp8_e4m3, fp8_e5m2, fp32")
      ->capture_default_str();
  cmd.add_flag("--mla", mla, "Multi-head latent attention (one latent plane instead of K and V)");
  cmd.add_option("--layers", layers, "Number of layers")->capture_default_str();
  cmd.add_option("--kv-heads", kv_heads, "KV heads of the model (all tensor-parallel ranks together)")->capture_default_str();
  cmd.add_option("--head-dim", head_dim, "Head dim (latent dim with --mla)")->capture_default_str();
  cmd.add_option("--block-size", block_size, "Tokens per block")->capture_default_str();
  cmd.add_option("--codec", codec, "Block codec")->capture_default_str();
  cmd.add_option("--lora", lora, "LoRA adapter id (vLLM schemes: the LoRA name)");
  cmd.add_option("--salt", salt,
                 "Tenant salt; blocks never match across salts (vLLM schemes: the cache_salt)");
  cmd.add_option("--key-scheme", key_scheme,
                 "How keys are computed: strata, vllm-sha256-cbor, vllm-xxhash-cbor or sglang")
      ->capture_default_str();
  cmd.add_option("--hash-seed", hash_seed,
                 "vLLM schemes: the engine's PYTHONHASHSEED (default for vllm-sha256-cbor: "
                 "vllm-none-hash; required for vllm-xxhash-cbor)");
}

Namespace NamespaceFlags::Build() const {
  NamespaceSpec spec;
  spec.model_id = model;
  spec.model_revision = revision;
  auto d = ParseKvDtype(dtype);
  if (!d.ok()) Fail(d.status().ToString(), 2);
  spec.kv_dtype = *d;
  spec.attention = mla ? AttentionKind::kMla : AttentionKind::kKeyValue;
  spec.num_layers = layers;
  spec.num_kv_heads = kv_heads;
  spec.head_dim = head_dim;
  spec.block_size = block_size;
  auto c = ParseCodec(codec);
  if (!c.ok()) Fail(c.status().ToString(), 2);
  spec.codec = *c;
  spec.lora_id = lora;
  spec.tenant_salt = salt;
  auto k = ParseKeyScheme(key_scheme);
  if (!k.ok()) Fail(k.status().ToString(), 2);
  spec.key_scheme = *k;
  spec.hash_seed = hash_seed;
  auto ns = Namespace::Create(std::move(spec));
  if (!ns.ok()) Fail(ns.status().ToString(), 2);
  return std::move(ns).value();
}

}  // namespace strata::cli
