#!/usr/bin/env python3
"""deploy/monitoring: the Prometheus scrape configuration parses and scrapes /metrics; every
panel of the Grafana dashboard queries metric families and labels that the daemon exports
(lib/daemon/metrics.cc), so a renamed metric fails here instead of showing an empty panel.
Exit 77 (skipped) in a tree without lib/daemon/metrics.cc.

Usage: check_monitoring.py SOURCE_DIR
"""
import json
import pathlib
import re
import sys

import yaml

SRC = pathlib.Path(sys.argv[1])
metrics_cc = SRC / "lib/daemon/metrics.cc"
if not metrics_cc.exists():
    print("SKIP: no lib/daemon/metrics.cc in this tree")
    sys.exit(77)
source = metrics_cc.read_text()
families = set(re.findall(r'"(strata_[a-z0-9_]+)"', source))
labels = set(re.findall(r'Label\("([a-z_]+)"', source)) | {"le", "instance", "job", "node"}
failures = []

prom = yaml.safe_load((SRC / "deploy/monitoring/prometheus.yml").read_text())
for job in prom["scrape_configs"]:
    if job.get("metrics_path") != "/metrics":
        failures.append("scrape job %s: metrics_path is not /metrics" % job["job_name"])
values = yaml.safe_load((SRC / "deploy/helm/strata/values.yaml").read_text())
port = str(values["metrics"]["port"])
for t in prom["scrape_configs"][0]["static_configs"][0]["targets"]:
    if not t.endswith(":" + port):
        failures.append("static target %s is not on the metrics port %s" % (t, port))

dash = json.loads((SRC / "deploy/monitoring/grafana-dashboard.json").read_text())
ids = set()
for p in dash["panels"]:
    if p["id"] in ids:
        failures.append("panel id %d twice" % p["id"])
    ids.add(p["id"])
    if not p.get("targets"):
        failures.append("panel '%s' has no query" % p["title"])
    for t in p["targets"]:
        expr = t["expr"]
        if expr.count("(") != expr.count(")"):
            failures.append("panel '%s': unbalanced parentheses" % p["title"])
        for name in re.findall(r"\b(strata_[a-z0-9_]+)", expr):
            if name not in families:
                failures.append("panel '%s': %s is not exported" % (p["title"], name))
        used = set(re.findall(r"\bby \(([^)]*)\)", expr))
        used = {l.strip() for group in used for l in group.split(",")}
        used |= set(re.findall(r"[{,]([a-z_]+)=~?\"", expr))
        for label in used - labels:
            failures.append("panel '%s': label %s is not exported" % (p["title"], label))
print("%d panels, %d metric families exported" % (len(dash["panels"]), len(families)))
for f in failures:
    print("FAIL:", f)
sys.exit(1 if failures else 0)
