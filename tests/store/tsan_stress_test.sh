#!/usr/bin/env bash
# The store's concurrency check under ThreadSanitizer (docs/store.md, "Testing"): configures a
# nested build with -DSTRATA_SANITIZER=thread, builds only strata_store_stress_tests (lib/core,
# store/ and the [stress] tests: no CLI, no transport) and runs the [stress] tests with the
# suppressions file and halt_on_error=1. Any report fails the test. A second run reuses the build.
# Usage: tsan_stress_test.sh SOURCE_DIR BUILD_DIR GENERATOR CXX_COMPILER C_COMPILER
set -euo pipefail
src=$1
build=$2
generator=${3:-Ninja}
cxx=${4:-c++}
cc=${5:-cc}

start=$(date +%s)
if [ ! -f "$build/CMakeCache.txt" ]; then
  cmake -S "$src" -B "$build" -G "$generator" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_C_COMPILER="$cc" -DSTRATA_SANITIZER=thread \
    -DSTRATA_WITH_CUDA=off -DSTRATA_WITH_UCX=off -DSTRATA_BUILD_BENCHMARKS=OFF \
    -DSTRATA_BUILD_PYTHON=off > "$build.configure.log" 2>&1 ||
    { cat "$build.configure.log" >&2; exit 1; }
fi
cmake --build "$build" --target strata_store_stress_tests -j "$(nproc)" > "$build.build.log" 2>&1 ||
  { tail -n 50 "$build.build.log" >&2; exit 1; }
built=$(date +%s)

bin="$build/bin/strata_store_stress_tests"
# Built with TSan for real: the runtime is linked in (a missing flag would pass silently). No
# `grep -q`: it would stop reading early, and nm's SIGPIPE fails the pipeline under pipefail.
if ! nm "$bin" 2>/dev/null | grep __tsan_init > /dev/null; then
  echo "tsan_stress_test: $bin is not built with -fsanitize=thread" >&2
  exit 1
fi

export TSAN_OPTIONS="suppressions=$src/tests/store/tsan.supp halt_on_error=1 second_deadlock_stack=1 exitcode=66"
log="$build.run.log"
run() { "$@" "$bin" "[stress]" --reporter compact > "$log" 2>&1; }
status=0
run env || status=$?
# Kernels with more mmap randomisation than this TSan runtime knows fail at start-up; the same
# run without address-space randomisation is valid.
if [ "$status" -ne 0 ] && grep -q "unexpected memory mapping" "$log"; then
  status=0
  run setarch "$(uname -m)" -R || status=$?
fi
cat "$log"
if grep -q "WARNING: ThreadSanitizer" "$log"; then
  echo "tsan_stress_test: ThreadSanitizer reported a problem (above)" >&2
  exit 1
fi
echo "tsan_stress_test: build $((built - start)) s, [stress] under TSan $(($(date +%s) - built)) s"
exit "$status"
