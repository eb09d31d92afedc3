#!/usr/bin/env bash
# A Strata cluster on this machine: etcd and N `strata serve` nodes, each node in its own network
# namespace with its own address (veth pairs on a private bridge), so that peers reach each
# other over UCX/TCP as on separate hosts. Prints how to reach each node; stops everything
# (nodes, etcd, namespaces, links, bridge, files) on exit. Needs root (ip netns) and etcd.
#
#   deploy/cluster-local.sh [-n NODES] [--strata PATH] [--host-pool SIZE] [-- COMMAND [ARGS]]
#
# Without COMMAND it waits until interrupted (Ctrl-C). With COMMAND it runs it once the nodes
# serve, with STRATA_LOCAL_SOCKETS (the nodes' sockets, space-separated, node 1 first),
# STRATA_LOCAL_PIDS (their `strata serve` pids) and STRATA_LOCAL_DIR set, then stops everything
# and exits with COMMAND's status. The Unix sockets are files, so a client in any namespace
# reaches every node; the nodes reach each other only through the bridge.
set -euo pipefail

nodes=3
strata=strata
host_pool=64MiB
while [ $# -gt 0 ]; do
  case $1 in
    -n) nodes=$2; shift 2 ;;
    --strata) strata=$2; shift 2 ;;
    --host-pool) host_pool=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "usage: $0 [-n NODES] [--strata PATH] [--host-pool SIZE] [-- COMMAND...]" >&2
       exit 2 ;;
  esac
done
strata=$(command -v "$strata") || { echo "cluster-local: no strata binary" >&2; exit 1; }
command -v etcd > /dev/null || { echo "cluster-local: etcd not installed" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "cluster-local: needs root for ip netns" >&2; exit 1; }

# shellcheck source=netns-lib.sh
. "$(dirname "$(readlink -f "$0")")/netns-lib.sh"
NETNS_PREFIX=st
netns_plan
dir=$(mktemp -d /tmp/strata-cluster-local.XXXXXX)
pids=()

cleanup() {
  set +e
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2> /dev/null; done
  for pid in "${pids[@]}"; do wait "$pid" 2> /dev/null; done
  netns_down "$nodes"
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

netns_up "$nodes"
netns_start_etcd "$dir"
head -c 32 /dev/urandom | base64 > "$dir/cluster-secret"

sockets=()
for i in $(seq 1 "$nodes"); do
  sock="$dir/node$i/strata.sock"
  ip netns exec "$(netns_name "$i")" "$strata" serve --socket "$sock" --no-disk --host-pool "$host_pool" \
    --node-id "node$i" --listen-addr "$(netns_addr "$i")" --ucx-tls tcp \
    --etcd "$NETNS_ETCD_URL" --etcd-prefix /strata-local/members/ --etcd-lease-ttl 2 \
    --cluster-secret-file "$dir/cluster-secret" --request-timeout-ms 2000 \
    > "$dir/node$i.log" 2>&1 &
  pids+=("$!")
  sockets+=("$sock")
done
for i in $(seq 1 "$nodes"); do
  for _ in $(seq 200); do [ -S "${sockets[$((i - 1))]}" ] && break; sleep 0.05; done
  if [ ! -S "${sockets[$((i - 1))]}" ]; then
    echo "cluster-local: node$i did not start:" >&2
    cat "$dir/node$i.log" >&2
    exit 1
  fi
done

echo "cluster-local: etcd $NETNS_ETCD_URL, $nodes nodes (data under $dir):"
for i in $(seq 1 "$nodes"); do
  printf '  node%d  netns %s  address %s  pid %d  socket %s\n' "$i" "$(netns_name "$i")" \
    "$(netns_addr "$i")" "${pids[$((i - 1))]}" "${sockets[$((i - 1))]}"
done
echo "  a client: STRATA_SOCKET=${sockets[0]} ...; a shell in a node: ip netns exec $(netns_name 1) bash"

if [ $# -gt 0 ]; then
  set +e
  STRATA_LOCAL_SOCKETS="${sockets[*]}" STRATA_LOCAL_PIDS="${pids[*]}" STRATA_LOCAL_DIR="$dir" \
    "$@"
  status=$?
  if [ "$status" -ne 0 ]; then
    for i in $(seq 1 "$nodes"); do echo "--- node$i.log"; tail -20 "$dir/node$i.log"; done
  fi
  exit "$status"
fi
echo "cluster-local: running; Ctrl-C stops everything"
while true; do sleep 3600; done
