#!/bin/bash
# `strata bench transfer --netns-only`: two `strata serve` nodes in different network namespaces
# joined by a veth pair (the shape of two hosts) pull a prefix through the client API, and
# ucx_perftest runs across the same pair. Checks that every case prints its JSON line (DESIGN.md,
# Benchmarks) with a positive value and baseline, each pull line its ucx_perftest run on a
# message larger than the cache, and each latency line its re-pull beside the first pulls. Exit
# 77 (skipped) where namespaces cannot be created (not root, no iproute2) or ucx_perftest is
# missing.
# Usage: bench_transfer_netns_test.sh STRATA_BINARY
set -u
strata=$1
command -v ucx_perftest >/dev/null || { echo "skipped: no ucx_perftest"; exit 77; }
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$strata" bench transfer --json --netns-only --sizes 64KiB --holders 1 --reps 1 \
  --lat-iters 3 --perftest-mib 64 --pinned-runs 3 >"$out"
rc=$?
[ $rc -eq 77 ] && { echo "skipped: cannot create network namespaces"; exit 77; }
[ $rc -eq 0 ] || { echo "FAIL: exit $rc"; cat "$out"; exit 1; }
cat "$out"
python3 - "$out" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.startswith('{')]
want = {'pull/64KiB/tls=tcp/netns/holders=1', 'pull_latency_p50/64KiB/tls=tcp/netns/holders=1'}
got = {l['case'] for l in lines}
missing = want - got
assert not missing, f'missing cases: {missing}'
for l in lines:
    assert l['bench'] == 'transfer' and l['value'] > 0 and l['baseline_value'] > 0, l
    assert l['baseline'] == 'ucx_perftest' and l['netns'] is True, l
    if l['case'].startswith('pull/'):  # the beyond-cache run of the same tool, beside it
        assert l['ucx_perftest_beyond_cache_gbps'] > 0 and l['ratio_beyond_cache'] > 0, l
        # under 1 MiB: the pinned baseline, median of --pinned-runs runs per mode
        assert l['ucx_perftest_pinned_median_gbps'] > 0 and l['ratio_pinned'] > 0, l
        assert len(l['ucx_perftest_pinned_no_e_runs_gbps']) == 3, l
        # Another network namespace: the puller does not map the holder's pool, by itself.
        tp = l['transfer_profile']
        assert tp['puller_mapped_blocks_per_load'] == 0, tp
        assert tp['puller_mapped_fallbacks'] >= 1 and tp['puller_mapped_sessions'] == 0, tp
    if l['case'].startswith('pull_latency_p50/'):  # first pulls, the re-pull beside them
        assert l['what'].startswith('first pull') and l['repull_p50_us'] > 0, l
print('ok:', len(lines), 'cases')
PY
