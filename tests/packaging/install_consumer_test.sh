#!/usr/bin/env bash
# `cmake --install` into a temporary prefix, then what an engine team does with it: build a C++
# and a C program against the installed tree with find_package(strata CONFIG) and with
# pkg-config, and run each against a real `strata serve` from the same prefix (store + load,
# every byte compared). Also: the installed layout, the exported symbols of libstrata.so, the
# installed `strata version --json` and, when the Python module was built, `import strata` from
# the prefix.
# Usage: install_consumer_test.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src=$1
build=$2
tmp=$(mktemp -d /tmp/strata-install-test.XXXXXX)
serve_pid=
cleanup() {
  if [ -n "$serve_pid" ]; then
    kill -TERM "$serve_pid" 2>/dev/null || true
    wait "$serve_pid" || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
prefix=$tmp/prefix
fail() { echo "FAIL: $*"; exit 1; }

echo "== cmake --install $build --prefix $prefix"
cmake --install "$build" --prefix "$prefix" > "$tmp/install.log" \
  || { cat "$tmp/install.log"; fail install; }
libdir=$prefix/lib
for f in bin/strata include/strata/client.h include/strata/c.h include/strata/status.h \
         lib/libstrata.so lib/cmake/strata/strataConfig.cmake \
         lib/cmake/strata/strataConfigVersion.cmake lib/cmake/strata/strataTargets.cmake \
         lib/pkgconfig/strata.pc lib/systemd/system/strata.service \
         share/strata/mooncake_synthetic_trace.jsonl share/strata/examples/strata.env; do
  [ -e "$prefix/$f" ] || fail "not installed: $f"
done
soname=$(objdump -p "$libdir/libstrata.so" | awk '/SONAME/ {print $2}')
[ -e "$libdir/$soname" ] || fail "SONAME $soname not installed"
echo "installed; libstrata.so SONAME $soname"

echo "== exported symbols"
python3 "$src/tests/packaging/check_exports.py" "$libdir/libstrata.so" "$prefix/include" \
  "$src/lib/strata.map"

echo "== strata version --json (installed binary)"
"$prefix/bin/strata" version --json > "$tmp/version.json"
python3 - "$tmp/version.json" <<'PY'
import json, sys
v = json.load(open(sys.argv[1]))
assert v["version"], v
for k in ("system", "type", "compiler", "cuda", "cuda_architectures", "ucx"):
    assert k in v["build"], k
for k in ("rocksdb", "protobuf", "zstd", "lz4", "xxhash", "fmt", "ucx"):
    assert k in v["libraries"], k
assert v["libraries"]["rocksdb"] and v["libraries"]["zstd"], v["libraries"]
print("version", v["version"], "cuda", v["build"]["cuda"], "rocksdb", v["libraries"]["rocksdb"])
PY

echo "== strata serve from the prefix"
sock=$tmp/run/strata.sock
"$prefix/bin/strata" serve --socket "$sock" --no-disk --host-pool 64MiB > "$tmp/serve.log" 2>&1 &
serve_pid=$!
for _ in $(seq 200); do [ -S "$sock" ] && break; sleep 0.05; done
[ -S "$sock" ] || { cat "$tmp/serve.log"; fail "strata serve did not start"; }

echo "== find_package(strata CONFIG): strata::client, strata::c"
cmake -S "$src/tests/packaging/consumer" -B "$tmp/consumer-cmake" -G Ninja \
  -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release > "$tmp/consumer-cmake.log" \
  || { cat "$tmp/consumer-cmake.log"; fail "consumer configure"; }
cmake --build "$tmp/consumer-cmake" > "$tmp/consumer-build.log" \
  || { cat "$tmp/consumer-build.log"; fail "consumer build"; }
"$tmp/consumer-cmake/strata_consumer" "$sock"
"$tmp/consumer-cmake/strata_consumer_c" "$sock"

echo "== pkg-config strata"
export PKG_CONFIG_PATH=$libdir/pkgconfig
cflags=$(pkg-config --cflags strata)
libs=$(pkg-config --libs strata)
echo "cflags: $cflags  libs: $libs"
version=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"])' \
  "$tmp/version.json")
[ "$(pkg-config --modversion strata)" = "$version" ] || fail "pkg-config version is not $version"
# shellcheck disable=SC2086
c++ -std=c++20 -O1 -o "$tmp/consumer_pc" "$src/tests/packaging/consumer/consumer.cc" $cflags $libs \
  -Wl,-rpath,"$libdir"
# shellcheck disable=SC2086
cc -O1 -o "$tmp/consumer_c_pc" "$src/tests/packaging/consumer/consumer_c.c" $cflags $libs \
  -Wl,-rpath,"$libdir"
"$tmp/consumer_pc" "$sock"
"$tmp/consumer_c_pc" "$sock"

pydir=$(find "$prefix" -path '*/dist-packages/strata' -type d 2>/dev/null | head -1)
if [ -n "$pydir" ]; then
  echo "== import strata from $(dirname "$pydir")"
  PYTHONPATH=$(dirname "$pydir") /usr/bin/python3 - "$prefix" <<'PY'
import sys
import strata
assert strata.__file__.startswith(sys.argv[1]), strata.__file__
print("python strata", strata.__version__, "from", strata.__file__)
PY
else
  echo "== no Python package installed (the build has no Python module)"
fi

kill -TERM "$serve_pid"
wait "$serve_pid" || { cat "$tmp/serve.log"; fail "strata serve did not exit 0"; }
serve_pid=
echo "PASS"
