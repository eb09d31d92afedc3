#!/usr/bin/env bash
# `strata inspect --all` across hosts: two `strata serve` nodes, each in its own network namespace
# and UTS namespace (its own address and host name: the shape of two hosts) on a private bridge,
# etcd membership. The inspector runs in the root namespace and is told only node1's socket:
# node2 is another "host", reached through the inspect endpoint it published in membership
# (`--inspect-addr`, HTTP authenticated with the cluster secret). Checks: node2's block count and
# node id come back over HTTP; a wrong secret and no secret make node2 unreachable (exit 1, node1
# still printed); an unauthenticated request gets 401 and no key-level data; a replayed request
# is refused. Exit 77 (skipped) without root, ip netns, unshare, etcd, curl or the Python module.
# Usage: inspect_all_netns_test.sh STRATA_CLI PYTHON_MODULE_DIR
set -uo pipefail
cli=$1
pydir=$2
skip() { echo "SKIP: $*"; exit 77; }
[ "$(id -u)" -eq 0 ] || skip "needs root (ip netns)"
for t in etcd ip unshare curl python3; do command -v $t > /dev/null || skip "no $t"; done
ip netns add "stprobe$$" 2> /dev/null || skip "ip netns add is not permitted here"
ip netns del "stprobe$$"
unshare --uts true 2> /dev/null || skip "unshare --uts is not permitted here"
[ -d "$pydir/strata" ] || skip "no Python module in $pydir"

# shellcheck source=../../deploy/netns-lib.sh
. "$(dirname "$(readlink -f "$0")")/../../deploy/netns-lib.sh"
NETNS_PREFIX=sti
netns_plan
dir=$(mktemp -d /tmp/strata-inspect-all.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2> /dev/null; done
  for pid in "${pids[@]}"; do wait "$pid" 2> /dev/null; done
  netns_down 2
  rm -rf "$dir"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*"
  for i in 1 2; do echo "--- node$i.log"; tail -20 "$dir/node$i.log"; done
  exit 1
}

netns_up 2 || skip "cannot create a bridge"
netns_start_etcd "$dir" || fail "etcd did not start"
head -c 32 /dev/urandom | base64 > "$dir/secret"
head -c 32 /dev/urandom | base64 > "$dir/wrong-secret"
for i in 1 2; do
  addr=$(netns_addr "$i")
  # exec all the way down: $! is the daemon's pid.
  ip netns exec "$(netns_name "$i")" unshare --uts sh -c "hostname inspecthost$i && exec \"\$0\" \"\$@\"" \
    "$cli" serve --socket "$dir/node$i/strata.sock" --no-disk --host-pool 64MiB \
    --node-id "node$i" --listen-addr "$addr" --ucx-tls tcp --inspect-addr "$addr:0" \
    --etcd "$NETNS_ETCD_URL" --etcd-prefix /strata-inspect/members/ --etcd-lease-ttl 2 \
    --cluster-secret-file "$dir/secret" > "$dir/node$i.log" 2>&1 &
  pids+=("$!")
done
for i in 1 2; do
  for _ in $(seq 200); do grep -q "inspect endpoint on" "$dir/node$i.log" && break; sleep 0.05; done
  grep -q "inspect endpoint on" "$dir/node$i.log" || fail "node$i did not start"
done
node2_addr=$(sed -n 's/.*inspect endpoint on \([^ ]*\).*/\1/p' "$dir/node2.log")
echo "node2's inspect endpoint: $node2_addr"

# Known contents: 3 blocks on node2, none on node1.
PYTHONPATH=$pydir python3 - "$dir/node2/strata.sock" <<'PY' || fail "storing on node2"
import sys
import strata
ns = strata.Namespace("inspect/all", num_layers=1, num_kv_heads=1, head_dim=16, block_size=16)
n = 1 * 2 * 16 * 1 * 16 * 2
c = strata.Client.connect(sys.argv[1])
keys = ns.keys(list(range(16 * 3)))
assert c.store(ns, keys, [bytes([b]) * n for b in range(3)]) == 3
PY

# Both members are in node1's membership once node2's lease is seen.
for _ in $(seq 100); do
  "$cli" inspect --socket "$dir/node1/strata.sock" peers --json 2> /dev/null |
    python3 -c 'import json,sys; sys.exit(0 if len(json.load(sys.stdin)["members"]) == 2 else 1)' &&
    break
  sleep 0.1
done

# The inspector is told node1's socket only; node2 is on another host.
out="$dir/all.json"
"$cli" inspect --socket "$dir/node1/strata.sock" --all --cluster-secret-file "$dir/secret" \
  --json node > "$out"
