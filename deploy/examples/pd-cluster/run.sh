#!/usr/bin/env bash
# Disaggregated prefill -> decode by hand: one etcd, two `strata serve` cluster nodes (prefill A,
# decode B) on this machine, and pd.py as the two engines. Everything started here is stopped on
# exit.
#
# usage: run.sh [STRATA_CLI] [PYTHONPATH of the strata module]
#   defaults: build/bin/strata and build/python (CMake with STRATA_BUILD_PYTHON)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
cli=${1:-$root/build/bin/strata}
export PYTHONPATH=${2:-$root/build/python}
work=$(mktemp -d /tmp/strata-pd-XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

port=$((20000 + RANDOM % 20000))
etcd --name pd --data-dir "$work/etcd" --listen-client-urls "http://127.0.0.1:$port" \
  --advertise-client-urls "http://127.0.0.1:$port" --listen-peer-urls "http://127.0.0.1:$((port + 1))" \
  --initial-advertise-peer-urls "http://127.0.0.1:$((port + 1))" \
  --initial-cluster "pd=http://127.0.0.1:$((port + 1))" >"$work/etcd.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done

head -c 32 /dev/urandom | base64 >"$work/secret"
chmod 600 "$work/secret"
for node in prefill-a decode-b; do
  "$cli" serve --socket "$work/$node.sock" --no-disk --host-pool 256MiB --node-id "$node" \
    --etcd "http://127.0.0.1:$port" --cluster-secret-file "$work/secret" >"$work/$node.log" 2>&1 &
  pids+=($!)
done
for node in prefill-a decode-b; do
  for _ in $(seq 200); do [ -S "$work/$node.sock" ] && break; sleep 0.05; done
done
sleep 0.5  # both nodes see each other in etcd
python3 "$here/pd.py" "$work/prefill-a.sock" "$work/decode-b.sock"
