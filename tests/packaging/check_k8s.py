#!/usr/bin/env python3
"""deploy/k8s and deploy/helm/strata: every manifest parses and has the fields its kind needs,
and the chart renders (helm where installed, else deploy/helm/render_chart.py) under its default
values and the variations an operator sets, each rendering passing the same checks.

Usage: check_k8s.py SOURCE_DIR
"""
import json
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

SRC = pathlib.Path(sys.argv[1])
sys.path.insert(0, str(SRC / "deploy" / "helm"))
import render_chart  # noqa: E402

CONFIG_MD = (SRC / "docs" / "config.md").read_text()
NAMESPACED = {"DaemonSet", "StatefulSet", "Service", "Secret", "ConfigMap", "Pod",
              "ServiceMonitor"}
failures = []


def fail(where, msg):
    failures.append("%s: %s" % (where, msg))


def containers(pod_spec):
    return pod_spec.get("initContainers", []) + pod_spec.get("containers", [])


def check_pod_spec(where, spec, labels=None):
    if not spec.get("containers"):
        fail(where, "no containers")
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for c in containers(spec):
        w = "%s/%s" % (where, c.get("name"))
        for key in ("name", "image"):
            if not c.get(key):
                fail(w, "container without " + key)
        for m in c.get("volumeMounts", []):
            if m["name"] not in volumes and m["name"] not in labels.get("_claims", ()):
                fail(w, "mounts undefined volume " + m["name"])
        ports = {p.get("name") for p in c.get("ports", [])}
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            port = c.get(probe, {}).get("httpGet", {}).get("port")
            if isinstance(port, str) and port not in ports:
                fail(w, "%s uses port '%s' the container does not name" % (probe, port))
        for e in c.get("env", []):
            n = e["name"]
            if n.startswith("STRATA_") and "`%s`" % n not in CONFIG_MD:
                fail(w, "env %s is not a setting of docs/config.md" % n)
    return volumes


def check_strata_daemonset(where, ds):
    spec = ds["spec"]["template"]["spec"]
    c = next((c for c in spec["containers"] if c["name"] == "strata"), None)
    if c is None:
        return fail(where, "no container 'strata'")
    if c.get("args", [None])[0] != "serve":
        fail(where, "the strata container does not run `strata serve`")
    if "--metrics-addr" not in c.get("args", []):
        fail(where, "no --metrics-addr: probes and metrics need the HTTP endpoint")
    probes = {p: c.get(p, {}).get("httpGet", {}).get("path") for p in
              ("livenessProbe", "readinessProbe")}
    if probes != {"livenessProbe": "/healthz", "readinessProbe": "/readyz"}:
        fail(where, "probes are not /healthz (liveness) and /readyz (readiness): %s" % probes)
    caps = c.get("securityContext", {}).get("capabilities", {})
    if "IPC_LOCK" not in caps.get("add", []) or "ALL" not in caps.get("drop", []):
        fail(where, "capabilities must drop ALL and add IPC_LOCK (memlock)")
    psc = spec.get("securityContext", {})
    if not psc.get("runAsNonRoot") or not psc.get("runAsUser"):
        fail(where, "the daemon must run as a non-root uid")
    env = {e["name"]: e for e in c.get("env", [])}
    if env.get("STRATA_SOCKET", {}).get("value", "").rsplit("/", 1)[0] != "/run/strata":
        fail(where, "STRATA_SOCKET is not in /run/strata")
    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
    vols = {v["name"]: v for v in spec.get("volumes", [])}
    for path in ("/run/strata", "/var/lib/strata"):
        if "hostPath" not in vols.get(mounts.get(path), {}):
            fail(where, "%s is not a host path" % path)
    if "STRATA_CLUSTER_SECRET" in env:
        fail(where, "the cluster secret is a variable; mount it as a file")
    if "STRATA_CLUSTER_SECRET_FILE" in env:
        f = env["STRATA_CLUSTER_SECRET_FILE"]["value"]
        vol = vols.get(mounts.get(f.rsplit("/", 1)[0]), {})
        if "secret" not in vol:
            fail(where, "STRATA_CLUSTER_SECRET_FILE %s is not in a mounted Secret" % f)
        for need in ("STRATA_NODE_ID", "STRATA_ETCD", "STRATA_LISTEN_ADDR"):
            if need not in env:
                fail(where, "clustered without " + need)
    for r in ("requests", "limits"):
        if "memory" not in c.get("resources", {}).get(r, {}):
            fail(where, "no memory %s (the host pool counts in it)" % r)
    if ds["spec"].get("updateStrategy", {}).get("type") != "RollingUpdate":
        fail(where, "updateStrategy is not RollingUpdate")


