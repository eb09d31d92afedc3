#!/usr/bin/env bash
# Builds the IPC decoder fuzz target with clang's libFuzzer (plus ASan and UBSan) and runs it for a
# bounded time from a seed corpus of valid messages. Fails on any crash, leak or sanitizer report.
# Usage: fuzz_ipc_decoder.sh SOURCE_DIR BUILD_DIR SECONDS
set -euo pipefail
src=$1
build=$2
seconds=${3:-20}
clangxx=$(command -v clang++ || command -v clang++-14 || true)
if [ -z "$clangxx" ]; then
  echo "fuzz_ipc_decoder: clang++ not found (deploy/install-deps.sh installs it)" >&2
  exit 1
fi
out="$build/fuzz"
mkdir -p "$out/corpus"
pb="$build/lib/ipc_pb"
sources=("$src/tests/lib/fuzz_ipc_decoder.cc" "$src/lib/ipc/ipc_protocol.cc"
         "$pb/ipc/strata_ipc.pb.cc" "$src/lib/core/status.cc" "$src/lib/core/block_key.cc"
         "$src/lib/core/namespace.cc")
includes=(-I "$src/lib" -I "$src/lib/include" -I "$pb")
"$clangxx" -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  "${includes[@]}" "${sources[@]}" -lprotobuf-lite -o "$out/fuzz_ipc_decoder"
# Seeds: one valid message of each kind.
"$clangxx" -std=c++20 -O1 -DSTRATA_FUZZ_SEED_WRITER "${includes[@]}" "${sources[@]}" \
  -lprotobuf-lite -o "$out/fuzz_seed_writer"
"$out/fuzz_seed_writer" "$out/corpus"
"$out/fuzz_ipc_decoder" -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 \
  "$out/corpus" 2>&1 | tail -n 20
