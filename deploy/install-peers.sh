#!/usr/bin/env bash
# Installs the systems Strata is measured against (`strata bench peers`, docs/benchmarks.md),
# pinned, into their own virtual environment (<repo>/.venv-peers; STRATA_PEERS_VENV overrides):
#
#   LMCache 0.5.6                            (its CPU and local-disk storage backends, and its
#                                             cache server `python -m lmcache.v1.server`)
#   Mooncake transfer engine 0.3.13.post1    (non-CUDA wheel: mooncake_master + the store client
#                                             over TCP with its SSD offload, and the transfer
#                                             engine)
#
# vLLM's native offloading is measured from deploy/install-engines.sh's venv (STRATA_ENGINES_VENV).
#
# Not part of the README's set-up lines: the benchmark says how to get them when they are missing.
# LMCache pins numpy <= 2.2.6 against vLLM's 2.3.5, hence a venv apart from deploy/install-engines.sh's.
# Idempotent: a venv already holding the pinned versions is left alone.
set -euo pipefail

readonly PEERS=(lmcache==0.5.6 mooncake-transfer-engine-non-cuda==0.3.13.post1)

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${STRATA_PEERS_VENV:-$repo/.venv-peers}"
py="$venv/bin/python"

installed() {
  [ -x "$py" ] && "$py" - <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
want = {"lmcache": "0.5.6", "mooncake-transfer-engine-non-cuda": "0.3.13.post1"}
sys.exit(0 if all(version(k) == v for k, v in want.items()) else 1)
PY
}

if installed; then
  echo "install-peers: ${PEERS[*]} present in $venv"
  exit 0
fi
echo "install-peers: installing ${PEERS[*]} into $venv (several GiB, several minutes)"
/usr/bin/python3 -m venv "$venv"
"$py" -m pip install --quiet --upgrade pip
"$py" -m pip install --quiet "${PEERS[@]}"
installed || { echo "install-peers: the installed versions do not match the pins" >&2; exit 1; }
echo "install-peers: done"
