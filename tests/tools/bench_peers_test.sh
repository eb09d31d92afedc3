#!/bin/bash
# `strata bench peers` on the path a user runs, small: one client, 64 KiB blocks, 2 MiB per client,
# a 1 MiB transfer prefix. Checks that every case prints its JSON line (DESIGN.md, Benchmarks), that
# Strata's figures are positive with every loaded byte verified, that each peer's case prints a
# figure or that peer's own error, that Strata's embedded mode is measured beside LMCache
# in-process, that each disk peer is compared with Strata's disk tier at the same durability, that
# the memory per block is plausible (growth while storing >= 0 for every system and below one
# block for Strata, daemon and embedded), and that Strata serves every block after kill -9.
# Exit 77 (skipped) where the peers are not installed (deploy/install-peers.sh).
# Usage: bench_peers_test.sh STRATA_BINARY
set -u
strata=$1
out=$(mktemp)
err=$(mktemp)
trap 'rm -f "$out" "$err"' EXIT
"$strata" bench peers --json --sizes 64KiB --clients 1 --mib-per-client 2 --transfer-mib 1 \
  --reps 1 --cases put_get,restart,transfer,vllm >"$out" 2>"$err"
rc=$?
if [ $rc -ne 0 ] && grep -q "are not installed" "$err"; then
  echo "skipped: $(grep 'are not installed' "$err")"
  exit 77
fi
[ $rc -eq 0 ] || { echo "FAIL: exit $rc"; cat "$out"; tail -40 "$err"; exit 1; }
cat "$out"
python3 - "$out" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.startswith('{')]
assert all(l['bench'] == 'peers' for l in lines), lines
cases = {l['case'] for l in lines}
need = {'put_get/64KiB/clients=1', 'restart/64KiB', 'transfer/64KiB/blocks=16',
        'overhead/64KiB'}
missing = need - cases
assert not missing, f'missing cases: {missing}'
# vLLM (deploy/install-engines.sh's venv): both cases, or the one line saying it is missing.
assert {'put_get/vllm-cpu', 'put_get/vllm-fs'} <= cases or 'vllm/import' in cases, cases
strata_errors = [l for l in lines if 'error' in l and str(l['error']).startswith('strata')]
assert not strata_errors, strata_errors
for l in lines:
    if 'error' in l:
        assert l['error'], l  # a peer that cannot run a case prints its own error
        continue
    m = l['metric']
    if m.endswith('GB/s') or m.endswith('_us') or m.endswith('_us_1_block'):
        assert l['value'] > 0, l
    if m == 'verified':
        assert l['value'] == 1.0, l
    if m == 'served_after_kill':
        assert l['value'] == 1.0, l  # Strata's disk tier, write-through
    if l['case'].startswith('transfer/') and m == 'GB/s':
        # The decode node's own account of the timed loads (cluster stats fetch_profile).
        prof = l['puller_fetch_profile_ms']
        assert prof['load_ms'] > 0 and prof['pull_ms'] > 0, l
# Strata's embedded mode (no daemon) beside LMCache in-process, wherever LMCache's rows are.
if any(l.get('baseline', '').startswith('lmcache ') and 'error' not in l for l in lines):
    emb = [l for l in lines if l.get('strata_tier') == 'embedded']
    assert {l['metric'] for l in emb} >= {'put_GB/s', 'get_GB/s', 'verified'}, emb
# Each disk peer against Strata's disk tier at the durability of its own put: LMCache's buffered
# files against the page-cache mode, its O_DIRECT files against O_DIRECT; each row says which.
tier_of = {'lmcache-disk': 'disk-page-cache', 'lmcache-disk-odirect': 'disk'}
for l in lines:
    peer = l.get('baseline', '').split(' ')[0]
    if peer in tier_of and l['case'].startswith('put_get/') and 'error' not in l:
        assert l['strata_tier'] == tier_of[peer] and l['durability'], l
# Memory per block (one client): growth while storing counts the payload, so no system shrinks
# while it stores; Strata (daemon and embedded) faults its pool in before the first put, so a
# block costs it less than the block itself; Strata's footprint beyond the payload is >= 0 (the
# capacity it was given is 1.5x the data + 64 MiB).
for l in lines:
    if 'error' in l or not l['case'].startswith('overhead/'):
        continue
    block = {'64KiB': 64 << 10, '2MiB': 2 << 20}[l['case'].split('/')[1]]
    if l['metric'] == 'pss_growth_B/block':
        assert 0 <= l['value'] < block, l  # Strata's
        assert l['baseline_value'] is None or l['baseline_value'] >= 0, l
    if l['metric'] == 'pss_footprint_B/block_beyond_payload':
        assert l['value'] >= 0, l
overheads = {(l.get('strata_tier'), l['metric']) for l in lines
             if l['case'].startswith('overhead/') and 'error' not in l}
assert {('memory', 'pss_growth_B/block'), ('embedded', 'pss_growth_B/block')} <= overheads, \
    overheads
peer_rows = {l['baseline'].split()[0] for l in lines if 'baseline' in l}
assert {'mooncake', 'lmcache', 'lmcache-disk', 'lmcache-disk-odirect',
        'lmcache-server'} <= peer_rows, peer_rows
print('ok:', len(lines), 'lines')
PY
