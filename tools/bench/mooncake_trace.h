// Reader for request traces in Mooncake's format: one JSON object per line with `timestamp` (ms),
// `input_length`, `output_length` and `hash_ids` (one id per 512-token block, chained so that equal
// ids mean an equal prefix; the last block may be partial).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "strata/result.h"

namespace strata::bench {

struct TraceRequest {
  uint64_t timestamp_ms = 0;
  uint64_t input_length = 0;
  uint64_t output_length = 0;
  std::vector<uint64_t> hash_ids;
};

inline constexpr uint32_t kMooncakeBlockTokens = 512;

// Reads the whole trace. InvalidArgument names the line of the first malformed record; IOError
// when the file cannot be read.
Result<std::vector<TraceRequest>> ReadMooncakeTrace(const std::string& path);

// Synthesises the prompt tokens of `req`: block j of the trace becomes 512 pseudo-random token ids
// derived from (hash_ids[j], position), truncated to input_length. Requests that share hash-id
// prefixes therefore share token prefixes, as the real prompts did.
std::vector<uint32_t> SynthesizeTokens(const TraceRequest& req, uint32_t vocab_size = 128256);

// The trace shipped in the repository (tests/data/), for defaults of demo and benchmarks.
std::string DefaultTracePath();

}  // namespace strata::bench
