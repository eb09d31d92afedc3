// A program an engine team would write against an installed Strata: only <prefix>/include and
// libstrata.so (find_package(strata) or pkg-config). Stores two blocks through a running
// `strata serve`, loads them back and compares every byte. Usage: strata_consumer SOCKET
#include <cstdio>
#include <cstring>
#include <vector>

#include "strata/client.h"
#include "strata/key_chain.h"
#include "strata/namespace.h"
#include "strata/version.h"

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  strata::NamespaceSpec spec;
  spec.model_id = "consumer/test-model";
  spec.num_layers = 2;
  spec.num_kv_heads = 2;
  spec.head_dim = 64;
  spec.block_size = 16;
  auto ns = strata::Namespace::Create(spec);
  if (!ns.ok()) return std::printf("namespace: %s\n", ns.status().ToString().c_str()), 1;
  std::vector<uint32_t> tokens(32);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<uint32_t>(i * 7 + 1);
  std::vector<strata::BlockKey> keys = strata::ComputeBlockKeys(*ns, tokens);
  const size_t bytes = ns->block_bytes();
  std::vector<std::vector<unsigned char>> blocks(keys.size(), std::vector<unsigned char>(bytes));
  std::vector<std::vector<unsigned char>> out(keys.size(), std::vector<unsigned char>(bytes));
  std::vector<strata::ConstBuffer> in_bufs;
  std::vector<strata::MutableBuffer> out_bufs;
  for (size_t b = 0; b < keys.size(); ++b) {
    for (size_t i = 0; i < bytes; ++i) blocks[b][i] = static_cast<unsigned char>(i * 31 + b);
    in_bufs.push_back({blocks[b].data(), bytes});
    out_bufs.push_back({out[b].data(), bytes});
  }
  auto client = strata::Client::Connect(argv[1]);
  if (!client.ok()) return std::printf("connect: %s\n", client.status().ToString().c_str()), 1;
  auto stored = (*client)->Store(*ns, keys, in_bufs).Wait();
  if (!stored.ok()) return std::printf("store: %s\n", stored.status().ToString().c_str()), 1;
  auto loaded = (*client)->Load(*ns, keys, out_bufs).Wait();
  if (!loaded.ok()) return std::printf("load: %s\n", loaded.status().ToString().c_str()), 1;
  if (*loaded != keys.size()) return std::printf("loaded %zu of %zu\n", *loaded, keys.size()), 1;
  for (size_t b = 0; b < keys.size(); ++b)
    if (std::memcmp(blocks[b].data(), out[b].data(), bytes) != 0)
      return std::printf("block %zu differs\n", b), 1;
  std::printf("c++ consumer (strata %s): stored %zu, loaded %zu blocks of %zu bytes, equal\n",
              std::string(strata::Version()).c_str(), *stored, *loaded, bytes);
  return 0;
}
