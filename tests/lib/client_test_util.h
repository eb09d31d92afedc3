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
#include <vector>

#include "strata/client.h"
#include "strata/key_chain.h"

namespace strata::testing {

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
