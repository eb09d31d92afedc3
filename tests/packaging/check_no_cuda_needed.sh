#!/usr/bin/env bash
# libstrata.so and the strata binary load on machines without CUDA: no CUDA library among their
# NEEDED entries (the CUDA runtime is linked statically and opens the driver with dlopen on first
# use; docs/data-plane.md, "How libstrata.so gets CUDA").
# Usage: check_no_cuda_needed.sh FILE...
set -euo pipefail
rc=0
for f in "$@"; do
  needed="$(readelf -d "$f" | awk '/NEEDED/ {print $NF}' | tr -d '[]')"
  if echo "$needed" | grep -E '^lib(cudart|cuda|nvrtc|cublas)[.]so' >/dev/null; then
    echo "FAIL $f needs: $(echo "$needed" | grep -E '^lib(cudart|cuda|nvrtc|cublas)' | tr '\n' ' ')"
    rc=1
  else
    echo "ok   $f needs no CUDA library"
  fi
done
exit $rc