rc=$?
cat "$out"
[ $rc -eq 0 ] || fail "inspect --all node: exit $rc"
python3 - "$out" "$node2_addr" <<'PY' || fail "inspect --all node answers"
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
by_id = {l["node"]["id"]: l for l in lines}
assert set(by_id) == {"node1", "node2"}, by_id.keys()
n2 = by_id["node2"]
assert n2["node"]["via"] == "http" and n2["node"]["inspect_addr"] == sys.argv[2], n2["node"]
assert n2["node"]["reachable"] is True, n2["node"]
assert n2["config"]["node_id"] == "node2", n2["config"]
assert n2["tiers"]["host"]["blocks"] == 3, n2["tiers"]["host"]
n1 = by_id["node1"]
assert n1["node"]["via"] == "socket" and n1["config"]["node_id"] == "node1", n1["node"]
assert n1["tiers"]["host"]["blocks"] == 0, n1["tiers"]["host"]
print("ok: node2 answered over its inspect endpoint with its 3 blocks")
PY

# The same as tables (printed for docs/operations.md).
"$cli" inspect --socket "$dir/node1/strata.sock" --all --cluster-secret-file "$dir/secret" node ||
  fail "inspect --all node (tables)"

# Key-level data over HTTP: ls lists node2's three keys.
STRATA_CLUSTER_SECRET=$(cat "$dir/secret") "$cli" inspect --socket "$dir/node1/strata.sock" \
  --all --json ls > "$out" || fail "inspect --all ls (secret from the environment)"
python3 - "$out" <<'PY' || fail "inspect --all ls answers"
import json, sys
by_id = {l["node"]["id"]: l for l in map(json.loads, open(sys.argv[1]))}
assert by_id["node2"]["total"] == 3 and len(by_id["node2"]["blocks"]) == 3, by_id["node2"]
assert by_id["node1"]["total"] == 0, by_id["node1"]
print("ok: inspect --all ls lists node2's 3 keys")
PY

# A wrong secret: node2 refuses; node1 is still printed; exit 1.
"$cli" inspect --socket "$dir/node1/strata.sock" --all --cluster-secret-file "$dir/wrong-secret" \
  --json node > "$out"
rc=$?
[ $rc -eq 1 ] || fail "wrong secret: exit $rc, expected 1"
grep -q '"id":"node2"' "$out" && grep -q 'refused us' "$out" || fail "wrong secret: $(cat "$out")"
grep '"id":"node1"' "$out" | grep -q '"reachable":true' || fail "node1 not printed: $(cat "$out")"
echo "ok: a wrong secret is refused (exit 1), node1 still answered"

# No secret at all: node2 unreachable with the reason.
env -u STRATA_CLUSTER_SECRET "$cli" inspect --socket "$dir/node1/strata.sock" --all node \
  > "$out" 2>&1
rc=$?
[ $rc -eq 1 ] || fail "no secret: exit $rc, expected 1"
grep -q "needs the cluster secret" "$out" || fail "no secret: $(cat "$out")"
echo "ok: without the secret node2 is reported unreachable, with the reason"

# Unauthenticated and forged requests get 401 and nothing else.
code=$(curl -s -o "$dir/body" -w '%{http_code}' -X POST --data-binary x "http://$node2_addr/v1/inspect")
[ "$code" = 401 ] || fail "unauthenticated request: HTTP $code"
grep -q "not authenticated" "$dir/body" || fail "401 body: $(cat "$dir/body")"
nonce=$(printf '%064d' 7)
code=$(curl -s -o "$dir/body" -w '%{http_code}' -X POST --data-binary x \
  -H "X-Strata-Time: $(date +%s%3N)" -H "X-Strata-Nonce: $nonce" \
  -H "Authorization: Strata-HMAC $(printf '%064d' 0)" "http://$node2_addr/v1/inspect")
[ "$code" = 401 ] || fail "forged MAC: HTTP $code"
echo "ok: unauthenticated and forged requests get 401"

# A replayed request (valid MAC, same nonce) is refused the second time.
secret=$(cat "$dir/secret")
python3 - "$node2_addr" "$secret" <<'PY' || fail "replay"
import hashlib, hmac, os, sys, time, urllib.request, urllib.error
addr, secret = sys.argv[1], sys.argv[2].encode()
# An encoded ipc Request{id=1, inspect{command="node"}} is not needed to test the replay check,
# which comes before decoding: a body that is not a request gets 400 the first time.
body = b"not a request"
t = str(int(time.time() * 1000)); nonce = os.urandom(32).hex()
mac = hmac.new(secret, b"strata/1 inspect request\n" + t.encode() + b"\n" + nonce.encode() +
               b"\n" + body, hashlib.sha256).hexdigest()
def post():
    req = urllib.request.Request("http://%s/v1/inspect" % addr, data=body, method="POST",
        headers={"X-Strata-Time": t, "X-Strata-Nonce": nonce, "Authorization": "Strata-HMAC " + mac})
    try:
        return urllib.request.urlopen(req, timeout=5).status
    except urllib.error.HTTPError as e:
        return e.code
first, second = post(), post()
assert (first, second) == (400, 401), (first, second)
print("ok: authenticated once (400: not a request), the replay refused (401)")
PY
echo "PASS"
