#!/usr/bin/env bash
# Packs what kernels/gpu_check/device_run.sh section 3 runs on a GPU machine that cannot build the
# whole tree (it has only the CUDA toolkit, CMake and a compiler): the GPU test binaries, the
# `strata` binary they start, the Python module, and every shared library they need that is not
# part of glibc, into build-gpu/ (ignored by git; name it in the device tool's `carry`).
# Usage: kernels/gpu_check/pack_gpu_tests.sh [BUILD_DIR]   (default: build-cc)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${1:-$root/build-cc}"
out="$root/build-gpu"
mkdir -p "$out/bin" "$out/lib" "$out/deps"
cp /usr/include/xxhash.h "$out/deps/" 2>/dev/null || true
bins=(strata strata_kernels_cuda_tests strata_paged_cuda_tests strata_gpu_check)
for b in "${bins[@]}"; do
  if [ -x "$build/bin/$b" ]; then cp "$build/bin/$b" "$out/bin/"; fi
done
if [ -d "$build/python/strata" ]; then rm -rf "$out/python"; cp -r "$build/python" "$out/python"; fi
# Shared libraries outside glibc (the binaries link CUDA statically; libcuda comes from the GPU
# machine's driver).
for f in "$out"/bin/* "$out"/python/strata/_native*.so; do
  [ -e "$f" ] || continue
  ldd "$f" | awk '/=> \// {print $3}' | while read -r lib; do
    case "$(basename "$lib")" in
      libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*|libcuda.so*) ;;
      *) cp -nL "$lib" "$out/lib/" ;;
    esac
  done
done
# Debug info would not fit the device tool's carry (64 MiB).
strip --strip-debug "$out"/bin/* "$out"/lib/* "$out"/python/strata/_native*.so 2>/dev/null || true
du -sh "$out"
