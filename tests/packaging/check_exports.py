#!/usr/bin/env python3
"""libstrata.so exports exactly the public API (lib/strata.map).

Usage: check_exports.py LIBSTRATA_SO PUBLIC_INCLUDE_DIR STRATA_MAP

1. Every dynamic symbol the library defines is a C function of strata/c.h or a C++ symbol of a
   name declared at namespace scope in lib/include/strata/*.h (a type's members, typeinfo,
   vtable, or a free function): nothing of the node, daemon, store, transport, kernels, RocksDB,
   Protobuf, UCX, ... leaks.
2. Every C function of strata/c.h is exported.
3. Every public name that a header declares appears in strata.map (a name added to a header and
   forgotten in the map would link in the build tree and fail for installed consumers).
"""
import pathlib
import re
import subprocess
import sys


def public_names(include_dir):
    """Types and free functions declared at namespace scope (column 0) of the C++ headers."""
    names = set()
    for header in sorted(pathlib.Path(include_dir, "strata").glob("*.h")):
        if header.name == "c.h":
            continue
        src = header.read_text()
        for m in re.finditer(r"^(?:class|struct|enum class)\s+(?:\[\[nodiscard\]\]\s+)?([A-Z]\w*)",
                             src, re.M):
            names.add(m.group(1))
        for m in re.finditer(r"^(?!\s)(?!return|using|#|//|template|namespace|inline constexpr)"
                             r"[^\n;{}()]*?\b([A-Z]\w*)\(", src, re.M):
            names.add(m.group(1))
    return names


def c_functions(include_dir):
    src = pathlib.Path(include_dir, "strata", "c.h").read_text()
    return set(re.findall(r"^(?![ */#])[^\n(]*?\b(strata_\w+)\(", src, re.M))


def main():
    lib, include_dir, map_file = sys.argv[1:4]
    nm = subprocess.run(["nm", "-D", "--defined-only", "-C", lib], check=True,
                        capture_output=True, text=True).stdout
    exported = []
    for line in nm.splitlines():
        parts = line.split(" ", 2)
        if len(parts) < 3 or parts[1] == "A":  # the version node STRATA_0
            continue
        exported.append(parts[2].split("@")[0])
    names = public_names(include_dir)
    cfuncs = c_functions(include_dir)
    failures = []
    for sym in exported:
        bare = re.sub(r"^(typeinfo name for|typeinfo for|vtable for|VTT for) ", "", sym)
        if sym in cfuncs:
            continue
        m = re.match(r"strata::([A-Za-z_]\w*)", bare)
        if m and m.group(1) in names:
            continue
        failures.append("exported but not public API: " + sym)
    for f in sorted(cfuncs - set(exported)):
        failures.append("C function of strata/c.h not exported: " + f)
    map_text = pathlib.Path(map_file).read_text()
    header_only = {"Result", "Completion"}  # templates, defined in the headers
    enums = set(re.findall(r"enum class\s+([A-Z]\w*)",
                           "".join(p.read_text() for p in
                                   pathlib.Path(include_dir, "strata").glob("*.h"))))
    for name in sorted(names - header_only - enums):
        if not re.search(r"strata::" + name + r"(::|\*|\"|;)", map_text):
            failures.append("public name missing from lib/strata.map: strata::" + name)
    cpp = [s for s in exported if s.startswith(("strata::", "typeinfo", "vtable"))]
    print(f"{len(exported)} exported symbols: {len(cfuncs)} C functions, {len(cpp)} C++; "
          f"{len(names)} public names in the headers")
    for f in failures:
        print("FAIL:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
