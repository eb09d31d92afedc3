#!/usr/bin/env bash
# Builds and runs every GPU check of the tree in one go, for a bare GPU machine that has only the
# CUDA toolkit, CMake, ninja (or make) and a C++20 host compiler, and tees the whole log:
#   1. kernels/gpu_check (run.sh): CUDA gather/scatter and codecs vs the CPU reference, then their
#      bandwidth beside cudaMemcpy D2D and pinned H2D/D2H;
#   2. store/device_check: DeviceTier on the GPU (round trip, eviction, pins, bad devices) and its
#      put/get bandwidth beside cudaMemcpy H2D/D2H.
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

section "done"
echo "kernels/gpu_check: $rc_kernels, store/device_check: $rc_tier"
[ "$rc_kernels" -eq 0 ] && [ "$rc_tier" -eq 0 ]
