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

enum { kBlocks = 8, kBlockSize = 16, kBytes = 4096 };

int main(int argc, char** argv) {
  strata_namespace_spec spec;
  memset(&spec, 0, sizeof(spec));
  spec.model_id = "c/model";
  spec.kv_dtype = "fp16";
  spec.num_layers = 2;
  spec.num_kv_heads = 1;
  spec.head_dim = 64;
  spec.block_size = kBlockSize;
  spec.world_size = 1;
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
  CHECK(strata_load(client, keys, kBlocks, out_ptrs, sizes, &loaded) == STRATA_OK);
  CHECK(loaded == kBlocks);
  CHECK(memcmp(in, out, sizeof(in)) == 0);

  size_t small[kBlocks];
  for (int b = 0; b < kBlocks; ++b) small[b] = 10;
  CHECK(strata_load(client, keys, kBlocks, out_ptrs, small, &loaded) == STRATA_INVALID_ARGUMENT);

  char stats[4096];
  CHECK(strata_stats(client, stats, sizeof(stats)) == STRATA_OK);
  CHECK(strstr(stats, "\"host\"") != NULL);
  uint64_t erased = 0;
  CHECK(strata_clear(client, ns, &erased) == STRATA_OK);
  CHECK(erased == kBlocks);
  CHECK(strata_lookup(client, keys, kBlocks, &matched, NULL) == STRATA_OK);
  CHECK(matched == 0);

  strata_close(client);
  strata_namespace_destroy(ns);
  printf("c_api_test: all checks passed (%s)\n", argc > 1 ? "daemon" : "embedded");
  return 0;
}
