// The C ABI (strata/c.h) over the C++ client. Nothing may throw across it: every entry point
// catches everything and turns it into a status and strata_last_error().
#include "strata/c.h"

#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "strata/client.h"
#include "strata/engine_keys.h"
#include "strata/key_chain.h"

struct strata_client {
  std::unique_ptr<strata::Client> client;
};
struct strata_namespace {
  strata::Namespace ns;
};

namespace {

thread_local std::string g_last_error;

strata_status Report(const strata::Status& st) {
  g_last_error = st.ok() ? "" : st.ToString();
  return static_cast<strata_status>(st.code());
}

strata_status Invalid(const char* what) {
  return Report(strata::Status::InvalidArgument(what));
}

std::vector<strata::BlockKey> Keys(const uint8_t* bytes, size_t n) {
  std::vector<strata::BlockKey> keys(n);
  for (size_t i = 0; i < n; ++i)
    keys[i] = strata::BlockKey::FromBytes(std::span<const std::byte, 16>(
        reinterpret_cast<const std::byte*>(bytes) + 16 * i, 16));
  return keys;
}

// One engine hash of a strata_engine_block; `what` names it in errors.
strata::Result<strata::EngineHash> EngineHashOf(const uint8_t* bytes, uint32_t size,
                                               const char* what) {
  if (size != 16 && size != 32)
    return strata::Status::InvalidArgument(std::string(what) +
                                           ": an engine hash is 16 or 32 bytes, not " +
                                           std::to_string(size));
  if (bytes == nullptr) return strata::Status::InvalidArgument(std::string(what) + " is NULL");
  strata::EngineHash h;
  h.size = static_cast<uint8_t>(size);
  std::memcpy(h.bytes.data(), bytes, size);
  return h;
}

strata::Result<std::vector<strata::EngineBlock>> EngineBlocks(const strata_engine_block* in,
                                                             size_t n) {
  std::vector<strata::EngineBlock> out(n);
  if (n > 0 && in == nullptr) return strata::Status::InvalidArgument("engine_blocks is NULL");
  for (size_t i = 0; i < n; ++i) {
    STRATA_ASSIGN_OR_RETURN(out[i].hash, EngineHashOf(in[i].hash, in[i].hash_bytes,
                                                      "engine block hash"));
    if (in[i].parent_bytes != 0) {
      STRATA_ASSIGN_OR_RETURN(out[i].parent, EngineHashOf(in[i].parent, in[i].parent_bytes,
                                                          "engine block parent"));
    }
    if (in[i].num_tokens > 0) {
      if (in[i].token_ids == nullptr)
        return strata::Status::InvalidArgument("engine block token_ids is NULL");
      out[i].token_ids.assign(in[i].token_ids, in[i].token_ids + in[i].num_tokens);
    }
  }
  return out;
}

template <typename Fn>
strata_status Guard(Fn&& fn) {
  try {
    return fn();
  } catch (const std::exception& e) {
    return Report(strata::Status::Internal(e.what()));
  } catch (...) {
    return Report(strata::Status::Internal("unknown exception"));
  }
}

}  // namespace

