#!/usr/bin/env bash
# Installs the serving engines that Strata's adapters plug into, pinned, into a virtual
# environment beside the source tree (<repo>/.venv), made from Debian's /usr/bin/python3 so that
# the `strata` module built against it imports there too. Called by deploy/install-deps.sh;
# idempotent: a venv that already holds the pinned versions is left alone (no network work).
#
#   vLLM   0.33.0  with its own dependencies (torch 2.14.0, CPU-importable; no GPU needed to
#                  import the KV-connector and offloading classes the adapters subclass)
#   SGLang 0.5.23  without its dependencies (it pins torch 2.14.1 against vLLM's 2.14.0; the two
#                  share one environment): only what its HiCache storage modules import is added
#
# STRATA_SKIP_ENGINES=1 skips this step; the adapter tests then report themselves skipped.
# STRATA_ENGINES_VENV overrides the location. docs/engines.md says what was tested with what.
set -euo pipefail

readonly VLLM_VERSION=0.33.0
readonly SGLANG_VERSION=0.5.23
# What sglang.srt.mem_cache.{hicache_storage,memory_pool_host,storage.backend_factory} import
# beyond vLLM's dependencies (found by importing them in a venv holding only vLLM).
readonly SGLANG_EXTRA=(ipython==9.18.1 gguf==0.19.0)
# The adapter tests run with the venv's own pytest (tests/python_engines).
readonly TEST_TOOLS=(pytest==8.3.5)

if [ "${STRATA_SKIP_ENGINES:-0}" = "1" ]; then
  echo "install-engines: skipped (STRATA_SKIP_ENGINES=1)"
  exit 0
fi

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${STRATA_ENGINES_VENV:-$repo/.venv}"
py="$venv/bin/python"

installed() {
  [ -x "$py" ] && "$py" - "$VLLM_VERSION" "$SGLANG_VERSION" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
sys.exit(0 if (version("vllm"), version("sglang")) == (sys.argv[1], sys.argv[2]) else 1)
PY
}

if installed; then
  echo "install-engines: vllm $VLLM_VERSION and sglang $SGLANG_VERSION present in $venv"
  exit 0
fi

echo "install-engines: installing vllm $VLLM_VERSION and sglang $SGLANG_VERSION into $venv" \
     "(about 9 GiB, several minutes)"
/usr/bin/python3 -m venv "$venv"
"$py" -m pip install --quiet --upgrade pip
"$py" -m pip install --quiet "vllm==$VLLM_VERSION"
"$py" -m pip install --quiet --no-deps "sglang==$SGLANG_VERSION"
"$py" -m pip install --quiet "${SGLANG_EXTRA[@]}" "${TEST_TOOLS[@]}"
installed || { echo "install-engines: the installed versions do not match the pins" >&2; exit 1; }
echo "install-engines: done"
