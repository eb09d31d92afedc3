#!/usr/bin/env bash
# Keys must be identical between the CMake and the Meson builds (DESIGN.md, "Keys"): builds lib/core,
# its tests and a key dumper with Meson in its own directory, runs the Meson-built core tests, and
# compares the keys of the CMake-built `strata keys` with the Meson-built dumper over several
# token files and namespaces.
# Usage: keys_cross_build_test.sh SOURCE_DIR CMAKE_BUILT_STRATA MESON_BUILD_DIR
set -euo pipefail
src=$1
cmake_cli=$2
dir=$3

if [ ! -f "$dir/build.ninja" ]; then
  meson setup "$dir" "$src" -DSTRATA_WITH_CUDA=off -DSTRATA_BUILD_PYTHON=off >/dev/null
fi
meson compile -C "$dir" strata_keys_dump strata_core_tests >/dev/null
"$dir/tests/core/strata_core_tests" --reporter compact "~[integration]"
dump="$dir/tests/integration/strata_keys_dump"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
seq 0 1000 > "$work/a.txt"
awk 'BEGIN { srand(7); for (i = 0; i < 5000; i++) printf "%d,", int(rand() * 128256) }' > "$work/b.txt"
echo "[4294967295, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]" > "$work/c.txt"

llama="meta-llama/Llama-3.1-8B-Instruct"
# token file | block | model | dtype | mla | layers | kv heads | head dim | codec | lora | salt
cases=(
  "a.txt|16|$llama|bf16|0|32|8|128|none||"
  "b.txt|256|$llama|bf16|0|32|8|128|none||tenant-a"
  "b.txt|16|deepseek-ai/DeepSeek-V3|fp8_e4m3|1|61|1|576|none||"
  "c.txt|16|$llama|bf16|0|32|8|128|shuffle_zstd|my-adapter|"
)
failed=0
for c in "${cases[@]}"; do
  IFS='|' read -r file block model dtype mla layers heads dim codec lora salt <<< "$c"
  args=(--tokens "$work/$file" --block-size "$block" --model "$model" --dtype "$dtype"
        --layers "$layers" --kv-heads "$heads" --head-dim "$dim" --codec "$codec")
  [ "$mla" = 1 ] && args+=(--mla)
  [ -n "$lora" ] && args+=(--lora "$lora")
  [ -n "$salt" ] && args+=(--salt "$salt")
  a=$("$cmake_cli" keys "${args[@]}" | grep -v '^#' | cut -f2)
  b=$("$dump" "$work/$file" "$block" "$model" "$dtype" "$mla" "$layers" "$heads" "$dim" \
        "$codec" "$lora" "$salt")
  if [ -z "$a" ] || [ "$a" != "$b" ]; then
    echo "MISMATCH for: $c"
    echo "  cmake: $(echo "$a" | head -c 200)"
    echo "  meson: $(echo "$b" | head -c 200)"
    failed=1
  else
    echo "same keys from both builds: $c ($(echo "$a" | wc -l) keys)"
  fi
done
exit $failed
