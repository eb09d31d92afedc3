# The connect time and page tables (VmPTE) of a client process per STRATA_MAP_POOL mode
# (docs/benchmarks.md, "The pool's page tables filled in the background"): one
# `strata serve --no-disk` with a populated pool, each client a fresh process.
# Usage: PYTHONPATH=build/python python3 tools/bench/map_pool_connect.py build/bin/strata 8GiB 3
import os, subprocess, sys, tempfile, time, json
cli, pool, reps = sys.argv[1], sys.argv[2], int(sys.argv[3])
d = tempfile.mkdtemp(prefix="mp14-"); sock = d + "/s.sock"
srv = subprocess.Popen([cli, "serve", "--socket", sock, "--no-disk", "--host-pool", pool],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
child = r'''
import os, sys, time, strata
def pte():
    for l in open("/proc/self/status"):
        if l.startswith("VmPTE:"): return int(l.split()[1])
def filler():
    for t in os.listdir("/proc/self/task"):
        if open(f"/proc/self/task/{t}/comm").read().strip() == "strata-poolfill": return True
    return False
p0 = pte(); t0 = time.monotonic(); c = strata.Client.connect(sys.argv[1]); t1 = time.monotonic()
p1 = pte(); end = time.monotonic() + 120
while filler() and time.monotonic() < end: time.sleep(0.01)
t2 = time.monotonic(); p2 = pte()
print(f"{(t1-t0)*1e3:.1f} {p1-p0} {(t2-t1)*1e3:.0f} {p2-p0}")
'''
try:
    end = time.time() + 30
    while not os.path.exists(sock): time.sleep(0.05)
    time.sleep(0.2)
    sys.path.insert(0, os.environ["PYTHONPATH"].split(":")[0])
    import strata
    os.environ["STRATA_MAP_POOL"] = "first_load"
    c = strata.Client.connect(sock)
    while c.stats().get("pool_populating"): time.sleep(0.1)
    del c
    del os.environ["STRATA_MAP_POOL"]
    print("mode connect_ms VmPTE_kB_after_connect filler_ms VmPTE_kB_after_fill")
    for r in range(reps):
        for mode in ["first_load", "background", "connect"]:
            out = subprocess.run([sys.executable, "-c", child, sock], capture_output=True, text=True,
                                 env=dict(os.environ, STRATA_MAP_POOL=mode))
            print(mode, out.stdout.strip(), out.stderr.strip()[-300:], flush=True)
finally:
    srv.terminate(); srv.wait()
