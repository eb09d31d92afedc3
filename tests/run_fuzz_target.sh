#!/usr/bin/env bash
# Runs one libFuzzer target built by cmake/StrataFuzz.cmake for a bounded time, from a fresh seed
# corpus of valid messages (its seed_writer). Fails on any crash, leak, sanitizer report or broken
# round trip; exits 77 (SKIPPED for ctest) when the build had no clang with libFuzzer.
# Usage: run_fuzz_target.sh TARGET_DIR SECONDS MAX_LEN
set -euo pipefail
dir=$1
seconds=$2
max_len=$3
if [ ! -x "$dir/fuzz" ] || [ ! -x "$dir/seed_writer" ]; then
  echo "SKIPPED: $dir/fuzz was not built (no clang++ with libFuzzer when CMake configured;" \
       "deploy/install-deps.sh installs one)"
  exit 77
fi
dir=$(cd "$dir" && pwd)
rm -rf "$dir/corpus"
mkdir -p "$dir/corpus"
"$dir/seed_writer" "$dir/corpus"
cd "$dir"  # crash-* reproducers land beside the target
"$dir/fuzz" -max_total_time="$seconds" -max_len="$max_len" -error_exitcode=1 -print_final_stats=1 \
  "$dir/corpus" \
  2>&1 | tail -n 20  # (-error_exitcode: libFuzzer's default, 77, would read as skipped)
exit "${PIPESTATUS[0]}"
