#!/usr/bin/env python3
"""`strata bench peers`: Strata beside the systems operators already run, same machine, same
workload, same run (issue 18; docs/benchmarks.md "Side by side").

Systems: Strata (`strata serve`, the daemon an engine talks to), Mooncake Store (`mooncake_master`
plus a store service process holding the memory, clients over TCP, zero-copy put_from/get_into
on registered buffers) and LMCache (its local CPU backend). Each case runs in fresh server
processes started here on loopback and stopped afterwards. A case a system cannot run on this
machine prints that system's own error, never an estimate.

Cases (JSON lines in DESIGN.md's format with --json; `baseline` names the peer and its version):
  put_get/<size>/clients=<n>   store then load every block, per-op p50/p99 and GB/s
  restart/<size>               share of the blocks served after kill -9 and restart
  trace/capacity=<f>           hit ratio of Strata's eviction policy and of LMCache's own policy
                               objects (LRU, LFU, FIFO) on the shipped trace, same replay model
  overhead/<size>              server memory (RSS growth while storing) per cached block beyond
                               the payload (negative: the server holds less than the payload,
                               e.g. memory it had touched before the run)

Run with the peers' virtual environment (deploy/install-peers.sh) and the strata package of this
build on PYTHONPATH; `strata bench peers` does both.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from importlib import metadata

import numpy as np

SIZES = {"64KiB": 64 << 10, "2MiB": 2 << 20}


# ---- helpers ------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def pct(values, q):
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))] if v else float("nan")


def version_of(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def stop(proc: subprocess.Popen, sig=signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---- systems ------------------------------------------------------------------------------------

def strata_ns(block_bytes: int):
    import strata
    # bf16 KV: 64 KiB = 2 layers x 2 planes x 16 tokens x 4 heads x 128; 2 MiB = Llama-3.1-8B
    # (32 layers, 8 KV heads, head dim 128, 16-token blocks).
    if block_bytes == 64 << 10:
        return strata.Namespace("bench/peers-64k", num_layers=2, num_kv_heads=4, head_dim=128)
    return strata.Namespace("bench/peers-2m", num_layers=32, num_kv_heads=8, head_dim=128)


class Strata:
    name = "strata"

    def __init__(self, cli: str):
        self.cli = cli
        self.version = subprocess.run([cli, "version"], capture_output=True,
                                      text=True).stdout.strip() or "?"

    def start(self, capacity: int, data_dir: str | None = None):
        self.dir = tempfile.mkdtemp(prefix="strata-peers-")
        self.sock = os.path.join(self.dir, "s.sock")
        args = [self.cli, "serve", "--socket", self.sock, "--host-pool", str(capacity)]
        args += ["--data-dir", data_dir] if data_dir else ["--no-disk"]
        # With a disk tier, write-through: what an operator who wants a cache that survives a
        # crash configures (write-back reaches disk on eviction and clean shutdown only).
        env = dict(os.environ, STRATA_WRITE_THROUGH="true" if data_dir else "false")
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     env=env)
        end = time.monotonic() + 20
        while not os.path.exists(self.sock):
            if self.proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError("strata serve did not start: " +
                                   self.proc.stderr.read().decode(errors="replace")[-400:])
            time.sleep(0.02)
        return self

    def server_pids(self):
        return [self.proc.pid]

    def client_args(self):
        return {"sock": self.sock}

    def stop(self, sig=signal.SIGTERM):
        stop(self.proc, sig)


class StrataClient:
    def __init__(self, args, block_bytes):
        import strata
        self.c = strata.Client.connect(args["sock"])
        self.ns = strata_ns(block_bytes)
        assert self.ns.block_bytes == block_bytes

    def prepare(self, ids) -> None:
        # Keys of the namespace (XXH3-128(ns id || id)), computed before the clock starts.
        ids = list(ids)
        self.keys = dict(zip(ids, self.ns.engine_keys([i.to_bytes(16, "big") for i in ids])))

    def put(self, i: int, buf: np.ndarray) -> None:
        self.c.store(self.ns, [self.keys[i]], [buf])

    def get(self, i: int, buf: np.ndarray) -> bool:
        return self.c.load(self.ns, [self.keys[i]], [buf]) == 1


class Mooncake:
    name = "mooncake"

    def __init__(self):
        import mooncake  # noqa: F401  (fails here, with Mooncake's own error, if missing)
        self.pkg = os.path.dirname(sys.modules["mooncake"].__file__)
        self.version = version_of("mooncake-transfer-engine-non-cuda")

    def start(self, capacity: int, data_dir: str | None = None):
        if data_dir:
            raise RuntimeError("mooncake: no persistent tier in this benchmark's setup "
                               "(its SSD offload needs a local file system path per client and "
                               "is not recovered by a restarted master)")
        self.rpc = free_port()
        self.master = subprocess.Popen(
            [os.path.join(self.pkg, "mooncake_master"), f"--rpc_port={self.rpc}",
             "--rpc_address=127.0.0.1", "--enable_http_metadata_server=false",
             "--default_kv_lease_ttl=600000"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_port(self.rpc)
        # The memory lives in a store service process (a client that mounts a segment and
        # serves), so that clients come and go like engine processes do beside Strata's daemon.
        self.ready = tempfile.mktemp(prefix="mooncake-ready-")
        code = (
            "import sys, time, os\n"
            "from mooncake.store import MooncakeDistributedStore\n"
            "s = MooncakeDistributedStore()\n"
            f"rc = s.setup('127.0.0.1', 'P2PHANDSHAKE', {capacity}, 16 << 20, 'tcp', '',"
            f" '127.0.0.1:{self.rpc}')\n"
            "if rc != 0: sys.exit(f'setup failed: {rc}')\n"
            f"open({self.ready!r}, 'w').close()\n"
            "while True: time.sleep(3600)\n")
        self.service = subprocess.Popen([sys.executable, "-c", code],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        end = time.monotonic() + 60
        while not os.path.exists(self.ready):
            if self.service.poll() is not None or time.monotonic() > end:
                err = self.service.stderr.read().decode(errors="replace")[-600:]
                self.stop()
                raise RuntimeError("mooncake store service did not start: " + err)
            time.sleep(0.05)
        return self

    def server_pids(self):
        return [self.master.pid, self.service.pid]

    def client_args(self):
        return {"rpc": self.rpc}

    def stop(self, sig=signal.SIGTERM):
        for p in (getattr(self, "service", None), getattr(self, "master", None)):
            if p is not None:
                stop(p, sig)


class MooncakeClient:
    def __init__(self, args, block_bytes):
        from mooncake.store import MooncakeDistributedStore
        self.s = MooncakeDistributedStore()
        rc = self.s.setup("127.0.0.1", "P2PHANDSHAKE", 0, 16 << 20, "tcp", "",
                          f"127.0.0.1:{args['rpc']}")
        if rc != 0:
            raise RuntimeError(f"mooncake client setup failed: {rc}")
        self.registered = set()

    def prepare(self, ids) -> None:
        pass

    def _reg(self, buf: np.ndarray) -> int:
        ptr = buf.ctypes.data
        if ptr not in self.registered:
            rc = self.s.register_buffer(ptr, buf.nbytes)
            if rc != 0:
                raise RuntimeError(f"mooncake register_buffer failed: {rc}")
            self.registered.add(ptr)
        return ptr

    def put(self, i: int, buf: np.ndarray) -> None:
        rc = self.s.put_from(f"blk{i}", self._reg(buf), buf.nbytes)
        if rc != 0:
            raise RuntimeError(f"mooncake put_from failed: {rc}")

    def get(self, i: int, buf: np.ndarray) -> bool:
        return self.s.get_into(f"blk{i}", self._reg(buf), buf.nbytes) == buf.nbytes


class LmcacheCpu:
    """LMCache's local CPU backend (LocalCPUBackend: its allocator, hot cache and eviction
    policy), driven in each client process as LMCache runs inside each engine worker: it has no
    server of its own for this backend, so clients=4 are four caches, not one shared."""
    name = "lmcache"

    def __init__(self):
        from lmcache.v1.storage_backend.local_cpu_backend import LocalCPUBackend  # noqa: F401
        self.version = version_of("lmcache")

    def start(self, capacity: int, data_dir: str | None = None):
        if data_dir:
            raise RuntimeError("lmcache: LocalCPUBackend is process memory: nothing survives its "
                               "engine process (its local-disk backend is not measured here)")
        self.capacity = capacity
        return self

    def server_pids(self):
        return []

    def client_args(self):
        return {"capacity": self.capacity}

    def stop(self, sig=signal.SIGTERM):
        pass


class LmcacheClient:
    def __init__(self, args, block_bytes):
        import torch
        from lmcache.utils import CacheEngineKey
        from lmcache.v1.config import LMCacheEngineConfig
        from lmcache.v1.metadata import LMCacheMetadata
        from lmcache.v1.storage_backend.local_cpu_backend import LocalCPUBackend
        # The same bf16 KV shapes as Strata's namespaces (strata_ns): [2, layers, tokens, H*D].
        layers, heads = (2, 4) if block_bytes == 64 << 10 else (32, 8)
        self.shape = torch.Size([2, layers, 16, heads * 128])
        cfg = LMCacheEngineConfig.from_defaults(chunk_size=16, local_cpu=True,
                                                max_local_cpu_size=args["capacity"] / 2**30)
        md = LMCacheMetadata(model_name="bench", world_size=1, local_world_size=1, worker_id=0,
                             local_worker_id=0, kv_dtype=torch.bfloat16,
                             kv_shape=(layers, 2, 16, heads, 128), chunk_size=16)
        self.torch, self.key_type = torch, CacheEngineKey
        self.backend = LocalCPUBackend(cfg, md)

    def prepare(self, ids) -> None:
        self.keys = {i: self.key_type("bench", 1, 0, i, self.torch.bfloat16) for i in ids}

    def put(self, i: int, buf: np.ndarray) -> None:
        obj = self.backend.allocate(self.shape, self.torch.bfloat16)
        if obj is None:
            raise RuntimeError("lmcache: allocate returned None (cache full)")
        obj.tensor.view(self.torch.uint8).view(-1).copy_(self.torch.from_numpy(buf))
        self.backend.submit_put_task(self.keys[i], obj)
        obj.ref_count_down()

    def get(self, i: int, buf: np.ndarray) -> bool:
        obj = self.backend.get_blocking(self.keys[i])
        if obj is None:
            return False
        self.torch.from_numpy(buf).copy_(obj.tensor.view(self.torch.uint8).view(-1))
        obj.ref_count_down()
        return True


CLIENTS = {"strata": StrataClient, "mooncake": MooncakeClient, "lmcache": LmcacheClient}


# ---- workload -----------------------------------------------------------------------------------

def worker(system, args, block_bytes, first, count, barrier, out):
    try:
        client = CLIENTS[system](args, block_bytes)
        client.prepare(range(first, first + count))
        rng = np.random.default_rng(first)
        src = rng.integers(0, 255, size=block_bytes, dtype=np.uint8)
        dst = np.zeros(block_bytes, dtype=np.uint8)
        put_lat, get_lat = [], []
        barrier.wait()
        t0 = time.perf_counter()
        for i in range(first, first + count):
            src[:8] = np.frombuffer(i.to_bytes(8, "little"), dtype=np.uint8)
            s = time.perf_counter()
            client.put(i, src)
            put_lat.append(time.perf_counter() - s)
        t1 = time.perf_counter()
        barrier.wait()
        t2 = time.perf_counter()
        ok = 0
        for i in range(first, first + count):
            s = time.perf_counter()
            got = client.get(i, dst)
            get_lat.append(time.perf_counter() - s)
            ok += bool(got) and int.from_bytes(dst[:8].tobytes(), "little") == i
        t3 = time.perf_counter()
        out.put({"put": put_lat, "get": get_lat, "put_span": (t0, t1), "get_span": (t2, t3),
                 "ok": ok})
    except Exception as e:
        out.put({"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()})


def put_get(system_obj, block_bytes, clients, blocks_per_client):
    capacity = int(block_bytes * clients * blocks_per_client * 1.5) + (64 << 20)
    system_obj.start(capacity)
    try:
        rss0 = sum(rss_bytes(pid) for pid in system_obj.server_pids())
        ctx = mp.get_context("spawn")
        barrier, out = ctx.Barrier(clients), ctx.Queue()
        procs = [ctx.Process(target=worker, args=(system_obj.name, system_obj.client_args(),
                                                  block_bytes, c * 1_000_000, blocks_per_client,
                                                  barrier, out)) for c in range(clients)]
        for p in procs:
            p.start()
        results = [out.get(timeout=600) for _ in procs]
        for p in procs:
            p.join(timeout=30)
        errors = [r for r in results if "error" in r]
        if errors:
            raise RuntimeError(errors[0]["error"])
        pids = system_obj.server_pids()
        rss = sum(rss_bytes(pid) for pid in pids) - rss0 if pids else None
    finally:
        system_obj.stop()
    total = block_bytes * clients * blocks_per_client
    span = lambda k: (max(r[k][1] for r in results) - min(r[k][0] for r in results))  # noqa
    lat = lambda k: [x for r in results for x in r[k]]  # noqa
    return {
        "put_GBps": total / span("put_span") / 1e9, "get_GBps": total / span("get_span") / 1e9,
        "put_p50_us": pct(lat("put"), 0.5) * 1e6, "put_p99_us": pct(lat("put"), 0.99) * 1e6,
        "get_p50_us": pct(lat("get"), 0.5) * 1e6, "get_p99_us": pct(lat("get"), 0.99) * 1e6,
        "verified": sum(r["ok"] for r in results) / (clients * blocks_per_client),
        "rss_per_block": (None if rss is None
                          else rss / (clients * blocks_per_client) - block_bytes),
    }


def _phase_in_child(ctx, system_obj, block_bytes, blocks, phase):
    """Runs _restart_phase in a fresh client process; returns its result or raises its error."""
    q = ctx.Queue()
    p = ctx.Process(target=_restart_phase, args=(system_obj.name, system_obj.client_args(),
                                                block_bytes, blocks, phase, q))
    p.start()
    r = q.get(timeout=600)
    p.join()
    if "error" in r:
        raise RuntimeError(r["error"])
    return r


def restart_case(system_obj, block_bytes, blocks):
    """Blocks served after kill -9 of the server and a restart on the same data directory."""
    d = tempfile.mkdtemp(prefix="peers-restart-")
    capacity = block_bytes * blocks * 2 + (64 << 20)
    ctx = mp.get_context("spawn")
    try:
        system_obj.start(capacity, data_dir=d)
        try:
            _phase_in_child(ctx, system_obj, block_bytes, blocks, "put")
            time.sleep(1.0)  # let write-through reach the disk tier, as an operator's restart would
        finally:
            system_obj.stop(signal.SIGKILL)
        system_obj.start(capacity, data_dir=d)
        try:
            return _phase_in_child(ctx, system_obj, block_bytes, blocks, "get")["ok"] / blocks
        finally:
            system_obj.stop()
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _restart_phase(system, args, block_bytes, blocks, phase, out):
    try:
        c = CLIENTS[system](args, block_bytes)
        c.prepare(range(blocks))
        buf = np.zeros(block_bytes, dtype=np.uint8)
        ok = 0
        for i in range(blocks):
            if phase == "put":
                buf[:8] = np.frombuffer(i.to_bytes(8, "little"), dtype=np.uint8)
                c.put(i, buf)
                ok += 1
            else:
                ok += c.get(i, buf) and int.from_bytes(buf[:8].tobytes(), "little") == i
        out.put({"ok": ok})
    except Exception as e:
        out.put({"error": f"{type(e).__name__}: {e}"})


def read_chains(path: str):
    with open(path) as f:
        return [json.loads(line)["hash_ids"] for line in f if line.strip()]


class _Slot:
    """A cached block as LMCache's policies see a MemoryObj: only can_evict is consulted."""
    __slots__ = ("can_evict",)

    def __init__(self):
        self.can_evict = True


