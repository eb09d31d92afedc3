// engine_bench_gpu.h in a build without CUDA: no GPU rows.
#include "engine_bench_gpu.h"

namespace strata::bench {

bool RunEngineGpuRows(Client&, uint32_t, int, const std::vector<std::string>&, BenchReport&) {
  return false;
}

}  // namespace strata::bench
