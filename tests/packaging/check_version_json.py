#!/usr/bin/env python3
"""`strata version --json` prints one JSON object: version, build options (CUDA and its
architectures, UCX, Python, build type, compiler), and the versions of the linked libraries.
`strata version` without --json still prints `strata X.Y.Z`.

Usage: check_version_json.py STRATA_CLI
"""
import json
import re
import subprocess
import sys

cli = sys.argv[1]
plain = subprocess.run([cli, "version"], check=True, capture_output=True, text=True).stdout
out = subprocess.run([cli, "version", "--json"], check=True, capture_output=True, text=True).stdout
assert out.count("\n") == 1, "one line: " + out
v = json.loads(out)
assert plain == "strata %s\n" % v["version"], (plain, v["version"])
assert re.fullmatch(r"\d+\.\d+\.\d+", v["version"]), v["version"]
build = v["build"]
for key, kind in [("system", str), ("type", str), ("compiler", str), ("sanitizer", str),
                  ("cuda", bool), ("cuda_architectures", list), ("ucx", bool),
                  ("python", bool), ("benchmarks", bool)]:
    assert isinstance(build[key], kind), (key, build[key])
if build["cuda"]:
    assert build["cuda_version"] and build["cuda_architectures"], build
else:
    assert build["cuda_version"] is None and build["cuda_architectures"] == [], build
libs = v["libraries"]
for name in ["rocksdb", "protobuf", "zstd", "lz4", "xxhash", "openssl", "libcurl", "yaml-cpp",
             "fmt", "nlohmann_json", "cli11"]:
    assert re.match(r"\d+\.\d+", libs[name] or ""), (name, libs.get(name))
assert (libs["ucx"] is not None) == build["ucx"], (libs["ucx"], build["ucx"])
assert (libs["cuda"] is not None) == build["cuda"], (libs["cuda"], build["cuda"])
print(out.strip())