def check_docs(where, docs):
    """Checks one set of objects (a directory of manifests or one rendering)."""
    by_kind = {}
    for d in docs:
        if d is None:
            continue
        w = "%s %s/%s" % (where, d.get("kind"), d.get("metadata", {}).get("name"))
        for key in ("apiVersion", "kind", "metadata"):
            if key not in d:
                fail(w, "no " + key)
        if not d.get("metadata", {}).get("name"):
            fail(w, "no metadata.name")
        if d.get("kind") in NAMESPACED and not d["metadata"].get("namespace"):
            fail(w, "no metadata.namespace")
        by_kind.setdefault(d.get("kind"), []).append(d)
        kind = d.get("kind")
        if kind in ("DaemonSet", "StatefulSet"):
            sel = d["spec"]["selector"]["matchLabels"]
            labels = d["spec"]["template"]["metadata"]["labels"]
            if any(labels.get(k) != v for k, v in sel.items()):
                fail(w, "selector %s does not match the pod labels %s" % (sel, labels))
            claims = [t["metadata"]["name"] for t in d["spec"].get("volumeClaimTemplates", [])]
            check_pod_spec(w, d["spec"]["template"]["spec"], dict(labels, _claims=claims))
        if kind == "DaemonSet" and d["metadata"]["name"].startswith("strata"):
            check_strata_daemonset(w, d)
        if kind == "Pod":
            check_pod_spec(w, d["spec"], {})
        if kind == "Secret" and not (d.get("data") or d.get("stringData")):
            fail(w, "Secret without data")
        if kind == "ConfigMap" and re.search(r"cluster_secret\s*:", json.dumps(d.get("data"))):
            fail(w, "a cluster secret in a ConfigMap")
        if kind == "ServiceMonitor":
            ep = d["spec"]["endpoints"]
            if not ep or ep[0].get("path") != "/metrics":
                fail(w, "endpoint path is not /metrics")
    workloads = [x["spec"]["template"]["metadata"]["labels"]
                 for k in ("DaemonSet", "StatefulSet") for x in by_kind.get(k, [])]
    for s in by_kind.get("Service", []):
        sel = s["spec"].get("selector", {})
        if workloads and not any(all(l.get(k) == v for k, v in sel.items()) for l in workloads):
            fail("%s Service/%s" % (where, s["metadata"]["name"]), "selects no workload")
    for st in by_kind.get("StatefulSet", []):
        names = {s["metadata"]["name"] for s in by_kind.get("Service", [])
                 if s["spec"].get("clusterIP") == "None"}
        if st["spec"]["serviceName"] not in names:
            fail("%s StatefulSet" % where, "serviceName is not a headless Service")
    return by_kind


def load_dir(path):
    docs = []
    for f in sorted(path.glob("*.yaml")):
        try:
            docs += [(f.name, d) for d in yaml.safe_load_all(f.read_text())]
        except yaml.YAMLError as e:
            fail(f.name, "does not parse: %s" % e)
    return docs


def render(overrides):
    if shutil.which("helm"):
        args = ["helm", "template", "strata", str(SRC / "deploy/helm/strata"), "-n", "strata"]
        for k, v in overrides.items():
            args += ["--set-string" if isinstance(v, str) else "--set", "%s=%s" % (k, v)]
        out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
        return [d for d in yaml.safe_load_all(out) if d]
    texts = render_chart.render_chart(SRC / "deploy/helm/strata", overrides)
    return [d for n, t in texts.items() if n.endswith(".yaml") for d in yaml.safe_load_all(t)
            if d]


