#!/usr/bin/env bash
# Keys must be identical between the CMake and the Meson builds (DESIGN.md, "Keys"): builds the
# `strata` CLI and the core tests with Meson in its own directory, runs the Meson-built core tests,
# and compares `strata keys --json` of both builds over several token files and namespaces.
# Usage: keys_cross_build_test.sh SOURCE_DIR CMAKE_BUILT_STRATA MESON_BUILD_DIR
set -euo pipefail
src=$1
cmake_cli=$2
dir=$3

if [ ! -f "$dir/build.ninja" ]; then
  meson setup "$dir" "$src" -DSTRATA_WITH_CUDA=off >/dev/null
fi
meson compile -C "$dir" strata strata_core_tests >/dev/null
"$dir/tests/core/strata_core_tests" --reporter compact "~[integration]"
meson_cli="$dir/tools/strata"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
seq 0 1000 > "$work/a.txt"
awk 'BEGIN { srand(7); for (i = 0; i < 5000; i++) printf "%d,", int(rand() * 128256) }' > "$work/b.txt"
echo "[4294967295, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]" > "$work/c.txt"

cases=(
  "--tokens $work/a.txt"
  "--tokens $work/b.txt --block-size 256 --salt tenant-a"
  "--tokens $work/b.txt --model deepseek-ai/DeepSeek-V3 --mla --dtype fp8_e4m3 --layers 61 --kv-heads 1 --head-dim 576 --rank 3 --world-size 8"
  "--tokens $work/c.txt --block-size 16 --codec shuffle_zstd --lora my-adapter"
)
failed=0
for args in "${cases[@]}"; do
  # shellcheck disable=SC2086
  a=$("$cmake_cli" keys --json $args)
  # shellcheck disable=SC2086
  b=$("$meson_cli" keys --json $args)
  if [ "$a" != "$b" ]; then
    echo "MISMATCH for: $args"
    echo "  cmake: ${a:0:200}"
    echo "  meson: ${b:0:200}"
    failed=1
  else
    echo "same keys from both builds: $args ($(echo "$a" | grep -o '"keys":\[[^]]*' | tr ',' '\n' | wc -l) keys)"
  fi
done
exit $failed
