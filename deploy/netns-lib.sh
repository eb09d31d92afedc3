# Sourced (not run): the network-namespace layout that deploy/cluster-local.sh and the netns tests
# share. Each node i (1..N) gets namespace ${NETNS_PREFIX}${NETNS_TAG}-$i with address
# $NETNS_NET.(10+i)/24 on eth0, a veth whose host end joins a private bridge at $NETNS_NET.1;
# etcd listens on the bridge address. Names and the /24 derive from the caller's pid so that runs
# side by side do not collide. Needs root, iproute2 and (for netns_start_etcd) etcd and curl.
#
#   NETNS_PREFIX=st; netns_plan          # sets NETNS_TAG, NETNS_NET, NETNS_BRIDGE
#   netns_up N                           # bridge, namespaces, veths, addresses
#   netns_start_etcd DIR                 # sets NETNS_ETCD_PID and NETNS_ETCD_URL, waits for health
#   netns_down N                         # stops etcd, removes namespaces, links and the bridge

netns_plan() {
  NETNS_PREFIX=${NETNS_PREFIX:-st}
  NETNS_TAG=$(( $$ % 100000 ))
  NETNS_NET="10.$(( 100 + $$ % 100 )).$(( ($$ / 100) % 250 + 1 ))"
  NETNS_BRIDGE="${NETNS_PREFIX}b$NETNS_TAG"
  NETNS_ETCD_PID=
}

netns_name() { echo "${NETNS_PREFIX}${NETNS_TAG}-$1"; }
netns_addr() { echo "$NETNS_NET.$(( 10 + $1 ))"; }

# Returns non-zero (and creates nothing more) when the bridge cannot be created.
netns_up() {
  local n=$1 i ns
  ip link add "$NETNS_BRIDGE" type bridge || return 1
  ip addr add "$NETNS_NET.1/24" dev "$NETNS_BRIDGE"
  ip link set "$NETNS_BRIDGE" up
  for i in $(seq 1 "$n"); do
    ns=$(netns_name "$i")
    ip netns add "$ns"
    ip link add "${NETNS_PREFIX}v$NETNS_TAG-$i" type veth peer name eth0 netns "$ns"
    ip link set "${NETNS_PREFIX}v$NETNS_TAG-$i" master "$NETNS_BRIDGE" up
    ip -n "$ns" addr add "$(netns_addr "$i")/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
  done
}

netns_start_etcd() {
  local dir=$1
  NETNS_ETCD_URL="http://$NETNS_NET.1:2379"
  etcd --name local --data-dir "$dir/etcd" --listen-client-urls "$NETNS_ETCD_URL" \
    --advertise-client-urls "$NETNS_ETCD_URL" --listen-peer-urls "http://$NETNS_NET.1:2380" \
    --initial-advertise-peer-urls "http://$NETNS_NET.1:2380" \
    --initial-cluster "local=http://$NETNS_NET.1:2380" > "$dir/etcd.log" 2>&1 &
  NETNS_ETCD_PID=$!
  for _ in $(seq 100); do
    curl -fsS "$NETNS_ETCD_URL/health" > /dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "netns: etcd did not become healthy at $NETNS_ETCD_URL" >&2
  return 1
}

netns_down() {
  local n=$1 i
  if [ -n "${NETNS_ETCD_PID:-}" ]; then
    kill -TERM "$NETNS_ETCD_PID" 2> /dev/null
    wait "$NETNS_ETCD_PID" 2> /dev/null
  fi
  for i in $(seq 1 "$n"); do
    ip netns del "$(netns_name "$i")" 2> /dev/null
    ip link del "${NETNS_PREFIX}v$NETNS_TAG-$i" 2> /dev/null
  done
  ip link del "$NETNS_BRIDGE" 2> /dev/null
  return 0
}
