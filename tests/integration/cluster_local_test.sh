#!/usr/bin/env bash
# deploy/cluster-local.sh with 3 nodes, each in its own network namespace: node1 stores, node2
# loads the blocks (pulled from node1 over UCX/TCP across the namespaces, bytes compared), node3
# is killed (SIGKILL), and node1 and node2 go on serving (store on node2, load on node1).
# Exit 77 (skipped) without root, ip netns, etcd or the Python module.
# Usage: cluster_local_test.sh SOURCE_DIR STRATA_CLI PYTHON_MODULE_DIR
set -euo pipefail
src=$1
cli=$2
pydir=$3
skip() { echo "SKIP: $*"; exit 77; }
[ "$(id -u)" -eq 0 ] || skip "needs root (ip netns)"
command -v etcd > /dev/null || skip "no etcd"
command -v ip > /dev/null || skip "no ip"
ip netns add "stprobe$$" 2> /dev/null || skip "ip netns add is not permitted here"
ip netns del "stprobe$$"
[ -d "$pydir/strata" ] || skip "no Python module in $pydir"
export PYTHONPATH=$pydir
exec "$src/deploy/cluster-local.sh" -n 3 --strata "$cli" -- /usr/bin/python3 -c '
import os, signal, sys, time
import strata

sockets = os.environ["STRATA_LOCAL_SOCKETS"].split()
pids = [int(p) for p in os.environ["STRATA_LOCAL_PIDS"].split()]
ns = strata.Namespace("local/cluster", num_layers=2, num_kv_heads=2, head_dim=64, block_size=16)
n = 2 * 2 * 16 * 2 * 64 * 2  # layers x K,V x tokens x heads x dim x bf16

def blocks(seed, count):
    return [bytes((seed + b + i) % 251 for i in range(n)) for b in range(count)]

def load_until(client, keys, expect, timeout=15):
    """The directory learns of new blocks by announcements: retry until all arrive."""
    deadline = time.time() + timeout
    while True:
        out = [bytearray(n) for _ in keys]
        got = client.load(ns, keys, out)
        if got == len(keys) or time.time() > deadline:
            return got, out
        time.sleep(0.2)

c1, c2, c3 = (strata.Client.connect(s) for s in sockets)
keys = ns.keys(list(range(16 * 8)))
data = blocks(1, len(keys))
assert c1.store(ns, keys, data) == len(keys)
got, out = load_until(c2, keys, data)
assert got == len(keys), "node2 loaded %d of %d blocks from node1" % (got, len(keys))
assert [bytes(o) for o in out] == data, "bytes differ"
print("node2 pulled %d blocks from node1 across network namespaces, bit-exact" % got)

os.kill(pids[2], signal.SIGKILL)
time.sleep(0.5)
keys2 = ns.keys(list(range(1000, 1000 + 16 * 4)))
data2 = blocks(7, len(keys2))
assert c2.store(ns, keys2, data2) == len(keys2)
got, out = load_until(c1, keys2, data2)
assert got == len(keys2) and [bytes(o) for o in out] == data2, "after the kill: %d" % got
got, _ = load_until(c2, keys, data)
assert got == len(keys), "node2 lost blocks after node3 died: %d" % got
print("node3 killed; node1 and node2 go on serving (%d blocks pulled node2 -> node1)" % len(keys2))
'
