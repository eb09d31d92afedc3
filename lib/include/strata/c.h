/* The C ABI of the Strata client (docs/client-api.md), for FFI from any language.
 *
 * Opaque handles, status codes (the values of strata::StatusCode), no exceptions: every function
 * returns STRATA_OK or an error code, and strata_last_error() describes the last error of the
 * calling thread. Keys are 16-byte arrays in canonical form (docs/keys.md).
 *
 * Thread-safety: a strata_client may be used from many threads at once; strata_last_error is per
 * thread. Calls block until done (the C++ API offers the asynchronous forms). */
#ifndef STRATA_C_H_
#define STRATA_C_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef int strata_status;
#define STRATA_OK 0
#define STRATA_NOT_FOUND 2
#define STRATA_CORRUPTION 3
#define STRATA_INVALID_ARGUMENT 4
#define STRATA_IO_ERROR 5
#define STRATA_NO_SPACE 6
#define STRATA_UNAVAILABLE 8
#define STRATA_NOT_SUPPORTED 11
#define STRATA_INTERNAL 14

#define STRATA_KEY_BYTES 16

typedef struct strata_client strata_client;
typedef struct strata_namespace strata_namespace;

/* Everything that makes KV bytes incompatible (strata/namespace.h). Strings may be NULL. */
typedef struct strata_namespace_spec {
  const char* model_id;
  const char* model_revision;
  const char* kv_dtype; /* "fp16", "bf16", "fp8_e4m3", "fp8_e5m2", "fp32"; NULL: "bf16" */
  int mla;              /* 0: K/V planes, 1: MLA latent */
  /* num_kv_heads: the model's KV heads (1 for MLA); block_size 0: 16 */
  uint32_t num_layers, num_kv_heads, head_dim, block_size;
  const char* codec; /* "none", "shuffle_zstd", ... */
  const char* lora_id;
  const char* tenant_salt;
  /* How block keys are derived: "strata" (NULL), "vllm-sha256-cbor", "vllm-xxhash-cbor" or
   * "sglang" (docs/keys.md, "Engine key schemes"); hash_seed: the engine's seed (NULL: its
   * default). Added in 0.1: zero the struct (memset) so that older callers' fields stay valid. */
  const char* key_scheme;
  const char* hash_seed;
} strata_namespace_spec;

#define STRATA_MAX_ENGINE_HASH_BYTES 32

/* What an engine announces for one block in its own KV events (vLLM's BlockStored): its hash,
 * its parent's (parent_bytes 0: the first block of its prompt) and its tokens (may be NULL/0).
 * Hashes are 16 or 32 bytes. */
typedef struct strata_engine_block {
  const uint8_t* hash;
  uint32_t hash_bytes;
  const uint8_t* parent;
  uint32_t parent_bytes;
  const uint32_t* token_ids;
  size_t num_tokens;
} strata_engine_block;

/* The message of the calling thread's last error ("" when none). Valid until the thread's next
 * call into this library. */
const char* strata_last_error(void);

strata_status strata_namespace_create(const strata_namespace_spec* spec, strata_namespace** out);
void strata_namespace_destroy(strata_namespace* ns);
uint32_t strata_namespace_block_size(const strata_namespace* ns);
/* Keys of every full block of tokens[0, n_tokens) under ns's key scheme: writes
 * n_tokens / block_size keys of 16 bytes to keys_out (capacity: max_keys keys) and their number to
 * *n_keys. */
strata_status strata_compute_keys(const strata_namespace* ns, const uint32_t* tokens,
                                  size_t n_tokens, uint8_t* keys_out, size_t max_keys,
                                  size_t* n_keys);

/* Connects to the daemon at socket_path (NULL: the default path). */
/* As strata_compute_keys, plus the engine's own hash of each block (what its KV events name), in
 * hashes_out: STRATA_MAX_ENGINE_HASH_BYTES bytes per block, the first *hash_bytes (16 or 32) of
 * each used. For the "strata" scheme the hash is the key. */
strata_status strata_compute_engine_hashes(const strata_namespace* ns, const uint32_t* tokens,
                                           size_t n_tokens, uint8_t* keys_out,
                                           uint8_t* hashes_out, size_t max_keys, size_t* n_keys,
                                           uint32_t* hash_bytes);

strata_status strata_connect(const char* socket_path, strata_client** out);
/* An in-process cache: host pool of host_pool_bytes (0: 256 MiB), disk tier under data_dir
 * (NULL: none). */
strata_status strata_embedded(uint64_t host_pool_bytes, const char* data_dir, strata_client** out);
void strata_close(strata_client* client);

/* The longest cached prefix of keys[0, n): *matched blocks; tiers_out (may be NULL, capacity n)
 * gets each matched block's tier (1 host, 2 disk, 3 device, 4 remote). */