def main():
    # deploy/k8s: plain manifests.
    k8s = load_dir(SRC / "deploy" / "k8s")
    kinds = check_docs("deploy/k8s", [d for _, d in k8s])
    for kind in ("Namespace", "Secret", "DaemonSet", "StatefulSet", "Service", "ServiceMonitor",
                 "Pod"):
        if kind not in kinds:
            fail("deploy/k8s", "no " + kind)
    ds = kinds["DaemonSet"][0]["spec"]["template"]["spec"]
    for pod in kinds.get("Pod", []):
        c = pod["spec"]["containers"][0]
        sc = pod["spec"].get("securityContext", {})
        env = {v["name"]: v.get("value") for v in c.get("env", [])}
        trusted = (env.get("STRATA_DAEMON_USER") or "").split(",")
        if (sc.get("runAsUser") != ds["securityContext"]["runAsUser"] and
                str(ds["securityContext"]["runAsUser"]) not in trusted):
            fail("engine pod", "neither runs as the daemon's uid nor trusts it in "
                 "STRATA_DAEMON_USER (the client checks the socket's owner)")
        if ds["securityContext"]["runAsGroup"] not in sc.get("supplementalGroups", []):
            fail("engine pod", "not in the daemon's socket group")
        if not any(v.get("hostPath", {}).get("path") == "/run/strata"
                   for v in pod["spec"]["volumes"]):
            fail("engine pod", "does not mount the host's /run/strata")
        cfg = json.loads(c["command"][c["command"].index("--kv-transfer-config") + 1])
        module = cfg["kv_connector_module_path"]
        if not (SRC / "lib/python" / (module.replace(".", "/") + ".py")).exists():
            fail("engine pod", "connector module %s does not exist" % module)
        if cfg["kv_connector_extra_config"]["strata.socket"] != "/run/strata/strata.sock":
            fail("engine pod", "connector socket is not /run/strata/strata.sock")
    with tempfile.TemporaryDirectory() as tmp:  # generated from the chart: still in step?
        subprocess.run(["bash", str(SRC / "deploy/k8s/generate.sh"), tmp], check=True)
        for f in ("strata.yaml", "servicemonitor.yaml"):
            if (pathlib.Path(tmp) / f).read_text() != (SRC / "deploy/k8s" / f).read_text():
                fail("deploy/k8s/" + f, "differs from the chart's rendering: run generate.sh")

    # The chart.
    chart = yaml.safe_load((SRC / "deploy/helm/strata/Chart.yaml").read_text())
    version = re.search(r"project\(strata VERSION ([\d.]+)",
                        (SRC / "CMakeLists.txt").read_text()).group(1)
    for key in ("apiVersion", "name", "version", "appVersion"):
        if not chart.get(key):
            fail("Chart.yaml", "no " + key)
    if chart.get("appVersion") != version:
        fail("Chart.yaml", "appVersion %s is not the project's %s" % (chart["appVersion"], version))
    variations = {
        "defaults": {},
        "servicemonitor, huge pages, rdma, ucx tls, device pool": {
            "metrics.serviceMonitor.enabled": True, "resources.hugepages2Mi": "64Gi",
            "transport.rdma.enabled": True, "transport.ucxTls": "rc,tcp",
            "tiers.devicePool": "8GiB", "resources.gpu": 1},
        "secret from a value": {"cluster.secret.value": "0123456789abcdef0123456789abcdef"},
        "existing etcd": {"cluster.etcd.deploy": False,
                          "cluster.etcd.endpoints": "http://etcd.infra:2379"},
        "single node": {"cluster.enabled": False},
    }
    for name, overrides in variations.items():
        kinds = check_docs("chart (%s)" % name, render(overrides))
        ds = kinds.get("DaemonSet", [None])[0]
        if ds is None:
            fail("chart (%s)" % name, "no DaemonSet")
            continue
        env = {e["name"]: e.get("value") for e in
               ds["spec"]["template"]["spec"]["containers"][0]["env"]}
        if env.get("STRATA_HOST_POOL") != "64GiB":
            fail("chart (%s)" % name, "STRATA_HOST_POOL is %s" % env.get("STRATA_HOST_POOL"))
        has_etcd = "StatefulSet" in kinds
        want_etcd = overrides.get("cluster.enabled", True) and \
            overrides.get("cluster.etcd.deploy", True)
        if has_etcd != want_etcd:
            fail("chart (%s)" % name, "etcd StatefulSet present: %s" % has_etcd)
        if "cluster.etcd.endpoints" in overrides and \
                env.get("STRATA_ETCD") != overrides["cluster.etcd.endpoints"]:
            fail("chart (%s)" % name, "STRATA_ETCD is %s" % env.get("STRATA_ETCD"))
        if ("ServiceMonitor" in kinds) != bool(overrides.get("metrics.serviceMonitor.enabled")):
            fail("chart (%s)" % name, "ServiceMonitor presence is wrong")
        if ("Secret" in kinds) != ("cluster.secret.value" in overrides):
            fail("chart (%s)" % name, "Secret presence is wrong")
        print("chart renders (%s): %s" % (name, ", ".join(
            "%d %s" % (len(v), k) for k, v in sorted(kinds.items()))))
    # A clustered release without any secret is refused at render time.
    try:
        render({"cluster.secret.existingSecret": ""})
        fail("chart", "renders a cluster without a secret")
    except (render_chart.TemplateError, subprocess.CalledProcessError):
        pass
    print("renderer:", "helm" if shutil.which("helm") else "deploy/helm/render_chart.py")
    print("deploy/k8s: %d objects in %d files" % (len(k8s), len({f for f, _ in k8s})))
    for f in failures:
        print("FAIL:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
