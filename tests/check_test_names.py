#!/usr/bin/env python3
"""Fails when a Catch2 TEST_CASE name holds a ';'. catch_discover_tests registers each case under
its name as a CMake list, so ctest splits the name at ';' into cases that match nothing: the case
then fails under ctest (or, worse, never runs). Usage: check_test_names.py TESTS_DIR"""
import pathlib
import re
import sys

bad = []
for path in sorted(pathlib.Path(sys.argv[1]).rglob("*.cc")):
    text = path.read_text(errors="replace")
    for m in re.finditer(r'TEST_CASE\(\s*((?:"(?:[^"\\]|\\.)*"\s*)+)', text):
        name = "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', m.group(1)))
        if ";" in name:
            line = text.count("\n", 0, m.start()) + 1
            bad.append(f"{path}:{line}: {name}")
for b in bad:
    print("FAIL: ';' in a test case name (ctest splits it there):", b)
print(f"{'FAIL' if bad else 'ok'}: {len(bad)} test case names with ';'")
sys.exit(1 if bad else 0)
