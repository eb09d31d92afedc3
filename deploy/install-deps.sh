#!/usr/bin/env bash
# Installs the Debian 12 (bookworm) packages that Strata builds, tests and benchmarks with.
# Idempotent: packages already present are skipped, so a second run does no network work.
# Usage: deploy/install-deps.sh [--no-engines]   (as root, or with sudo available)
#   --no-engines: skip the serving engines' virtual environment (deploy/install-engines.sh, ~9 GiB),
#                 which only the engine adapter tests need; `strata demo` does not.
set -euo pipefail

engines=1
for arg in "$@"; do
  case "$arg" in
    --no-engines) engines=0 ;;
    *) echo "install-deps: unknown argument $arg (usage: install-deps.sh [--no-engines])" >&2
       exit 2 ;;
  esac
done

packages=(
  # toolchain and build systems
  build-essential cmake ninja-build meson pkg-config git
  # core libraries (DESIGN.md "Fixed by the people we build for")
  libxxhash-dev xxhash libprotobuf-dev protobuf-compiler libucx-dev ucx-utils librocksdb-dev
  # CLI, logging, config, JSON
  libcli11-dev libfmt-dev libspdlog-dev nlohmann-json3-dev libyaml-cpp-dev
  # the daemon's Prometheus /metrics, /healthz and /readyz endpoint
  libcpp-httplib-dev
  # cluster: etcd membership (server for tests, etcdctl for operators), HTTP client for etcd's
  # JSON gateway, OpenSSL for the HMAC-SHA256 handshake between nodes
  etcd-server etcd-client libcurl4-openssl-dev libssl-dev
  # Python module and its tests, built and run with Debian's own /usr/bin/python3
  pybind11-dev python3-dev python3-numpy python3-pytest python3-torch
  # the engines' virtual environment (vLLM, SGLang from PyPI: deploy/install-engines.sh)
  python3-venv
  # engine-compatible keys: the tests compute vLLM's block hashes with cbor2, hashlib and xxhash
  python3-cbor2 python3-xxhash
  # benchmark baselines: Redis driven through hiredis (strata bench client)
  redis-server libhiredis-dev
  # codecs
  libzstd-dev liblz4-dev
  # KV events in vLLM's format (docs/kv-events.md): ZMQ PUB/SUB/ROUTER and msgpack batches, in C++
  # (lib/events) and in the tests' subscriber and publisher (Debian's python3-zmq, python3-msgpack)
  libzmq3-dev libmsgpack-dev python3-zmq python3-msgpack
  # tests; clang + compiler-rt for the libFuzzer targets
  catch2 clang libclang-rt-14-dev
  # packaging and deployment tests (tests/packaging, deploy/cluster-local.sh): YAML of the
  # Kubernetes manifests and the Helm chart, network namespaces and veth pairs, etcd's health URL
  python3-yaml iproute2 curl
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
else
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The serving engines the adapters plug into (PyPI, pinned, in <repo>/.venv).
if [ "$engines" = 1 ]; then
  "$(dirname "${BASH_SOURCE[0]}")/install-engines.sh"
fi
