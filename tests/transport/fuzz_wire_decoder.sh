#!/usr/bin/env bash
# Builds one peer-wire decoder fuzz target with clang's libFuzzer (plus ASan and UBSan) and runs it
# for a bounded time from a seed corpus of valid messages. Fails on any crash, leak, sanitizer
# report or broken round trip. Exits 77 (SKIPPED for ctest) when clang++ or libFuzzer is missing.
# Usage: fuzz_wire_decoder.sh SOURCE_DIR BUILD_DIR TARGET SECONDS
#   TARGET: frame (control frames, fuzz_wire_frame.cc) or data_header (data-message and block
#   headers, fuzz_wire_data_header.cc).
set -euo pipefail
src=$1
build=$2
target=$3
seconds=${4:-30}
case "$target" in
  frame | data_header) ;;
  *) echo "fuzz_wire_decoder: unknown target '$target' (frame or data_header)" >&2; exit 2 ;;
esac
clangxx=$(command -v clang++ || command -v clang++-14 || true)
if [ -z "$clangxx" ]; then
  echo "SKIPPED: fuzz_wire_$target: clang++ not found (deploy/install-deps.sh installs it)"
  exit 77
fi
out="$build/fuzz/wire_$target"
rm -rf "$out/corpus"
mkdir -p "$out/corpus"
pb="$build/transport/wire_pb"
if [ ! -f "$pb/wire/strata_wire.pb.cc" ]; then
  echo "fuzz_wire_$target: $pb/wire/strata_wire.pb.cc missing (build strata_transport first)" >&2
  exit 1
fi
sources=("$src/tests/transport/fuzz_wire_$target.cc" "$src/transport/wire/messages.cc"
         "$pb/wire/strata_wire.pb.cc" "$src/lib/core/status.cc" "$src/lib/core/block_key.cc"
         "$src/lib/core/block_format.cc" "$src/lib/core/checksum.cc" "$src/lib/core/namespace.cc")
includes=(-I "$src" -I "$src/transport" -I "$src/lib" -I "$src/lib/include" -I "$pb")
libs=(-lprotobuf-lite -lxxhash)
if ! "$clangxx" -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined \
    -fno-sanitize-recover=undefined "${includes[@]}" "${sources[@]}" "${libs[@]}" \
    -o "$out/fuzz" 2> "$out/build.log"; then
  if grep -q "libclang_rt.fuzzer\|unsupported option '-fsanitize=fuzzer'" "$out/build.log"; then
    echo "SKIPPED: fuzz_wire_$target: this clang has no libFuzzer"
    exit 77
  fi
  cat "$out/build.log" >&2
  exit 1
fi
# Seeds: one valid message of each kind.
"$clangxx" -std=c++20 -O1 -DSTRATA_FUZZ_SEED_WRITER "${includes[@]}" "${sources[@]}" \
  "${libs[@]}" -o "$out/seed_writer"
"$out/seed_writer" "$out/corpus"
"$out/fuzz" -max_total_time="$seconds" -max_len=8192 -print_final_stats=1 "$out/corpus" 2>&1 |
  tail -n 20
