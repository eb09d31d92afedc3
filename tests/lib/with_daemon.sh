#!/usr/bin/env bash
# Runs COMMAND... with a fresh `strata serve` (no disk tier) whose socket path is appended as the
# last argument; stops the daemon with SIGTERM afterwards and fails if it did not exit cleanly.
# Usage: with_daemon.sh STRATA_CLI COMMAND [ARGS...]
set -u
cli=$1
shift
dir=$(mktemp -d)
sock="$dir/strata.sock"
"$cli" serve --socket "$sock" --no-disk --host-pool 128MiB > "$dir/serve.log" 2>&1 &
serve=$!
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
"$@" "$sock"
rc=$?
kill -TERM "$serve"
wait "$serve"
serve_rc=$?
cat "$dir/serve.log"
rm -rf "$dir"
if [ "$serve_rc" -ne 0 ]; then echo "strata serve exited with $serve_rc"; exit 1; fi
exit $rc
