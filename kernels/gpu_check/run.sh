#!/usr/bin/env bash
# Builds kernels/gpu_check from source and runs it: CUDA gather/scatter and codecs checked
# against the CPU reference, then their bandwidth beside cudaMemcpy D2D and pinned H2D/D2H.
# Needs only the CUDA toolkit (>= 12), a C++20 host compiler, CMake >= 3.18 and ninja (or make).
# Exit status: non-zero on any mismatch or CUDA error.
# Usage: kernels/gpu_check/run.sh [--quick] [--json] [--blocks N] [--reps N]
#   BUILD_DIR (default /tmp/strata-gpu-check), CUDA_ARCHS (default: the GPU's, from nvidia-smi).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
build="${BUILD_DIR:-/tmp/strata-gpu-check}"
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH=/usr/local/cuda/bin:$PATH
fi
archs="${CUDA_ARCHS:-}"
if [ -z "$archs" ] && command -v nvidia-smi >/dev/null; then
  archs="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d ' .')"
fi
archs="${archs:-80;90}"
gen=()
if command -v ninja >/dev/null; then gen=(-G Ninja); fi
echo "gpu_check: building in $build for CUDA archs $archs"
cmake -S "$here" -B "$build" ${gen[@]+"${gen[@]}"} -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CUDA_ARCHITECTURES="$archs" >/dev/null
cmake --build "$build" -j "$(nproc)"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.memory --format=csv || true
exec "$build/strata_gpu_check" "$@"
