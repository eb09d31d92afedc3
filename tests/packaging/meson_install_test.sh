#!/usr/bin/env bash
# The Meson build installs the same tree as `cmake --install` (docs/build.md): the CLI, every
# public header, libstrata.so with its SONAME links, strata.pc, the CMake package, the Python
# package (module and every .py file of lib/python/strata), the systemd unit and examples.
# Checked from `meson introspect --installed` after `meson setup` (nothing is compiled here; the
# Meson build itself is compiled by integration.keys_identical_across_cmake_and_meson).
# Usage: meson_install_test.sh SOURCE_DIR          Exit 77 (skipped) without meson.
set -euo pipefail
src=$1
command -v meson > /dev/null || { echo "SKIP: meson not installed"; exit 77; }
tmp=$(mktemp -d /tmp/strata-meson-install.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
meson setup "$tmp/b" "$src" -DSTRATA_WITH_CUDA=off -DSTRATA_BUILD_TESTS=false \
  --prefix "$tmp/prefix" > "$tmp/setup.log" 2>&1 || { cat "$tmp/setup.log"; exit 1; }
meson introspect --installed "$tmp/b" > "$tmp/installed.json"
python3 - "$tmp/installed.json" "$tmp/prefix" "$src" <<'PY'
import json, pathlib, re, sys
installed = sorted(json.load(open(sys.argv[1])).values())
prefix, src = sys.argv[2], pathlib.Path(sys.argv[3])
rel = [p[len(prefix) + 1:] for p in installed]
def has(pattern):
    return any(re.fullmatch(pattern, r) for r in rel)
need = [r"bin/strata", r"lib(/[\w-]+)?/libstrata\.so", r"lib(/[\w-]+)?/libstrata\.so\.0\.1",
        r"lib(/[\w-]+)?/pkgconfig/strata\.pc",
        r"lib(/[\w-]+)?/cmake/strata/strata(Config|ConfigVersion|Targets)\.cmake",
        r"lib/systemd/system/strata\.service", r"share/strata/examples/strata\.env",
        r"share/strata/mooncake_synthetic_trace\.jsonl"]
need += [r"include/strata/" + re.escape(h.name) for h in (src / "lib/include/strata").glob("*.h")]
if any("/strata/_native" in r for r in rel):  # the Python module is built
    for py in (src / "lib/python").rglob("*.py"):
        need.append(r".*/" + re.escape(str(py.relative_to(src / "lib/python"))))
missing = [n for n in need if not has(n)]
print("meson installs %d files" % len(rel))
for m in missing:
    print("FAIL: not installed by meson:", m)
sys.exit(1 if missing else 0)
PY