def replay_lmcache_policy(policy_name: str, chains, capacity: int) -> float:
    """Hit ratio of LMCache's own cache policy object (lmcache.v1.storage_backend.cache_policy),
    driven the way LocalCPUBackend drives it, in Strata's replay model (tools/bench/
    policy_replay.h): a request hits its longest cached prefix; then its blocks are inserted or
    touched in chain order, the request's own blocks pinned (not evictable) while it is served."""
    import logging
    logging.disable(logging.INFO)
    from lmcache.v1.storage_backend.cache_policy import get_cache_policy
    policy = get_cache_policy(policy_name)
    cache = policy.init_mutable_mapping()
    hit = requested = 0
    for chain in chains:
        requested += len(chain)
        n = 0
        while n < len(chain) and chain[n] in cache:
            n += 1
        hit += n
        pinned = []
        for b in chain:
            if b in cache:
                policy.update_on_hit(b, cache)
            else:
                while len(cache) >= capacity:
                    victims = policy.get_evict_candidates(cache, num_candidates=1)
                    if not victims:
                        break
                    policy.update_on_force_evict(victims[0])
                    del cache[victims[0]]
                if len(cache) >= capacity:
                    continue  # everything cached is this request's: LMCache skips the put
                cache[b] = _Slot()
                policy.update_on_put(b)
            cache[b].can_evict = False
            pinned.append(b)
        for b in pinned:
            if b in cache:
                cache[b].can_evict = True
    return hit / requested if requested else 0.0


