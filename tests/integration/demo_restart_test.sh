#!/usr/bin/env bash
# The README's main job, shortened, twice over one data directory: the first run stores the KV of a
# few trace requests through a real `strata serve` (a pool that holds them all, so none is evicted
# and rejected by disk admission) and stops it (SIGTERM writes the host blocks to the disk tier);
# --keep-data keeps the directory the demo created; the second run's daemon reopens the disk tier,
# so every block of the same requests must come back from disk, byte-exact.
# Usage: demo_restart_test.sh STRATA_CLI WORK_DIR
set -euo pipefail
cli=$1
work=$2
rm -rf "$work"
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
run() {
  "$cli" demo --requests 3 --host-pool 1GiB --data-dir "$work/data" --keep-data --json | tail -n 1
}
first=$(run)
second=$(run)
echo "first run:  $first" | cut -c1-400
echo "second run: $second" | cut -c1-400
/usr/bin/python3 - "$first" "$second" <<'PY'
import json, sys
first, second = (json.loads(a) for a in sys.argv[1:3])
assert first["verify_failures"] == 0 and second["verify_failures"] == 0, "bytes differ"
assert first["daemon_clean_exit"] and second["daemon_clean_exit"], "daemon did not stop cleanly"
assert first["stored_blocks"] == first["requested_blocks"] - first["hit_blocks"]
assert second["prefix_hit_ratio"] == 1.0, f"second run hit ratio {second['prefix_hit_ratio']}"
assert second["stored_blocks"] == 0
print(f"restart served {second['hit_blocks']} blocks from the disk tier, all verified")
PY
