// The GPU rows of `strata bench engine` (engine_bench.cc): the same prompt in a paged cache in CUDA
// device memory, stored and loaded through the client's CUDA data path, beside pinned cudaMemcpy
// of the same bytes (D2H for stores, H2D for loads) measured in the same run. Built with CUDA only
// (engine_bench_gpu.cc); elsewhere, and on a machine without a device, it adds no row.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "bench_report.h"
#include "strata/client.h"

namespace strata::bench {

// Adds rows "paged_store_gpu/<codec>" and "paged_load_gpu/<codec>" when a CUDA device is present;
// returns false (and adds nothing) when there is none or this build has no CUDA.
// `tokens`: the prompt length (a multiple of 16); the namespaces are the host rows' ones.
bool RunEngineGpuRows(Client& client, uint32_t tokens, int reps,
                      const std::vector<std::string>& codecs, BenchReport& report);

}  // namespace strata::bench
