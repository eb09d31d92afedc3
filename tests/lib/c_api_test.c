/* The C ABI from C: keys, store, lookup, load (bit-exact), errors with messages. Runs against an
 * embedded cache, and against a daemon when a socket path is given as argv[1]. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strata/c.h"

#define CHECK(cond)                                                        \
  do {                                                                     \
    if (!(cond)) {                                                         \
      fprintf(stderr, "%s:%d: CHECK failed: %s (last error: %s)\n", __FILE__, __LINE__, #cond, \
              strata_last_error());                                        \
      return 1;                                                            \
    }                                                                      \
  } while (0)

/* A block: 2 planes x 2 layers x 16 tokens x 1 head x 64 dims x 2 bytes (fp16). */
enum { kBlocks = 8, kBlockSize = 16, kBytes = 8192, kPages = 12 };

int main(int argc, char** argv) {
  strata_namespace_spec spec;
  memset(&spec, 0, sizeof(spec));
  spec.model_id = "c/model";
  spec.kv_dtype = "fp16";
  spec.num_layers = 2;
  spec.num_kv_heads = 1;
  spec.head_dim = 64;
  spec.block_size = kBlockSize;
  strata_namespace* ns = NULL;
  CHECK(strata_namespace_create(&spec, &ns) == STRATA_OK);
  CHECK(strata_namespace_block_size(ns) == kBlockSize);

  /* Bad input is a status and a message, never a crash. */
  spec.kv_dtype = "fp7";
  strata_namespace* bad = NULL;
  CHECK(strata_namespace_create(&spec, &bad) == STRATA_INVALID_ARGUMENT);
  CHECK(strstr(strata_last_error(), "fp7") != NULL);
  CHECK(strata_namespace_create(NULL, &bad) == STRATA_INVALID_ARGUMENT);

  uint32_t tokens[kBlocks * kBlockSize + 5];
  for (size_t i = 0; i < sizeof(tokens) / sizeof(tokens[0]); ++i) tokens[i] = (uint32_t)(i * 31 + 7);
  uint8_t keys[kBlocks * STRATA_KEY_BYTES];
  size_t n_keys = 0;
  CHECK(strata_compute_keys(ns, tokens, sizeof(tokens) / sizeof(tokens[0]), keys, kBlocks, &n_keys) ==
        STRATA_OK);
  CHECK(n_keys == kBlocks);
  CHECK(strata_compute_keys(ns, tokens, sizeof(tokens) / sizeof(tokens[0]), keys, 2, &n_keys) ==
        STRATA_INVALID_ARGUMENT);

  strata_client* client = NULL;
  if (argc > 1) CHECK(strata_connect(argv[1], &client) == STRATA_OK);
  else CHECK(strata_embedded(64u << 20, NULL, &client) == STRATA_OK);
  CHECK(strata_connect("/nonexistent/strata.sock", &(strata_client*){NULL}) == STRATA_UNAVAILABLE);

  static unsigned char in[kBlocks][kBytes], out[kBlocks][kBytes];
  const void* in_ptrs[kBlocks];
  void* out_ptrs[kBlocks];
  size_t sizes[kBlocks];
  for (int b = 0; b < kBlocks; ++b) {
    for (int i = 0; i < kBytes; ++i) in[b][i] = (unsigned char)(b * 13 + i * 7);
    in_ptrs[b] = in[b];
    out_ptrs[b] = out[b];
    sizes[b] = kBytes;
  }
  size_t stored = 0, matched = 0, loaded = 0;
  CHECK(strata_store(client, ns, keys, kBlocks, in_ptrs, sizes, &stored) == STRATA_OK);
  CHECK(stored == kBlocks);
  uint8_t tiers[kBlocks];
  CHECK(strata_lookup(client, keys, kBlocks, &matched, tiers) == STRATA_OK);
  CHECK(matched == kBlocks);
  CHECK(tiers[0] == 1);
  CHECK(strata_load(client, ns, keys, kBlocks, out_ptrs, sizes, &loaded) == STRATA_OK);
  CHECK(loaded == kBlocks);
  /* The engine's prefill rate, sent with later loads: positive and finite only. */
  CHECK(strata_set_recompute_rate(client, ns, 0.0) == STRATA_INVALID_ARGUMENT);
  CHECK(strata_set_recompute_rate(client, ns, -5.0) == STRATA_INVALID_ARGUMENT);
  CHECK(strata_set_recompute_rate(NULL, ns, 5.0) == STRATA_INVALID_ARGUMENT);
  CHECK(strata_set_recompute_rate(client, ns, 2500.0) == STRATA_OK);
  CHECK(strata_load(client, ns, keys, kBlocks, out_ptrs, sizes, &loaded) == STRATA_OK);
  CHECK(loaded == kBlocks);
  CHECK(memcmp(in, out, sizeof(in)) == 0);

  size_t small[kBlocks];
  for (int b = 0; b < kBlocks; ++b) small[b] = 10;
  CHECK(strata_load(client, ns, keys, kBlocks, out_ptrs, small, &loaded) ==
        STRATA_INVALID_ARGUMENT);
  /* A buffer that is not one block of the namespace is refused, not stored. */
  CHECK(strata_store(client, ns, keys, kBlocks, in_ptrs, small, &stored) ==
        STRATA_INVALID_ARGUMENT);
  CHECK(strstr(strata_last_error(), "8192") != NULL);

  /* Paged: a vLLM-layout cache of kPages pages per layer, [2, pages, 16, 1, 64] fp16. */
  enum { kPageBytes = kBlockSize * 64 * 2, kLayerBytes = 2 * kPages * kPageBytes };
  static unsigned char layer0[kLayerBytes], layer1[kLayerBytes], want0[kLayerBytes],
      want1[kLayerBytes];
  for (int i = 0; i < kLayerBytes; ++i) {
    layer0[i] = (unsigned char)(i * 3 + 1);
    layer1[i] = (unsigned char)(i * 5 + 2);
  }
  memcpy(want0, layer0, sizeof(layer0));
  memcpy(want1, layer1, sizeof(layer1));
  void* layers[2] = {layer0, layer1};
  uint32_t cache = 0;
  CHECK(strata_register_kv_cache(client, ns, "vllm", layers, 2, kPages, 0, 1, &cache) ==
        STRATA_OK);
  CHECK(strata_register_kv_cache(client, ns, "tiles", layers, 2, kPages, 0, 1, &cache) ==
        STRATA_INVALID_ARGUMENT);
  /* Host pages named as CUDA device memory: refused (no CUDA or device: NOT_SUPPORTED; with a
   * device: not device memory, INVALID_ARGUMENT). */
  uint32_t device_cache = 0;
  strata_status device_st = strata_register_kv_cache_device(client, ns, "vllm", layers, 2, kPages,
                                                            0, 1, 0, &device_cache);
  CHECK(device_st == STRATA_NOT_SUPPORTED || device_st == STRATA_INVALID_ARGUMENT);
  int32_t pages[kBlocks] = {11, 3, 7, 0, 5, 9, 2, 8};
  size_t shards = 0;
  CHECK(strata_store_paged(client, cache, keys, pages, kBlocks, &shards) == STRATA_OK);
  CHECK(shards == kBlocks);
  memset(layer0, 0, sizeof(layer0));
  memset(layer1, 0, sizeof(layer1));
  CHECK(strata_load_paged(client, cache, keys, pages, kBlocks, &loaded) == STRATA_OK);
  CHECK(loaded == kBlocks);
  for (int b = 0; b < kBlocks; ++b)
    for (int plane = 0; plane < 2; ++plane) {
      const size_t at = (size_t)(plane * kPages + pages[b]) * kPageBytes;
      CHECK(memcmp(layer0 + at, want0 + at, kPageBytes) == 0);
      CHECK(memcmp(layer1 + at, want1 + at, kPageBytes) == 0);
    }
  strata_kv_cache_huge_pages huge;
  CHECK(strata_kv_cache_huge_pages_of(client, cache, &huge) == STRATA_OK);
  CHECK(huge.cache_bytes == sizeof(layer0) + sizeof(layer1));
  CHECK(huge.advised_bytes <= huge.cache_bytes && huge.collapsed_bytes <= huge.advised_bytes);
  CHECK(strata_kv_cache_huge_pages_of(client, cache, NULL) == STRATA_INVALID_ARGUMENT);
  CHECK(strata_unregister_kv_cache(client, cache) == STRATA_OK);
  CHECK(strata_load_paged(client, cache, keys, pages, kBlocks, &loaded) == STRATA_NOT_FOUND);
  CHECK(strata_kv_cache_huge_pages_of(client, cache, &huge) == STRATA_NOT_FOUND);

  char stats[4096];
  CHECK(strata_stats(client, stats, sizeof(stats)) == STRATA_OK);
  CHECK(strstr(stats, "\"host\"") != NULL);
  uint64_t erased = 0;
  CHECK(strata_clear(client, ns, &erased) == STRATA_OK);
  CHECK(erased == 2 * kBlocks); /* the blocks and the paged head shards */
  CHECK(strata_lookup(client, keys, kBlocks, &matched, NULL) == STRATA_OK);
  CHECK(matched == 0);

  /* An engine key scheme: keys and the engine's own hashes (vLLM sha256_cbor: 32 bytes, each block
   * chained to the one before), stored with them so that KV events name the engine's hashes. */
  {
    strata_namespace_spec vspec = spec;
    vspec.kv_dtype = "fp16";
    vspec.key_scheme = "vllm-md5";
    strata_namespace* vns = NULL;
    CHECK(strata_namespace_create(&vspec, &vns) == STRATA_INVALID_ARGUMENT);
    CHECK(strstr(strata_last_error(), "vllm-md5") != NULL);
    vspec.key_scheme = "vllm-sha256-cbor";
    CHECK(strata_namespace_create(&vspec, &vns) == STRATA_OK);
    static uint8_t vkeys[kBlocks * STRATA_KEY_BYTES];
    static uint8_t hashes[kBlocks * STRATA_MAX_ENGINE_HASH_BYTES];
    size_t nv = 0;
    uint32_t hash_bytes = 0;
    CHECK(strata_compute_engine_hashes(vns, tokens, sizeof(tokens) / sizeof(tokens[0]), vkeys,
                                       hashes, kBlocks, &nv, &hash_bytes) == STRATA_OK);
    CHECK(nv == kBlocks);
    CHECK(hash_bytes == 32);
    CHECK(memcmp(vkeys, keys, sizeof(vkeys)) != 0); /* another scheme, other keys */
    uint8_t again[kBlocks * STRATA_KEY_BYTES];
    CHECK(strata_compute_keys(vns, tokens, sizeof(tokens) / sizeof(tokens[0]), again, kBlocks,
                              &nv) == STRATA_OK);
    CHECK(memcmp(again, vkeys, sizeof(again)) == 0); /* strata_compute_keys follows the scheme */
    /* The strata scheme's engine hash is the key itself. */
    static uint8_t own[kBlocks * STRATA_MAX_ENGINE_HASH_BYTES];
    CHECK(strata_compute_engine_hashes(ns, tokens, sizeof(tokens) / sizeof(tokens[0]), again, own,
                                       kBlocks, &nv, &hash_bytes) == STRATA_OK);
    CHECK(hash_bytes == 16);
    CHECK(memcmp(own + STRATA_MAX_ENGINE_HASH_BYTES * 3, keys + STRATA_KEY_BYTES * 3, 16) == 0);

    strata_engine_block eb[kBlocks];
    memset(eb, 0, sizeof(eb));
    for (int b = 0; b < kBlocks; ++b) {
      eb[b].hash = hashes + STRATA_MAX_ENGINE_HASH_BYTES * b;
      eb[b].hash_bytes = 32;
      if (b > 0) {
        eb[b].parent = hashes + STRATA_MAX_ENGINE_HASH_BYTES * (b - 1);
        eb[b].parent_bytes = 32;
      }
      eb[b].token_ids = tokens + b * kBlockSize;
      eb[b].num_tokens = kBlockSize;
    }
    eb[3].hash_bytes = 20;
    CHECK(strata_store_tagged(client, vns, vkeys, kBlocks, in_ptrs, sizes, eb, &stored) ==
          STRATA_INVALID_ARGUMENT);
    CHECK(strstr(strata_last_error(), "16 or 32") != NULL);
    eb[3].hash_bytes = 32;
    CHECK(strata_store_tagged(client, vns, vkeys, kBlocks, in_ptrs, sizes, eb, &stored) ==
          STRATA_OK);
    CHECK(stored == kBlocks);
    memset(out, 0, sizeof(out));
    CHECK(strata_load(client, vns, vkeys, kBlocks, out_ptrs, sizes, &loaded) == STRATA_OK);
    CHECK(loaded == kBlocks);
    CHECK(memcmp(in, out, sizeof(in)) == 0);
    CHECK(strata_clear(client, vns, &erased) == STRATA_OK);
    CHECK(erased == kBlocks);
    strata_namespace_destroy(vns);
  }

  strata_close(client);
  strata_namespace_destroy(ns);
  printf("c_api_test: all checks passed (%s)\n", argc > 1 ? "daemon" : "embedded");
  return 0;
}
