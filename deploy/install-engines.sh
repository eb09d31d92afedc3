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

# Disk: the installed venv takes ~9 GiB and pip holds the downloaded wheels (~4 GiB) beside it
# until they are unpacked; the build that follows in the README's test line needs ~4 GiB more.
# pip's own wheel cache is off (it would keep a second copy of every wheel in ~/.cache/pip) and
# its temporary files go next to the venv, not to /tmp (often a small tmpfs). On a machine without
# that much room the engines are skipped with this message, and the adapter tests report
# themselves skipped (never passed); STRATA_ENGINES_MIN_FREE_GIB overrides the threshold.
readonly MIN_FREE_GIB="${STRATA_ENGINES_MIN_FREE_GIB:-18}"
free_gib() {  # free GiB on the file system holding $1
  df -P -k "$1" | awk 'NR == 2 { printf "%d", $4 / 1048576 }'
}
mkdir -p "$(dirname "$venv")"
free="$(free_gib "$(dirname "$venv")")"
if [ "$free" -lt "$MIN_FREE_GIB" ]; then
  echo "install-engines: SKIPPED: only $free GiB free under $(dirname "$venv"); vllm $VLLM_VERSION" \
       "and sglang $SGLANG_VERSION need about $MIN_FREE_GIB GiB while installing" \
       "(STRATA_ENGINES_MIN_FREE_GIB). The engine adapter tests will report themselves skipped." >&2
  exit 0
fi

echo "install-engines: installing vllm $VLLM_VERSION and sglang $SGLANG_VERSION into $venv" \
     "(about 9 GiB, several minutes; $free GiB free)"
tmp="$venv.pip-tmp"
log="$venv.install-log"
cleanup_failed() {
  rc=$?
  rm -rf "$tmp"
  if [ "$rc" -ne 0 ]; then
    # A half-installed venv would hold several GiB and look present to nothing: remove it.
    rm -rf "$venv"
    echo "install-engines: FAILED (exit $rc); removed the partial venv $venv" \
         "($(free_gib "$(dirname "$venv")") GiB free now)" >&2
    sleep 1  # let the tee of pip's stderr finish writing the log
    if grep -q "No space left on device" "$log" 2>/dev/null; then
      # The disk filled up under the install (something else wrote to it meanwhile): the same
      # outcome as too little room at the start, said as loudly, not a failed test run.
      echo "install-engines: SKIPPED: the disk filled up while installing; the engine adapter" \
           "tests will report themselves skipped." >&2
      rm -f "$log"
      exit 0
    fi
  fi
  rm -f "$log"
}
trap cleanup_failed EXIT
mkdir -p "$tmp"
: > "$log"
export TMPDIR="$tmp" PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
pip_install() {  # pip's errors go to stderr and to the log that cleanup_failed reads
  "$py" -m pip install --quiet "$@" 2> >(tee -a "$log" >&2)
}
/usr/bin/python3 -m venv "$venv"
pip_install --upgrade pip
pip_install "vllm==$VLLM_VERSION"
pip_install --no-deps "sglang==$SGLANG_VERSION"
pip_install "${SGLANG_EXTRA[@]}" "${TEST_TOOLS[@]}"
installed || { echo "install-engines: the installed versions do not match the pins" >&2; exit 1; }
echo "install-engines: done ($(du -sh "$venv" | cut -f1) in $venv," \
     "$(free_gib "$(dirname "$venv")") GiB free now)"