strata_status strata_lookup(strata_client* client, const uint8_t* keys, size_t n, size_t* matched,
                            uint8_t* tiers_out);
/* Stores buffers[i] (sizes[i] bytes: exactly one uncompressed block of ns) as keys[i], encoded
 * with ns's codec; *stored (may be NULL) = blocks newly stored. */
strata_status strata_store(strata_client* client, const strata_namespace* ns, const uint8_t* keys,
                           size_t n, const void* const* buffers, const size_t* sizes,
                           size_t* stored);
/* As strata_store, with engine_blocks[i] (n of them) for keys[i]: the daemon keeps them with the
 * blocks so that its KV events name them as the engine does (docs/kv-events.md). */
strata_status strata_store_tagged(strata_client* client, const strata_namespace* ns,
                                  const uint8_t* keys, size_t n, const void* const* buffers,
                                  const size_t* sizes, const strata_engine_block* engine_blocks,
                                  size_t* stored);
/* Loads the longest cached prefix of keys (of ns) into buffers[i] (capacities[i] bytes, at least
 * one uncompressed block), verified and decoded; *loaded = blocks. */
strata_status strata_load(strata_client* client, const strata_namespace* ns, const uint8_t* keys,
                          size_t n, void* const* buffers, const size_t* capacities,
                          size_t* loaded);

/* Paged KV (the engine data plane): register the engine's paged cache once, then store and load
 * blocks by page id. layout: "vllm", "flashinfer" or "mla"; layers: num_layers base pointers of
 * host memory, each num_blocks pages of this rank's heads (tp_rank of tp_size). */
strata_status strata_register_kv_cache(strata_client* client, const strata_namespace* ns,
                                       const char* layout, void* const* layers,
                                       uint32_t num_layers, uint32_t num_blocks,
                                       uint32_t tp_rank, uint32_t tp_size, uint32_t* cache_out);
/* As strata_register_kv_cache for pages in memory of CUDA device `device` (-1: host memory).
 * STRATA_NOT_SUPPORTED without CUDA or a device; the engine's writes to a page must be complete
 * (its stream synchronised) before it is stored. */
strata_status strata_register_kv_cache_device(strata_client* client, const strata_namespace* ns,
                                              const char* layout, void* const* layers,
                                              uint32_t num_layers, uint32_t num_blocks,
                                              uint32_t tp_rank, uint32_t tp_size, int device,
                                              uint32_t* cache_out);
strata_status strata_unregister_kv_cache(strata_client* client, uint32_t cache);
/* How much of a host cache is in transparent huge pages (STRATA_KV_HUGE_PAGES; docs/data-plane.md,
 * "Engine KV in huge pages"). Fields as strata::KvCacheHugePages. */
typedef struct strata_kv_cache_huge_pages {
  uint64_t cache_bytes;     /* the cache's pages: layers x bytes per layer */
  uint64_t advised_bytes;   /* the 2 MiB-aligned part that took MADV_HUGEPAGE */
  uint64_t collapsed_bytes; /* of that, put into huge pages by MADV_COLLAPSE so far */
  int collapsing;           /* part of the cache is still to be collapsed */
  int in_huge_pages;        /* at least three quarters collapsed: paged stores go cross-memory */
} strata_kv_cache_huge_pages;
strata_status strata_kv_cache_huge_pages_of(strata_client* client, uint32_t cache,
                                            strata_kv_cache_huge_pages* out);
/* *stored (may be NULL) = head shards newly stored. */
strata_status strata_store_paged(strata_client* client, uint32_t cache, const uint8_t* keys,
                                 const int32_t* block_ids, size_t n, size_t* stored);
/* As strata_store_paged, with engine_blocks[i] (n of them) for keys[i]. */
strata_status strata_store_paged_tagged(strata_client* client, uint32_t cache,
                                        const uint8_t* keys, const int32_t* block_ids, size_t n,
                                        const strata_engine_block* engine_blocks, size_t* stored);
/* *loaded = leading blocks loaded into their pages. */
strata_status strata_load_paged(strata_client* client, uint32_t cache, const uint8_t* keys,
                                const int32_t* block_ids, size_t n, size_t* loaded);
/* Erases every unpinned block of ns (every namespace when ns is NULL). */
strata_status strata_clear(strata_client* client, const strata_namespace* ns, uint64_t* erased);
/* The engine's prefill rate for ns in tokens per second, sent with the client's later loads of ns
 * (`strata inspect funnel`: loads faster than recomputing). Must be positive and finite. */
strata_status strata_set_recompute_rate(strata_client* client, const strata_namespace* ns,
                                        double tokens_per_second);
/* Writes the statistics JSON (NUL-terminated, truncated to capacity) to buf. */
strata_status strata_stats(strata_client* client, char* buf, size_t capacity);

#ifdef __cplusplus
}
#endif

#endif /* STRATA_C_H_ */
