#!/usr/bin/env bash
# Runs a command with the engines' virtual environment (deploy/install-engines.sh) as python,
# the strata package of this build on PYTHONPATH. Exits 77 (ctest SKIP) when the venv or vLLM is
# missing, so that a machine without the engines reports the adapter tests as skipped.
#
#   run_in_engines_venv.sh VENV BUILD_PYTHON_DIR STRATA_CLI -- ARGS...   (python ARGS...)
set -uo pipefail
venv=$1 pypath=$2 cli=$3
shift 4
py="$venv/bin/python"
if [ ! -x "$py" ]; then
  echo "SKIP: no engines venv at $venv (deploy/install-engines.sh)"
  exit 77
fi
if ! "$py" -c "import importlib.util as u, sys; sys.exit(0 if u.find_spec('vllm') and \
u.find_spec('pytest') else 1)"; then
  echo "SKIP: vLLM or pytest is not installed in $venv (deploy/install-engines.sh)"
  exit 77
fi
export PYTHONPATH="$pypath" STRATA_CLI="$cli" PYTHONHASHSEED="${PYTHONHASHSEED:-0}"
exec "$py" "$@"
