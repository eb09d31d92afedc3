#!/usr/bin/env python3
"""deploy/docker/Dockerfile has the structure the issue asks for: multi-stage, Debian 12, the
build stage made with deploy/install-deps.sh and `cmake --install`, a small runtime stage
(debian:12-slim, apt lists removed in the layer that made them) running as a non-root user,
exec-form entrypoint, every COPY source present. hadolint runs too where installed. The image is
not built here (no Docker daemon in the test environment).

Usage: check_dockerfile.py SOURCE_DIR
"""
import json
import pathlib
import re
import shutil
import subprocess
import sys

SRC = pathlib.Path(sys.argv[1])
DOCKERFILE = SRC / "deploy" / "docker" / "Dockerfile"
KEYWORDS = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
            "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL"}
failures = []


def instructions(text):
    out, cur = [], ""
    for line in text.splitlines():
        if not cur and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if cur and line.lstrip().startswith("#"):
            continue
        cur += line.rstrip("\\").rstrip() + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            word, _, rest = cur.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            cur = ""
    return out


def main():
    ins = instructions(DOCKERFILE.read_text())
    args = {}
    stages = []  # [(base, name, [instructions])]
    for word, rest in ins:
        if word not in KEYWORDS:
            failures.append("unknown instruction " + word)
        if word == "ARG" and not stages:
            k, _, v = rest.partition("=")
            args[k] = v
        if word == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
            base = re.sub(r"\$\{(\w+)\}", lambda a: args.get(a.group(1), ""), m.group(1))
            stages.append((base, m.group(2), []))
        elif stages:
            stages[-1][2].append((word, rest))
    if len(stages) < 2:
        failures.append("not multi-stage")
        return
    (build_base, build_name, build), (run_base, _, runtime) = stages[0], stages[-1]
    if build_base not in ("debian:12", "debian:bookworm"):
        failures.append("build stage is %s, not Debian 12" % build_base)
    if run_base not in ("debian:12-slim", "debian:bookworm-slim"):
        failures.append("runtime stage is %s, not debian:12-slim" % run_base)
    build_runs = " ".join(r for w, r in build if w == "RUN")
    if "deploy/install-deps.sh" not in build_runs:
        failures.append("the build stage does not run deploy/install-deps.sh")
    if "cmake --install" not in build_runs:
        failures.append("the build stage does not cmake --install")
    copies = [r for w, r in build if w == "COPY"]
    if not copies or "install-deps.sh" not in copies[0]:
        failures.append("install-deps.sh is not copied first (package layer cache)")
    for w, r in build + runtime:
        if w == "COPY" and "--from" not in r:
            for src in r.split()[:-1]:
                if not (SRC / src).exists():
                    failures.append("COPY source missing: " + src)
        if w == "ADD" and re.search(r"https?://", r):
            failures.append("ADD of a URL")
        if w == "RUN" and "apt-get install" in r and "rm -rf /var/lib/apt/lists" not in r:
            failures.append("apt lists kept in the layer of: " + r[:60])
    if not any(w == "COPY" and "--from=" + build_name in r for w, r in runtime):
        failures.append("the runtime stage copies nothing from the build stage")
    users = [r for w, r in runtime if w == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        failures.append("the runtime stage does not end as a non-root user")
    entry = [r for w, r in runtime if w == "ENTRYPOINT"]
    if not entry or not isinstance(json.loads(entry[-1]), list):
        failures.append("ENTRYPOINT is not in exec form")
    if ("STOPSIGNAL", "SIGTERM") not in runtime:
        failures.append("no STOPSIGNAL SIGTERM (the daemon flushes to disk on SIGTERM)")
    values = (SRC / "deploy/helm/strata/values.yaml").read_text()
    port = re.search(r"^metrics:\s*\n\s+port:\s*(\d+)", values, re.M).group(1)
    if ("EXPOSE", port) not in runtime:
        failures.append("EXPOSE is not the chart's metrics port " + port)
    if shutil.which("hadolint"):
        r = subprocess.run(["hadolint", str(DOCKERFILE)], capture_output=True, text=True)
        if r.returncode != 0:
            failures.append("hadolint:\n" + r.stdout)
    print("%d stages: %s; runtime user %s; hadolint %s; image not built here" % (
        len(stages), " -> ".join(b for b, _, _ in stages), users[-1] if users else "-",
        "ran" if shutil.which("hadolint") else "not installed"))


main()
for f in failures:
    print("FAIL:", f)
sys.exit(1 if failures else 0)
