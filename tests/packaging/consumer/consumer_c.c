/* The C ABI from an installed Strata (strata::c / pkg-config strata): stores one block through a
 * running `strata serve` and loads it back. Usage: strata_consumer_c SOCKET */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strata/c.h"

#define CHECK(call)                                                          \
  do {                                                                       \
    strata_status st_ = (call);                                              \
    if (st_ != STRATA_OK) {                                                  \
      printf("%s: %d %s\n", #call, st_, strata_last_error());                \
      return 1;                                                              \
    }                                                                        \
  } while (0)

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  strata_namespace_spec spec;
  memset(&spec, 0, sizeof spec);
  spec.model_id = "consumer/test-model-c";
  spec.num_layers = 2;
  spec.num_kv_heads = 2;
  spec.head_dim = 64;
  strata_namespace* ns = NULL;
  CHECK(strata_namespace_create(&spec, &ns));
  uint32_t tokens[16];
  for (int i = 0; i < 16; ++i) tokens[i] = (uint32_t)(i + 100);
  uint8_t key[STRATA_KEY_BYTES];
  size_t n_keys = 0;
  CHECK(strata_compute_keys(ns, tokens, 16, key, 1, &n_keys));
  /* 2 layers x K,V x 16 tokens x 2 heads x 64 dims x bf16 */
  size_t bytes = (size_t)2 * 2 * 16 * 2 * 64 * 2;
  unsigned char* block = malloc(bytes);
  unsigned char* back = calloc(1, bytes);
  for (size_t i = 0; i < bytes; ++i) block[i] = (unsigned char)(i * 13 + 5);
  strata_client* client = NULL;
  CHECK(strata_connect(argv[1], &client));
  const void* in[1] = {block};
  void* out[1] = {back};
  size_t stored = 0, loaded = 0;
  CHECK(strata_store(client, ns, key, 1, in, &bytes, &stored));
  CHECK(strata_load(client, ns, key, 1, out, &bytes, &loaded));
  if (loaded != 1 || memcmp(block, back, bytes) != 0) {
    printf("loaded %zu block(s), bytes %s\n", loaded, loaded ? "differ" : "-");
    return 1;
  }
  printf("c consumer: stored %zu, loaded %zu block of %zu bytes, equal\n", stored, loaded, bytes);
  strata_close(client);
  strata_namespace_destroy(ns);
  free(block);
  free(back);
  return 0;
}
