// Prompts and load buffers for the tests that drive the engine API (strata/client.h): tests/lib
// and tests/cluster. A real `strata serve` for them comes from tools/strata/serve_process.h.
//
// Thread-safety: plain values; one thread per object.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "strata/client.h"
#include "strata/key_chain.h"

namespace strata::testing {

// The small model of the tests that start a real daemon: 2 layers x 2 planes (K, V) x 2 KV heads
// x 32 dims x 2 bytes = 512 bytes per token, so blocks of `block_bytes` (a multiple of 512) hold
// block_bytes / 512 tokens. `salt` names the tenant ("" = the shared one).
inline Namespace SmallNamespace(const std::string& model_id, size_t block_bytes,
                                const std::string& salt = "") {
  NamespaceSpec s;
  s.model_id = model_id;
  s.num_layers = 2;
  s.num_kv_heads = 2;
  s.head_dim = 32;
  s.block_size = static_cast<uint32_t>(block_bytes / 512);
  s.tenant_salt = salt;
  return std::move(Namespace::Create(s)).value();
}

// A prompt of `n_blocks` full blocks of random tokens, its block keys, and one payload of
// `block_bytes` deterministic bytes per block (`in` points at them). The same seed gives the
// same prompt.
struct Prompt {
  std::vector<uint32_t> tokens;
  std::vector<BlockKey> keys;
  std::vector<std::vector<std::byte>> blocks;
  std::vector<ConstBuffer> in;

  Prompt(const Namespace& ns, size_t n_blocks, uint32_t seed, size_t block_bytes = 8192) {
    std::mt19937_64 rng(seed);
    tokens.resize(n_blocks * ns.block_size());
    for (auto& t : tokens) t = static_cast<uint32_t>(rng() % 128000);
    keys = ComputeBlockKeys(ns, tokens);
    blocks.reserve(n_blocks);  // `in` points into them
    for (size_t i = 0; i < n_blocks; ++i) {
      std::vector<std::byte>& b = blocks.emplace_back(block_bytes);
      for (size_t j = 0; j < block_bytes; j += 8) {
        const uint64_t w = rng();
        std::memcpy(b.data() + j, &w, std::min<size_t>(8, block_bytes - j));
      }
      in.push_back({b.data(), b.size()});
    }
  }
};

// `n` load buffers of `bytes` each (`bufs`) and their views (`out`).
struct Outputs {
  std::vector<std::vector<std::byte>> bufs;
  std::vector<MutableBuffer> out;

  Outputs(size_t n, size_t bytes) {
    bufs.reserve(n);  // `out` points into them
    for (size_t i = 0; i < n; ++i) {
      bufs.emplace_back(bytes);
      out.push_back({bufs.back().data(), bufs.back().size()});
    }
  }
};

}  // namespace strata::testing
