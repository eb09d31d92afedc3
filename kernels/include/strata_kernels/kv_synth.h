// KV-like test data from a small, real attention projection (docs/kernels.md, "Realistic KV"):
// compression ratios and quantization errors are meaningless on random bytes, so tests and
// benchmarks generate K = RoPE(RMSNorm(X) Wk) and V = RMSNorm(X) Wv per layer, with
//   - hidden states X that are correlated across neighbouring tokens (AR(1), rho 0.6) and carry a
//     few "massive activation" channels (x20 magnitude, the same channels in every token);
//   - Wk with log-normal per-output-channel norms plus a few outlier channels (x6), the
//     per-channel key outliers KIVI reports; Wv with milder per-channel spread;
//   - RoPE (rotate-half, theta 500000 as Llama 3) at the tokens' absolute positions.
// MLA (planes == 1): the latent is RMSNorm(X) Wkv with the last min(64, dim/4) dims RoPE'd.
// Output is written in the Strata block layout in shape.dtype (fp8 output is e4m3/e5m2 of the
// values at scale 1, as engines with fp8 KV store them). Deterministic for a given seed on every
// host (own RNG, no std::normal_distribution).
//
// Thread-safety: pure function.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "strata_kernels/kernel_status.h"
#include "strata_kernels/kv_layout.h"

namespace strata::kernels {

struct KvSynthOptions {
  uint64_t seed = 1;               // Default: 1
  uint32_t hidden_dim = 256;       // model width of the toy projection. Default: 256
  uint32_t first_position = 0;     // RoPE position of the first token. Default: 0
  float rope_theta = 500000.0f;    // Default: 500000 (Llama 3)
};

// Writes `num_blocks` consecutive blocks (num_blocks * shape.bytes() bytes) of KV-like data for
// tokens first_position .. first_position + num_blocks * block_size - 1.
KernelStatus SynthesizeKvBlocks(const BlockShape& shape, uint32_t num_blocks,
                                const KvSynthOptions& options, std::vector<std::byte>* out);

}  // namespace strata::kernels