def trace_rows(cli: str, trace: str, fractions, lmcache_version: str, policy: str = "learned"):
    out = subprocess.run([cli, "bench", "trace", "--json", "--trace", trace, "--policy",
                          f"{policy},lru", "--capacity-fraction", ",".join(map(str, fractions))],
                         capture_output=True, text=True, check=True).stdout
    mine = {}
    for line in out.splitlines():
        r = json.loads(line)
        mine[(round(r["capacity_fraction"], 3), r["policy"])] = r
    chains = read_chains(trace)
    rows = []
    for f in fractions:
        strata_default = next(v for k, v in mine.items() if abs(k[0] - f) < 1e-3 and
                              k[1] == policy)
        cap = strata_default["capacity_blocks"]
        for name in ("LRU", "LFU", "FIFO"):
            theirs = replay_lmcache_policy(name, chains, cap)
            r = row(f"trace/capacity={f:g}/strata={policy}", "hit_ratio",
                    strata_default["hit_ratio"],
                    f"lmcache {lmcache_version} {name}", theirs)
            r.update({"capacity_blocks": cap, "belady_hit_ratio":
                      strata_default["belady_hit_ratio"], "strata_lru_hit_ratio":
                      strata_default["lru_hit_ratio"]})
            rows.append(r)
    return rows