extern "C" {

const char* strata_last_error(void) { return g_last_error.c_str(); }

strata_status strata_namespace_create(const strata_namespace_spec* spec, strata_namespace** out) {
  return Guard([&] {
    if (spec == nullptr || out == nullptr) return Invalid("spec and out must not be NULL");
    strata::NamespaceSpec s;
    s.model_id = spec->model_id ? spec->model_id : "";
    s.model_revision = spec->model_revision ? spec->model_revision : "";
    auto dtype = strata::ParseKvDtype(spec->kv_dtype ? spec->kv_dtype : "bf16");
    if (!dtype.ok()) return Report(dtype.status());
    s.kv_dtype = *dtype;
    s.attention = spec->mla ? strata::AttentionKind::kMla : strata::AttentionKind::kKeyValue;
    s.num_layers = spec->num_layers;
    s.num_kv_heads = spec->num_kv_heads;
    s.head_dim = spec->head_dim;
    s.block_size = spec->block_size ? spec->block_size : 16;
    auto codec = strata::ParseCodec(spec->codec ? spec->codec : "none");
    if (!codec.ok()) return Report(codec.status());
    s.codec = *codec;
    s.lora_id = spec->lora_id ? spec->lora_id : "";
    s.tenant_salt = spec->tenant_salt ? spec->tenant_salt : "";
    auto scheme = strata::ParseKeyScheme(spec->key_scheme ? spec->key_scheme : "strata");
    if (!scheme.ok()) return Report(scheme.status());
    s.key_scheme = *scheme;
    if (spec->hash_seed) s.hash_seed = spec->hash_seed;
    auto ns = strata::Namespace::Create(std::move(s));
    if (!ns.ok()) return Report(ns.status());
    *out = new strata_namespace{std::move(ns).value()};
    return Report(strata::Status::OK());
  });
}

void strata_namespace_destroy(strata_namespace* ns) { delete ns; }

uint32_t strata_namespace_block_size(const strata_namespace* ns) {
  return ns ? ns->ns.block_size() : 0;
}

strata_status strata_compute_keys(const strata_namespace* ns, const uint32_t* tokens,
                                  size_t n_tokens, uint8_t* keys_out, size_t max_keys,
                                  size_t* n_keys) {
  return strata_compute_engine_hashes(ns, tokens, n_tokens, keys_out, nullptr, max_keys, n_keys,
                                      nullptr);
}

strata_status strata_compute_engine_hashes(const strata_namespace* ns, const uint32_t* tokens,
                                           size_t n_tokens, uint8_t* keys_out,
                                           uint8_t* hashes_out, size_t max_keys, size_t* n_keys,
                                           uint32_t* hash_bytes) {
  return Guard([&] {
    if (ns == nullptr || (tokens == nullptr && n_tokens > 0) || n_keys == nullptr)
      return Invalid("ns, tokens and n_keys must not be NULL");
    auto r = strata::ComputeSchemeKeys(ns->ns, std::span<const uint32_t>(tokens, n_tokens));
    if (!r.ok()) return Report(r.status());
    const std::vector<strata::BlockKey>& keys = r->keys;
    if (keys.size() > max_keys) return Invalid("keys_out is too small");
    if (keys.size() > 0 && keys_out == nullptr) return Invalid("keys_out must not be NULL");
    for (size_t i = 0; i < keys.size(); ++i)
      keys[i].ToBytes(std::span<std::byte, 16>(reinterpret_cast<std::byte*>(keys_out) + 16 * i, 16));
    if (hashes_out)
      for (size_t i = 0; i < r->hashes.size(); ++i)
        std::memcpy(hashes_out + STRATA_MAX_ENGINE_HASH_BYTES * i, r->hashes[i].bytes.data(),
                    r->hashes[i].size);
    if (hash_bytes) *hash_bytes = r->hashes.empty() ? 0 : r->hashes[0].size;
    *n_keys = keys.size();
    return Report(strata::Status::OK());
  });
}

strata_status strata_connect(const char* socket_path, strata_client** out) {
  return Guard([&] {
    if (out == nullptr) return Invalid("out must not be NULL");
    auto c = strata::Client::Connect(socket_path ? socket_path : "");
    if (!c.ok()) return Report(c.status());
    *out = new strata_client{std::move(c).value()};
    return Report(strata::Status::OK());
  });
}

strata_status strata_embedded(uint64_t host_pool_bytes, const char* data_dir, strata_client** out) {
  return Guard([&] {
    if (out == nullptr) return Invalid("out must not be NULL");
    strata::EmbeddedOptions o;
    if (host_pool_bytes) o.host_pool_bytes = host_pool_bytes;
    o.data_dir = data_dir ? data_dir : "";
    auto c = strata::Client::Embedded(o);
    if (!c.ok()) return Report(c.status());
    *out = new strata_client{std::move(c).value()};
    return Report(strata::Status::OK());
  });
}

void strata_close(strata_client* client) { delete client; }

strata_status strata_lookup(strata_client* client, const uint8_t* keys, size_t n, size_t* matched,
                            uint8_t* tiers_out) {
  return Guard([&] {
    if (client == nullptr || (keys == nullptr && n > 0) || matched == nullptr)
      return Invalid("client, keys and matched must not be NULL");
    auto r = client->client->Lookup(Keys(keys, n));
    if (!r.ok()) return Report(r.status());
    *matched = r->matched_blocks;
    if (tiers_out)
      for (size_t i = 0; i < r->tiers.size(); ++i) tiers_out[i] = static_cast<uint8_t>(r->tiers[i]);
    return Report(strata::Status::OK());
  });
}

strata_status strata_store(strata_client* client, const strata_namespace* ns, const uint8_t* keys,
                           size_t n, const void* const* buffers, const size_t* sizes,
                           size_t* stored) {
  return strata_store_tagged(client, ns, keys, n, buffers, sizes, nullptr, stored);
}

strata_status strata_store_tagged(strata_client* client, const strata_namespace* ns,
                                  const uint8_t* keys, size_t n, const void* const* buffers,
                                  const size_t* sizes, const strata_engine_block* engine_blocks,
                                  size_t* stored) {
  return Guard([&] {
    if (client == nullptr || ns == nullptr || (n > 0 && (!keys || !buffers || !sizes)))
      return Invalid("client, ns, keys, buffers and sizes must not be NULL");
    std::vector<strata::ConstBuffer> bufs(n);
    for (size_t i = 0; i < n; ++i) bufs[i] = {buffers[i], sizes[i]};
    auto engine = EngineBlocks(engine_blocks, engine_blocks ? n : 0);
    if (!engine.ok()) return Report(engine.status());
    strata::StoreOptions options;
    options.engine_blocks = *engine;
    auto r = client->client->Store(ns->ns, Keys(keys, n), bufs, options).Wait();
    if (!r.ok()) return Report(r.status());
    if (stored) *stored = *r;
    return Report(strata::Status::OK());
  });
}

strata_status strata_load(strata_client* client, const strata_namespace* ns, const uint8_t* keys,
                          size_t n, void* const* buffers, const size_t* capacities,
                          size_t* loaded) {
  return Guard([&] {
    if (client == nullptr || ns == nullptr || loaded == nullptr ||
        (n > 0 && (!keys || !buffers || !capacities)))
      return Invalid("client, ns, keys, buffers, capacities and loaded must not be NULL");
    std::vector<strata::MutableBuffer> bufs(n);
    for (size_t i = 0; i < n; ++i) bufs[i] = {buffers[i], capacities[i]};
    auto r = client->client->Load(ns->ns, Keys(keys, n), bufs).Wait();
    if (!r.ok()) return Report(r.status());
    *loaded = *r;
    return Report(strata::Status::OK());
  });
}

strata_status strata_register_kv_cache(strata_client* client, const strata_namespace* ns,
                                       const char* layout, void* const* layers,
                                       uint32_t num_layers, uint32_t num_blocks,
                                       uint32_t tp_rank, uint32_t tp_size, uint32_t* cache_out) {
  return strata_register_kv_cache_device(client, ns, layout, layers, num_layers, num_blocks,
                                         tp_rank, tp_size, -1, cache_out);
}

strata_status strata_register_kv_cache_device(strata_client* client, const strata_namespace* ns,
                                              const char* layout, void* const* layers,
                                              uint32_t num_layers, uint32_t num_blocks,
                                              uint32_t tp_rank, uint32_t tp_size, int device,
                                              uint32_t* cache_out) {
  return Guard([&] {
    if (client == nullptr || ns == nullptr || layout == nullptr || cache_out == nullptr ||
        (num_layers > 0 && layers == nullptr))
      return Invalid("client, ns, layout, layers and cache_out must not be NULL");
    auto l = strata::ParseKvLayout(layout);
    if (!l.ok()) return Report(l.status());
    strata::KvCacheSpec spec;
    spec.layout = *l;
    spec.layers.assign(layers, layers + num_layers);
    spec.num_blocks = num_blocks;
    spec.tp_rank = tp_rank;
    spec.tp_size = tp_size;
    spec.device = device;
    auto r = client->client->RegisterKvCache(ns->ns, spec);
    if (!r.ok()) return Report(r.status());
    *cache_out = *r;
    return Report(strata::Status::OK());
  });
}

strata_status strata_unregister_kv_cache(strata_client* client, uint32_t cache) {
  return Guard([&] {
    if (client == nullptr) return Invalid("client must not be NULL");
    return Report(client->client->UnregisterKvCache(cache));
  });
}

strata_status strata_kv_cache_huge_pages_of(strata_client* client, uint32_t cache,
                                            strata_kv_cache_huge_pages* out) {
  return Guard([&] {
    if (client == nullptr || out == nullptr) return Invalid("client and out must not be NULL");
    auto r = client->client->HugePagesOf(cache);
    if (!r.ok()) return Report(r.status());
    out->cache_bytes = r->cache_bytes;
    out->advised_bytes = r->advised_bytes;
    out->collapsed_bytes = r->collapsed_bytes;
    out->collapsing = r->collapsing ? 1 : 0;
    out->in_huge_pages = r->in_huge_pages ? 1 : 0;
    return Report(strata::Status::OK());
  });
}

strata_status strata_store_paged(strata_client* client, uint32_t cache, const uint8_t* keys,
                                 const int32_t* block_ids, size_t n, size_t* stored) {
  return strata_store_paged_tagged(client, cache, keys, block_ids, n, nullptr, stored);
}

strata_status strata_store_paged_tagged(strata_client* client, uint32_t cache,
                                        const uint8_t* keys, const int32_t* block_ids, size_t n,
                                        const strata_engine_block* engine_blocks, size_t* stored) {
  return Guard([&] {
    if (client == nullptr || (n > 0 && (!keys || !block_ids)))
      return Invalid("client, keys and block_ids must not be NULL");
    auto engine = EngineBlocks(engine_blocks, engine_blocks ? n : 0);
    if (!engine.ok()) return Report(engine.status());
    strata::StoreOptions options;
    options.engine_blocks = *engine;
    auto r = client->client->StorePaged(cache, Keys(keys, n), std::span(block_ids, n), options)
                 .Wait();
    if (!r.ok()) return Report(r.status());
    if (stored) *stored = *r;
    return Report(strata::Status::OK());
  });
}

strata_status strata_load_paged(strata_client* client, uint32_t cache, const uint8_t* keys,
                                const int32_t* block_ids, size_t n, size_t* loaded) {
  return Guard([&] {
    if (client == nullptr || loaded == nullptr || (n > 0 && (!keys || !block_ids)))
      return Invalid("client, keys, block_ids and loaded must not be NULL");
    auto r = client->client->LoadPaged(cache, Keys(keys, n), std::span(block_ids, n)).Wait();
    if (!r.ok()) return Report(r.status());
    *loaded = *r;
    return Report(strata::Status::OK());
  });
}

strata_status strata_clear(strata_client* client, const strata_namespace* ns, uint64_t* erased) {
  return Guard([&] {
    if (client == nullptr) return Invalid("client must not be NULL");
    auto r = client->client->Clear(ns ? std::optional<strata::NamespaceId>(ns->ns.id())
                                      : std::nullopt);
    if (!r.ok()) return Report(r.status());
    if (erased) *erased = *r;
    return Report(strata::Status::OK());
  });
}

strata_status strata_set_recompute_rate(strata_client* client, const strata_namespace* ns,
                                        double tokens_per_second) {
  return Guard([&] {
    if (client == nullptr || ns == nullptr) return Invalid("client and ns must not be NULL");
    return Report(client->client->SetRecomputeRate(ns->ns, tokens_per_second));
  });
}

strata_status strata_stats(strata_client* client, char* buf, size_t capacity) {
  return Guard([&] {
    if (client == nullptr || buf == nullptr || capacity == 0)
      return Invalid("client and buf must not be NULL");
    auto r = client->client->Stats();
    if (!r.ok()) return Report(r.status());
    std::strncpy(buf, r->c_str(), capacity - 1);
    buf[capacity - 1] = '\0';
    return Report(strata::Status::OK());
  });
}

}  // extern "C"
