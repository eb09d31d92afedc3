#!/usr/bin/env bash
# Builds and runs every GPU check of the tree in one go, for a bare GPU machine that has only the
# CUDA toolkit, CMake, ninja (or make) and a C++20 host compiler, and tees the whole log:
#   1. kernels/gpu_check (run.sh): CUDA gather/scatter and codecs vs the CPU reference, then their
#      bandwidth beside cudaMemcpy D2D and pinned H2D/D2H;
#   2. store/device_check: DeviceTier on the GPU (round trip, eviction, pins, bad devices) and its
#      put/get bandwidth beside cudaMemcpy H2D/D2H;
#   3. the in-tree GPU tests, built on a machine with every dependency and packed into build-gpu/
#      by kernels/gpu_check/pack_gpu_tests.sh (carry build-gpu): strata_kernels_cuda_tests
#      (gather/scatter, head shards, codecs vs the CPU) and strata_paged_cuda_tests (the client's
#      paged path with CUDA caches against a real `strata serve`); skipped when not packed;
#   4. tests/python_gpu (CUDA torch tensors, paged CUDA caches) when build-gpu/python was packed
#      and the machine has a CUDA build of torch.
# The device check needs xxhash.h (header only): XXHASH_DIR, else build-gpu/deps (a copy carried
# into an ignored folder: mkdir -p build-gpu/deps && cp /usr/include/xxhash.h build-gpu/deps/),
# else the system's.
# Usage: kernels/gpu_check/device_run.sh [LOG]   LOG default: $OUT/gpu_check.log, else
#        ./gpu_check.log. Exit status: non-zero when either check fails or does not build.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
log="${1:-${OUT:-.}/gpu_check.log}"
exec > >(tee "$log") 2>&1
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH=/usr/local/cuda/bin:$PATH
fi
section() { echo; echo "=== $* ($(date -u +%H:%M:%S))"; }

section "machine"
nvidia-smi || true
q=name,driver_version,memory.total,compute_cap,clocks.max.sm,clocks.max.memory,power.limit
nvidia-smi --format=csv --query-gpu="$q,pcie.link.gen.max,pcie.link.width.max" || true
nvcc --version | tail -2 || true
cmake --version | head -1; c++ --version | head -1
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-) x $(nproc); kernel $(uname -r)"

section "1. kernels/gpu_check"
BUILD_DIR=/tmp/strata-gpu-check "$here/run.sh"
rc_kernels=$?
echo "# kernels/gpu_check exit status: $rc_kernels"

section "2. store/device_check"
xxdir="${XXHASH_DIR:-}"
if [ -z "$xxdir" ] && [ -f "$root/build-gpu/deps/xxhash.h" ]; then xxdir="$root/build-gpu/deps"; fi
gen=()
if command -v ninja >/dev/null; then gen=(-G Ninja); fi
rc_tier=1
if cmake -S "$root/store/device_check" -B /tmp/strata-device-check ${gen[@]+"${gen[@]}"} \
     -DCMAKE_BUILD_TYPE=Release ${xxdir:+-DSTRATA_XXHASH_INCLUDE_DIR="$xxdir"} >/dev/null &&
   cmake --build /tmp/strata-device-check -j "$(nproc)"; then
  /tmp/strata-device-check/strata_device_check
  rc_tier=$?
fi
echo "# store/device_check exit status: $rc_tier"

section "3. in-tree GPU tests (build-gpu/bin)"
rc_tests=0
bin="${STRATA_GPU_BIN:-$root/build-gpu/bin}"
if [ -x "$bin/strata_kernels_cuda_tests" ]; then
  export LD_LIBRARY_PATH="$root/build-gpu/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export STRATA_CLI="$bin/strata"
  for t in strata_kernels_cuda_tests strata_paged_cuda_tests; do
    [ -x "$bin/$t" ] || { echo "# $t: not packed"; rc_tests=1; continue; }
    echo "## $t"
    "$bin/$t" --durations yes
    rc=$?
    echo "# $t exit status: $rc (77: skipped, no device)"
    [ "$rc" -eq 0 ] || rc_tests=1
  done
else
  echo "# not packed (kernels/gpu_check/pack_gpu_tests.sh on the build machine): skipped"
fi

section "4. tests/python_gpu"
rc_py=0
if [ -d "$root/build-gpu/python/strata" ] &&
   python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  PYTHONPATH="$root/build-gpu/python" STRATA_CLI="${STRATA_CLI:-$root/build-gpu/bin/strata}" \
    python3 -m pytest -q -rs -p no:cacheprovider "$root/tests/python_gpu"
  rc_py=$?
else
  echo "# no packed Python module or no CUDA torch here: skipped"
fi

section "done"
echo "kernels/gpu_check: $rc_kernels, store/device_check: $rc_tier, in-tree tests: $rc_tests," \
     "python_gpu: $rc_py"
[ "$rc_kernels" -eq 0 ] && [ "$rc_tier" -eq 0 ] && [ "$rc_tests" -eq 0 ] && [ "$rc_py" -eq 0 ]