# ---- report -------------------------------------------------------------------------------------

def emit(rows, as_json):
    for r in rows:
        if as_json:
            print(json.dumps(r), flush=True)
        else:
            fmt = lambda x: "n/a" if x is None else f"{x:.4g}"  # noqa: E731
            v = "ERROR " + r["error"] if "error" in r else \
                f"{fmt(r['value'])} vs {fmt(r['baseline_value'])}  ratio {fmt(r['ratio'])}"
            print(f"{r['case']:<30} {r.get('metric', ''):<18} {r.get('baseline', ''):<28} {v}",
                  flush=True)


def row(case, metric, value, peer, peer_value, higher_better=True):
    ratio = (value / peer_value if higher_better else peer_value / value) \
        if value and peer_value else None
    return {"bench": "peers", "case": case, "metric": metric, "value": value,
            "baseline": peer, "baseline_value": peer_value, "ratio": ratio}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--strata-cli", default=os.environ.get("STRATA_CLI", "strata"))
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--sizes", default="64KiB,2MiB")
    ap.add_argument("--clients", default="1,4")
    ap.add_argument("--trace", default="",
                    help="Mooncake-format trace for the policy replay (default: the one shipped "
                         "next to the strata binary)")
    ap.add_argument("--strata-policy", default="learned",
                    help="Strata's eviction policy in the replay (default: the daemon's default)")
    ap.add_argument("--capacity-fraction", default="0.05,0.1",
                    help="trace replay capacities, fractions of the unique blocks")
    ap.add_argument("--mib-per-client", type=int, default=256,
                    help="bytes each client stores per case (MiB); default 256")
    a = ap.parse_args(argv)

    strata_sys = Strata(a.strata_cli)
    peers = []
    for cls in (Mooncake, LmcacheCpu):
        try:
            peers.append(cls())
        except Exception as e:  # the peer's own import error: printed, nothing estimated
            print(json.dumps({"bench": "peers", "case": f"{cls.name}/import", "error":
                              f"{type(e).__name__}: {e} (deploy/install-peers.sh installs it)"}),
                  flush=True)
    # Eviction policy on the trace: LMCache's policies are Python objects that can be driven
    # offline; Mooncake's eviction runs inside mooncake_master (C++) and cannot.
    trace = a.trace or os.path.join(os.path.dirname(os.path.realpath(a.strata_cli)), "..",
                                    "share", "strata", "mooncake_synthetic_trace.jsonl")
    fractions = [float(x) for x in a.capacity_fraction.split(",") if x]
    lm = next((p for p in peers if p.name == "lmcache"), None)
    if lm is not None and os.path.exists(trace):
        try:
            emit(trace_rows(a.strata_cli, trace, fractions, lm.version, a.strata_policy),
                 a.json)
        except Exception as e:
            emit([{"bench": "peers", "case": "trace", "error": f"{type(e).__name__}: {e}"}],
                 a.json)
    emit([{"bench": "peers", "case": "trace", "baseline": "mooncake", "error":
           "mooncake: eviction runs inside mooncake_master (C++), not drivable offline"}], a.json)
    rows = []
    for size_name in a.sizes.split(","):
        block = SIZES[size_name]
        for n in map(int, a.clients.split(",")):
            per_client = max(8, (a.mib_per_client << 20) // block // n)
            case = f"put_get/{size_name}/clients={n}"
            try:
                mine = put_get(strata_sys, block, n, per_client)
            except Exception as e:
                emit([{"bench": "peers", "case": case, "error": f"strata: {e}"}], a.json)
                continue
            for peer in peers:
                label = f"{peer.name} {peer.version}"
                try:
                    theirs = put_get(peer, block, n, per_client)
                except Exception as e:
                    emit([{"bench": "peers", "case": case, "baseline": label,
                           "error": str(e)}], a.json)
                    continue
                out = [row(case, "put_GB/s", mine["put_GBps"], label, theirs["put_GBps"]),
                       row(case, "get_GB/s", mine["get_GBps"], label, theirs["get_GBps"]),
                       row(case, "put_p50_us", mine["put_p50_us"], label, theirs["put_p50_us"],
                           False),
                       row(case, "put_p99_us", mine["put_p99_us"], label, theirs["put_p99_us"],
                           False),
                       row(case, "get_p50_us", mine["get_p50_us"], label, theirs["get_p50_us"],
                           False),
                       row(case, "get_p99_us", mine["get_p99_us"], label, theirs["get_p99_us"],
                           False),
                       row(case, "verified", mine["verified"], label, theirs["verified"])]
                if n == 1:
                    out.append(row(f"overhead/{size_name}", "rss_B/block",
                                   mine["rss_per_block"], label, theirs["rss_per_block"], False))
                emit(out, a.json)
                rows += out
        case = f"restart/{size_name}"
        blocks = max(8, (64 << 20) // block)
        try:
            mine = restart_case(strata_sys, block, blocks)
        except Exception as e:
            emit([{"bench": "peers", "case": case, "error": f"strata: {e}"}], a.json)
            continue
        for peer in peers:
            label = f"{peer.name} {peer.version}"
            try:
                theirs = restart_case(peer, block, blocks)
                emit([row(case, "served_after_kill", mine, label, theirs)], a.json)
            except Exception as e:
                emit([{"bench": "peers", "case": case, "metric": "served_after_kill",
                       "value": mine, "baseline": label, "error": str(e)}], a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
