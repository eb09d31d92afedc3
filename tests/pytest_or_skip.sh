#!/usr/bin/env bash
# Runs a pytest command line and exits 77 (skipped, for Meson and ctest) when pytest skipped every
# test it found, so that a machine without an optional module (vLLM, SGLang) reports the test as
# skipped, not passed. CMake registrations use SKIP_REGULAR_EXPRESSION on pytest's summary
# instead; Meson has no such property. A command that itself exits 77 stays 77.
#
#   pytest_or_skip.sh COMMAND...     (e.g. python3 -m pytest -q test_x.py)
set -uo pipefail
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$@" 2>&1 | tee "$out"
rc=${PIPESTATUS[0]}
summary=$(tail -n 1 "$out")
# 5: pytest collected nothing (a module-level importorskip).
if { [ "$rc" -eq 0 ] || [ "$rc" -eq 5 ]; } && [[ "$summary" == *skipped* ]] && [[ "$summary" != *passed* ]]; then
  exit 77
fi
exit "$rc"
