#!/usr/bin/env python3
"""`strata bench peers`: Strata beside the systems operators already run, same machine, same
workload, same run (issue 18; docs/benchmarks.md "peers").

Systems: Strata (`strata serve`, the daemon an engine talks to), Mooncake Store (`mooncake_master`
plus a store service process holding the memory, clients over TCP, zero-copy put_from/get_into
on registered buffers; its SSD offload for the restart case) and its transfer engine, LMCache (its
local CPU backend in the client process, its local-disk backend, its cache server with the remote
backend) and vLLM's native offloading (CPU and file-system tier). Each case runs in fresh server
processes started here on loopback and stopped afterwards. A case a system cannot run on this
machine prints that system's own error, never an estimate.

Cases (JSON lines in DESIGN.md's format with --json; `baseline` names the peer and its version;
--cases picks them):
  put_get/<size>/clients=<n>   store then load every block, per-op p50/p99 and GB/s (a disk peer
                               against Strata with its disk tier, write-through, acknowledged at
                               the same durability as the peer's put: strata_tier "disk" =
                               O_DIRECT, on the device; "disk-page-cache" = buffered, in the page
                               cache; each row's `durability` says which)
  transfer/<size>/blocks=<n>   prefill -> decode between two nodes: Strata's peer pull between two
                               `strata serve` against Mooncake's TransferEngine over tcp, GB/s and
                               one-block p50/p99
  restart/<size>               share of the blocks served after kill -9 and restart
  trace/capacity=<f>           hit ratio of Strata's eviction policy and of LMCache's own policy
                               objects (LRU, LFU, FIFO) on the shipped trace, same replay model
  overhead/<size>              per cached block: memory growth while storing (payload included)
                               and footprint beyond the payload (PSS of anonymous and shared
                               memory, /proc/PID/smaps_rollup over servers and clients, so shared
                               memory counts once and libraries not at all), and disk bytes beyond
                               the payload (restart case)
  put_get/vllm-*               vLLM's CPU offloading and file-system tier (its own error here)

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


def pss_bytes(pids) -> int:
    """Memory a cache holds, summed over `pids` (/proc/PID/smaps_rollup): the proportional set
    size of anonymous and shared-memory pages (Pss_Anon + Pss_Shmem). A page shared by k processes
    counts 1/k in each, so over the daemon and its clients shared memory (Strata's pool and
    staging memfds, Mooncake's registered segments) counts once. File-backed pages (the
    interpreter's and the libraries' code and data) are left out: they are no cache's memory, and
    their share moves whenever any process on the machine maps the same file (a Mooncake client
    starting lowered its store service's Pss_File by 1.7 MiB). Huge pages of hugetlbfs have no PSS
    and are not counted (none are reserved on the machines measured)."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith(("Pss_Anon:", "Pss_Shmem:")):
                    total += int(line.split()[1]) * 1024
    return total


def disk_bytes(path: str) -> int:
    """Bytes allocated on disk under `path` (st_blocks, so sparse files count what they use)."""
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


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

    def __init__(self, cli: str, pool_bytes: int = 0):
        self.cli = cli
        self.pool_bytes = pool_bytes  # the daemon's host pool, at least; 0: what the case needs
        self.version = subprocess.run([cli, "version"], capture_output=True,
                                      text=True).stdout.strip() or "?"

    def start(self, capacity: int, data_dir: str | None = None, direct_io: bool = True):
        self.dir = tempfile.mkdtemp(prefix="strata-peers-")
        self.sock = os.path.join(self.dir, "s.sock")
        args = [self.cli, "serve", "--socket", self.sock, "--host-pool",
                str(max(capacity, self.pool_bytes))]
        args += ["--data-dir", data_dir] if data_dir else ["--no-disk"]
        # With a disk tier, write-through: what an operator who wants a cache that survives a
        # crash configures (write-back reaches disk on eviction and clean shutdown only).
        # direct_io=False: the payload file through the page cache, so that a put is acknowledged
        # at the durability of a peer's buffered file write (DISK_DURABILITY).
        env = dict(os.environ, STRATA_WRITE_THROUGH="true" if data_dir else "false",
                   STRATA_DISK_DIRECT_IO="true" if direct_io else "false")
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     env=env)
        end = time.monotonic() + 20
        while not os.path.exists(self.sock):
            if self.proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError("strata serve did not start: " +
                                   self.proc.stderr.read().decode(errors="replace")[-400:])
            time.sleep(0.02)
        # The daemon faults its pool in on a background thread after it listens; an engine's
        # clients come long after its daemon started, and the in-process peers fault their
        # buffers in before the clock starts (as StrataEmbeddedClient waits): wait for it too.
        # Not waiting charged up to a second of the daemon's page clearing to the first case's
        # puts and gets (docs/benchmarks.md, "2 MiB against LMCache in-process").
        import strata
        # The socket's file exists from bind(), a moment before listen(): a connect in between
        # is refused (seen once in a whole-table run), so connect until it is taken.
        end = time.monotonic() + 20
        while True:
            try:
                c = strata.Client.connect(self.sock)
                break
            except Exception:
                if self.proc.poll() is not None or time.monotonic() > end:
                    self.stop()  # the case fails; its daemon must not outlive it
                    raise
                time.sleep(0.02)
        end = time.monotonic() + 120
        while c.stats().get("pool_populating") and time.monotonic() < end:
            time.sleep(0.05)
        del c
        return self

    def server_pids(self):
        return [self.proc.pid]

    def client_args(self):
        return {"sock": self.sock}

    def stop(self, sig=signal.SIGTERM):
        stop(self.proc, sig)
        shutil.rmtree(self.dir, ignore_errors=True)  # its socket directory


class StrataClient:
    def __init__(self, args, block_bytes):
        import strata
        self.c = strata.Client.connect(args["sock"])
        self.ns = strata_ns(block_bytes)
        assert self.ns.block_bytes == block_bytes

    def prepare(self, ids) -> None:
        # Keys of the namespace (tagged XXH3-128(ns id || id)), computed before the clock starts.
        ids = list(ids)
        self.keys = dict(zip(ids, self.ns.engine_keys([i.to_bytes(16, "big") for i in ids])))

    def put(self, i: int, buf: np.ndarray) -> None:
        self.c.store(self.ns, [self.keys[i]], [buf])

    def get(self, i: int, buf: np.ndarray) -> bool:
        return self.c.load(self.ns, [self.keys[i]], [buf]) == 1


class InProcessPeer:
    """A peer that runs inside each client process: no server to start, watch or stop; each client
    gets the capacity."""

    def start(self, capacity: int, data_dir: str | None = None):
        self.capacity = capacity
        return self

    def server_pids(self):
        return []

    def client_args(self):
        return {"capacity": self.capacity}

    def stop(self, sig=signal.SIGTERM):
        pass


class StrataEmbedded(InProcessPeer):
    """Strata's embedded mode (strata.Client.embedded: the same request logic and checksums as the
    daemon, in the engine process, no socket): measured beside LMCache's in-process backend, which
    also runs inside each engine process. clients=4 are four caches, as LMCache's are."""
    name = "strata-embedded"

    def __init__(self, cli: str):
        self.version = Strata(cli).version


class StrataEmbeddedClient(StrataClient):
    def __init__(self, args, block_bytes):
        import strata
        self.c = strata.Client.embedded(host_pool_bytes=args["capacity"])
        self.ns = strata_ns(block_bytes)
        assert self.ns.block_bytes == block_bytes
        # The node faults its pool in on a background thread; an engine creates its client at
        # start-up, long before its first store (as the daemon is up before its clients, and as
        # LMCache's allocator faults its buffer in in its constructor): wait for it.
        end = time.monotonic() + 60
        while self.c.stats().get("pool_populating") and time.monotonic() < end:
            time.sleep(0.05)


class Mooncake:
    name = "mooncake"

    def __init__(self):
        import mooncake  # noqa: F401  (fails here, with Mooncake's own error, if missing)
        self.pkg = os.path.dirname(sys.modules["mooncake"].__file__)
        self.version = version_of("mooncake-transfer-engine-non-cuda")

    def start(self, capacity: int, data_dir: str | None = None):
        # With a data directory: Mooncake's SSD offload (master --enable_offload, the store
        # service's enable_ssd_offload on that directory; objects offloaded at PutEnd).
        self.rpc = getattr(self, "rpc", None) if data_dir else None
        self.rpc = self.rpc or free_port()
        self.master = subprocess.Popen(
            [os.path.join(self.pkg, "mooncake_master"), f"--rpc_port={self.rpc}",
             "--rpc_address=127.0.0.1", "--enable_http_metadata_server=false",
             "--default_kv_lease_ttl=600000"] +
            (["--enable_offload=true"] if data_dir else []),
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
            f" '127.0.0.1:{self.rpc}', enable_ssd_offload={bool(data_dir)},"
            f" ssd_offload_path={data_dir or ''!r})\n"
            "if rc != 0: sys.exit(f'setup failed: {rc}')\n"
            f"open({self.ready!r}, 'w').close()\n"
            "while True: time.sleep(3600)\n")
        # file_per_key: one file per object, re-scanned at start (the default bucket backend
        # writes only when a bucket fills); the offload heartbeat every second.
        env = dict(os.environ, MOONCAKE_OFFLOAD_STORAGE_BACKEND_DESCRIPTOR=
                   "file_per_key_storage_backend", MOONCAKE_OFFLOAD_HEARTBEAT_INTERVAL_SECONDS="1")
        self.service = subprocess.Popen([sys.executable, "-c", code], env=env,
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
        if getattr(self, "ready", None) and os.path.exists(self.ready):
            os.unlink(self.ready)


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


class LmcacheCpu(InProcessPeer):
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
                               "engine process (lmcache-disk is its local-disk backend)")
        return super().start(capacity)


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
        np.copyto(_bytes_of(obj), buf)
        self.backend.submit_put_task(self.keys[i], obj)
        obj.ref_count_down()

    def get(self, i: int, buf: np.ndarray) -> bool:
        obj = self.backend.get_blocking(self.keys[i])
        if obj is None:
            return False
        np.copyto(buf, _bytes_of(obj))
        obj.ref_count_down()
        return True


def _bytes_of(obj) -> np.ndarray:
    """A MemoryObj's bytes as a numpy view: the copy is one memcpy on this thread (torch's copy_
    hands a 64 KiB copy to its intra-op thread pool, which on a loaded machine took ~20 ms)."""
    import torch
    return obj.tensor.view(torch.uint8).view(-1).numpy()


def _lmcache_parts(block_bytes: int, cpu_bytes: int, **cfg):
    """LMCache's config, metadata and LocalCPUBackend (its allocator) for the bench's KV shape."""
    import torch
    from lmcache.v1.config import LMCacheEngineConfig
    from lmcache.v1.metadata import LMCacheMetadata
    from lmcache.v1.storage_backend.local_cpu_backend import LocalCPUBackend
    layers, heads = (2, 4) if block_bytes == 64 << 10 else (32, 8)
    config = LMCacheEngineConfig.from_defaults(chunk_size=16, max_local_cpu_size=cpu_bytes / 2**30,
                                               **cfg)
    md = LMCacheMetadata(model_name="bench", world_size=1, local_world_size=1, worker_id=0,
                         local_worker_id=0, kv_dtype=torch.bfloat16,
                         kv_shape=(layers, 2, 16, heads, 128), chunk_size=16)
    shape = torch.Size([2, layers, 16, heads * 128])
    return config, md, LocalCPUBackend(config, md), shape


def _event_loop():
    import asyncio
    import threading
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    return loop


class LmcacheDisk:
    """LMCache's local-disk backend (LocalDiskBackend: files in a directory, its index and
    eviction policy in process memory), LocalCPUBackend as its staging allocator, driven in each
    client process as it runs inside each engine worker. A put is timed until LMCache's write
    callback fires (the block is on disk), a get reads the file back (get_blocking)."""
    name = "lmcache-disk"
    disk = True
    # Its put is acknowledged once the file is written into the page cache (write_file: a
    # buffered write, no fsync): Strata runs its disk tier through the page cache too.
    disk_tier = "disk-page-cache"

    def __init__(self):
        from lmcache.v1.storage_backend.local_disk_backend import LocalDiskBackend  # noqa: F401
        self.version = version_of("lmcache")

    def start(self, capacity: int, data_dir: str | None = None):
        self.own_dir = data_dir is None
        self.dir = data_dir or tempfile.mkdtemp(prefix="lmcache-disk-")
        self.capacity = capacity
        return self

    def server_pids(self):
        return []

    def client_args(self):
        return {"capacity": self.capacity, "dir": self.dir}

    def stop(self, sig=signal.SIGTERM):
        if self.own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


class LmcacheDiskClient:
    extra_config = None  # LMCache's extra_config (LmcacheDiskDirectClient: use_odirect)

    def __init__(self, args, block_bytes):
        import threading
        import torch
        from lmcache.utils import CacheEngineKey
        from lmcache.v1.storage_backend.local_disk_backend import LocalDiskBackend
        config, md, self.cpu, self.shape = _lmcache_parts(
            block_bytes, args["capacity"], local_cpu=False,
            local_disk=args["dir"], max_local_disk_size=args["capacity"] / 2**30,
            **({"extra_config": self.extra_config} if self.extra_config else {}))
        self.backend = LocalDiskBackend(config, _event_loop(), self.cpu, "cpu", None, md)
        self.torch, self.key_type, self.threading = torch, CacheEngineKey, threading

    def prepare(self, ids) -> None:
        self.keys = {i: self.key_type("bench", 1, 0, i, self.torch.bfloat16) for i in ids}

    def put(self, i: int, buf: np.ndarray) -> None:
        obj = self.cpu.allocate(self.shape, self.torch.bfloat16)
        if obj is None:
            raise RuntimeError("lmcache: allocate returned None (staging full)")
        np.copyto(_bytes_of(obj), buf)
        done = self.threading.Event()
        self.backend.submit_put_task(self.keys[i], obj, on_complete_callback=lambda k: done.set())
        obj.ref_count_down()
        if not done.wait(60):
            raise RuntimeError("lmcache local disk: the write did not complete within 60 s")

    def get(self, i: int, buf: np.ndarray) -> bool:
        obj = self.backend.get_blocking(self.keys[i])
        if obj is None:
            return False
        np.copyto(buf, _bytes_of(obj))
        obj.ref_count_down()
        return True


class LmcacheDiskDirect(LmcacheDisk):
    """LMCache's local-disk backend with its `use_odirect` option (extra_config): files written
    and read with O_DIRECT, as Strata's disk tier writes, so the two are compared on the same
    terms (the plain `lmcache-disk` acknowledges a put once its file is in the page cache)."""
    name = "lmcache-disk-odirect"
    disk_tier = "disk"  # O_DIRECT writes (no fsync), as Strata's default disk tier


class LmcacheDiskDirectClient(LmcacheDiskClient):
    extra_config = {"use_odirect": True}


class LmcacheServer:
    """LMCache's cache server (`python -m lmcache.v1.server HOST PORT cpu`, its in-memory store)
    with each client's RemoteBackend (remote_url lm://, naive serde) over TCP, LocalCPUBackend as
    the client's staging allocator. A put waits for the remote write's future."""
    name = "lmcache-server"

    def __init__(self):
        from lmcache.v1.storage_backend.remote_backend import RemoteBackend  # noqa: F401
        self.version = version_of("lmcache")

    def start(self, capacity: int, data_dir: str | None = None):
        if data_dir:
            raise RuntimeError("lmcache server: its store is process memory (CreateStorageBackend"
                               "('cpu')): nothing survives the server process")
        self.capacity = capacity
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "lmcache.v1.server", "127.0.0.1",
                                      str(self.port), "cpu"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_port(self.port, 60)
        except TimeoutError:
            stop(self.proc)
            raise RuntimeError("lmcache server did not start: " +
                               self.proc.stderr.read().decode(errors="replace")[-600:])
        return self

    def server_pids(self):
        return [self.proc.pid]

    def client_args(self):
        return {"port": self.port, "capacity": self.capacity}

    def stop(self, sig=signal.SIGTERM):
        stop(self.proc, sig)


class LmcacheServerClient(LmcacheDiskClient):
    def __init__(self, args, block_bytes):
        import torch
        from lmcache.utils import CacheEngineKey
        from lmcache.v1.storage_backend.remote_backend import RemoteBackend
        # The staging allocator as large as the case's capacity: a get's buffer comes from it.
        config, md, self.cpu, self.shape = _lmcache_parts(
            block_bytes, args["capacity"], local_cpu=False,
            remote_url=f"lm://127.0.0.1:{args['port']}", remote_serde="naive")
        self.backend = RemoteBackend(config, md, _event_loop(), self.cpu, "cpu")
        if self.backend.connection is None:
            raise RuntimeError("lmcache RemoteBackend: no connection to the server")
        self.torch, self.key_type = torch, CacheEngineKey

    def put(self, i: int, buf: np.ndarray) -> None:
        obj = self.cpu.allocate(self.shape, self.torch.bfloat16)
        if obj is None:
            raise RuntimeError("lmcache: allocate returned None (staging full)")
        np.copyto(_bytes_of(obj), buf)
        fut = self.backend.submit_put_task(self.keys[i], obj)
        obj.ref_count_down()
        fut.result(60)


CASES = ("trace", "put_get", "restart", "transfer", "vllm")

CLIENTS = {"strata": StrataClient, "strata-embedded": StrataEmbeddedClient,
           "mooncake": MooncakeClient, "lmcache": LmcacheClient,
           "lmcache-disk": LmcacheDiskClient, "lmcache-disk-odirect": LmcacheDiskDirectClient,
           "lmcache-server": LmcacheServerClient}


# ---- workload -----------------------------------------------------------------------------------

def _warm_imports(system: str) -> None:
    """The client's libraries, imported before the first PSS reading (an interpreter's own
    footprint is not the cache's)."""
    if system in ("strata", "strata-embedded"):
        import strata  # noqa: F401
    elif system == "mooncake":
        import mooncake.store  # noqa: F401
    else:
        import torch  # noqa: F401
        import lmcache.v1.storage_backend.local_disk_backend  # noqa: F401
        import lmcache.v1.storage_backend.remote_backend  # noqa: F401


def worker(system, args, block_bytes, first, count, barrier, measure, out):
    try:
        _warm_imports(system)
        measure.wait()  # the parent reads PSS before any client exists ...
        measure.wait()
        client = CLIENTS[system](args, block_bytes)
        client.prepare(range(first, first + count))
        rng = np.random.default_rng(first)
        src = rng.integers(0, 255, size=block_bytes, dtype=np.uint8)
        dst = np.zeros(block_bytes, dtype=np.uint8)
        put_lat, get_lat = [], []
        measure.wait()  # ... before the puts ...
        measure.wait()
        barrier.wait()
        t0 = time.perf_counter()
        for i in range(first, first + count):
            src[:8] = np.frombuffer(i.to_bytes(8, "little"), dtype=np.uint8)
            s = time.perf_counter()
            client.put(i, src)
            put_lat.append(time.perf_counter() - s)
        t1 = time.perf_counter()
        measure.wait()  # ... and after them, every client idle
        measure.wait()
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
        measure.abort()
        barrier.abort()
        out.put({"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()})


CASE_TIMEOUT_S = 240  # a client that hangs this long fails its case (the error is printed)


# Where the bytes of an acknowledged put are, per tier of the comparison: Strata's disk tier in
# each mode, and the disk peer it is compared with (DISK_TIER_OF).
DISK_DURABILITY = {
    "disk": "device (O_DIRECT write done at ack; no fdatasync)",
    "disk-page-cache": "page cache (buffered write done at ack; survives a process crash, "
                       "not a machine crash)",
}


def put_get(system_obj, block_bytes, clients, blocks_per_client, disk=False):
    """disk: False, or the Strata disk tier to run ("disk": --data-dir, write-through, O_DIRECT;
    "disk-page-cache": the same through the page cache). A disk peer takes any true value."""
    capacity = int(block_bytes * clients * blocks_per_client * 1.5) + (64 << 20)
    d = tempfile.mkdtemp(prefix="peers-disk-") if disk else None
    if d and isinstance(system_obj, Strata):
        system_obj.start(capacity, data_dir=d, direct_io=disk != "disk-page-cache")
    else:
        system_obj.start(capacity, data_dir=d)
    try:
        ctx = mp.get_context("spawn")
        barrier, out = ctx.Barrier(clients), ctx.Queue()
        # The parent joins `measure` to read PSS over servers and clients while all are idle.
        measure = ctx.Barrier(clients + 1, timeout=CASE_TIMEOUT_S)
        procs = [ctx.Process(target=worker, args=(system_obj.name, system_obj.client_args(),
                                                  block_bytes, c * 1_000_000, blocks_per_client,
                                                  barrier, measure, out)) for c in range(clients)]
        for p in procs:
            p.start()
        servers, cpids = system_obj.server_pids(), [p.pid for p in procs]
        pss = []  # (servers, clients) before any client, before the puts, after them
        try:
            for _ in range(3):
                measure.wait()
                pss.append((pss_bytes(servers), pss_bytes(cpids)))
                measure.wait()
        except Exception:  # a client failed before the barrier: its error is in `out`
            pss = None
        try:
            results = [out.get(timeout=CASE_TIMEOUT_S) for _ in procs]
        except Exception:
            raise RuntimeError(f"{system_obj.name}: a client gave no result within "
                               f"{CASE_TIMEOUT_S} s (hung; killed)") from None
        finally:
            for p in procs:
                p.join(timeout=10)
                if p.is_alive():
                    p.kill()
                    p.join()
        errors = [r for r in results if "error" in r]
        if errors:
            raise RuntimeError(errors[0]["error"])
    finally:
        system_obj.stop()
        if d:
            shutil.rmtree(d, ignore_errors=True)
    total = block_bytes * clients * blocks_per_client
    span = lambda k: (max(r[k][1] for r in results) - min(r[k][0] for r in results))  # noqa
    lat = lambda k: [x for r in results for x in r[k]]  # noqa
    return {
        "put_GBps": total / span("put_span") / 1e9, "get_GBps": total / span("get_span") / 1e9,
        "put_p50_us": pct(lat("put"), 0.5) * 1e6, "put_p99_us": pct(lat("put"), 0.99) * 1e6,
        "get_p50_us": pct(lat("get"), 0.5) * 1e6, "get_p99_us": pct(lat("get"), 0.99) * 1e6,
        "verified": sum(r["ok"] for r in results) / (clients * blocks_per_client),
        # Marginal: memory growth of servers and clients while storing, per block, the payload
        # included: a system that takes memory per block grows by at least the block; one that
        # faulted its whole capacity in before the first put (Strata's pool, LMCache's buffer)
        # grows by what else a block costs it (its index, a staging area touched the first time).
        "pss_per_block": (None if not pss
                          else (sum(pss[2]) - sum(pss[1])) / (clients * blocks_per_client)),
        # Footprint: the servers' whole PSS plus what the clients grew from before they connected,
        # per block, beyond the payload (includes capacity reserved up front: the same capacity
        # is given to every system, capacity_bytes).
        "footprint_per_block": (None if not pss
                                else (pss[2][0] + pss[2][1] - pss[0][1]) /
                                (clients * blocks_per_client) - block_bytes),
        "capacity_bytes": capacity,
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
            on_disk = disk_bytes(d)
        finally:
            system_obj.stop(signal.SIGKILL)
        system_obj.start(capacity, data_dir=d)
        time.sleep(3.0)  # every system gets the same time to re-scan its directory
        try:
            served = _phase_in_child(ctx, system_obj, block_bytes, blocks, "get")["ok"] / blocks
        finally:
            system_obj.stop()
        return {"served": served, "disk_per_block": on_disk / blocks - block_bytes}
    finally:
        shutil.rmtree(d, ignore_errors=True)


def system_has_server(system: str) -> bool:
    return system in ("strata", "mooncake", "lmcache-server")


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
        if phase == "put" and not system_has_server(system):
            # The cache lives in this (engine) process: kill -9 it, as the server is elsewhere.
            out.close()
            out.join_thread()
            os.kill(os.getpid(), signal.SIGKILL)
    except Exception as e:
        out.put({"error": f"{type(e).__name__}: {e}"})


# ---- vLLM's native offloading -------------------------------------------------------------------

_VLLM_PROBE = r"""
import json, sys
from importlib.metadata import version
out = {"version": version("vllm")}
try:
    from vllm.platforms import current_platform
    out["platform"] = type(current_platform).__name__
    from vllm.v1.kv_offload.cpu.spec import CPUOffloadingSpec
    from vllm.v1.kv_offload.tiering.spec import TieringOffloadingSpec
    for name, cls in (("cpu", CPUOffloadingSpec), ("fs", TieringOffloadingSpec)):
        # The worker side is what moves KV; its platform check runs before any config is read,
        # so the spec is made without its VllmConfig (__init__) to reach it on this machine.
        spec = cls.__new__(cls)
        spec._worker = None
        try:
            spec.get_worker(None)
            out[name] = None
        except Exception as e:
            out[name] = f"{type(e).__name__}: {e}"
except Exception as e:
    out["import"] = f"{type(e).__name__}: {e}"
print(json.dumps(out))
"""


def engines_python() -> str:
    """vLLM's interpreter: $STRATA_ENGINES_VENV, else .venv beside the peers' venv (both live in
    the repository root, deploy/install-engines.sh and deploy/install-peers.sh)."""
    venv = os.environ.get("STRATA_ENGINES_VENV") or os.path.join(
        os.path.dirname(os.path.abspath(sys.prefix)), ".venv")
    return os.path.join(venv, "bin", "python")


def vllm_rows():
    """vLLM's CPU offloading (OffloadingConnector, CPUOffloadingSpec) and its file-system tier
    (TieringOffloadingSpec with an "fs" secondary tier, which is a CPUOffloadingSpec): each case
    prints vLLM's own error where it cannot run here, or that it ran (then it needs a driver)."""
    py = engines_python()
    if not os.path.exists(py):
        return [{"bench": "peers", "case": "vllm/import", "error":
                 f"vllm: no interpreter at {py} (deploy/install-engines.sh installs it; "
                 "STRATA_ENGINES_VENV overrides)"}]
    r = subprocess.run([py, "-c", _VLLM_PROBE], capture_output=True, text=True, timeout=300)
    try:
        out = json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return [{"bench": "peers", "case": "vllm/import", "error": r.stderr[-600:]}]
    label = f"vllm {out.get('version', '?')}"
    if "import" in out:
        return [{"bench": "peers", "case": "vllm/import", "baseline": label,
                 "error": out["import"]}]
    rows = []
    for name, what in (("cpu", "CPU offloading (CPUOffloadingSpec.get_worker)"),
                       ("fs", "file-system tier (TieringOffloadingSpec.get_worker)")):
        err = out.get(name)
        rows.append({"bench": "peers", "case": f"put_get/vllm-{name}", "baseline": label,
                     "platform": out.get("platform"),
                     "error": (f"vllm {what} on platform {out.get('platform')}: {err}" if err
                               else f"vllm {what} started here but is not driven by this "
                                    "benchmark yet")})
    return rows


# ---- prefill -> decode transfer between two nodes ------------------------------------------------

def strata_transfer(cli: str, block_bytes: int, blocks: int, reps: int, lat_iters: int):
    """Strata's peer pull between two real `strata serve` nodes on loopback (static membership,
    UCX over tcp), as `strata bench transfer` does: the prefill node's client stores the prefix,
    the decode node's client times Lookup + Load of it (the decode node looks it up in the
    directory, pulls from the prefill node, verifies every checksum, commits to its host tier and
    the client copies the blocks out); Clear on the decode node between reps."""
    import strata
    d = tempfile.mkdtemp(prefix="strata-peers-xfer-")
    secret = os.path.join(d, "secret")
    with open(secret, "w") as f:
        f.write("strata-bench-peers-secret-0123456789abcdef\n")
    os.chmod(secret, 0o600)
    pool = f"{(block_bytes * blocks * 2 + (64 << 20)) >> 20}MiB"
    procs, clients = {}, {}
    try:
        for nid in ("prefill", "decode"):
            sock = os.path.join(d, nid + ".sock")
            procs[nid] = subprocess.Popen(
                [cli, "serve", "--socket", sock, "--no-disk", "--host-pool", pool,
                 "--node-id", nid, "--membership", "static", "--static-dir",
                 os.path.join(d, "members"), "--static-peers", "prefill,decode",
                 "--cluster-secret-file", secret, "--ucx-tls", "tcp",
                 "--request-timeout-ms", "10000"],
                stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, nid + ".log"), "wb"))
        for nid, p in procs.items():
            sock = os.path.join(d, nid + ".sock")
            end = time.monotonic() + 30
            while True:
                if p.poll() is not None or time.monotonic() > end:
                    raise RuntimeError(f"strata serve {nid} did not start: " +
                                       open(os.path.join(d, nid + ".log")).read()[-400:])
                if os.path.exists(sock):
                    try:
                        clients[nid] = strata.Client.connect(sock)
                        break
                    except Exception:
                        pass
                time.sleep(0.05)
        dec = clients["decode"]
        end = time.monotonic() + 30
        while dec.stats().get("cluster", {}).get("members", 0) != 2:
            if time.monotonic() > end:
                raise RuntimeError("the decode node did not see the prefill node within 30 s")
            time.sleep(0.05)
        ns = strata_ns(block_bytes)
        rng = np.random.default_rng(block_bytes + blocks)
        tokens = [int(t) for t in rng.integers(0, 128000, size=blocks * ns.block_size)]
        keys = ns.keys(tokens)
        src = [rng.integers(0, 255, size=block_bytes, dtype=np.uint8) for _ in range(blocks)]
        if clients["prefill"].store(ns, keys, src) != blocks:
            raise RuntimeError("the prefill node did not store every block")
        end = time.monotonic() + 30
        while True:
            n, tiers = dec.lookup(keys)
            if n == blocks and all(t == "remote" for t in tiers):
                break
            if time.monotonic() > end:
                raise RuntimeError(f"the decode node's directory names {n} of {blocks} blocks "
                                   "after 30 s")
            time.sleep(0.05)
        dst = [np.zeros(block_bytes, dtype=np.uint8) for _ in range(blocks)]

        def pull(k):
            dec.clear(ns)
            t = time.perf_counter()
            n, _ = dec.lookup(keys[:k])
            got = dec.load(ns, keys[:k], dst[:k])
            dt = time.perf_counter() - t
            if n != k or got != k:
                raise RuntimeError(f"decode node loaded {got} of {k} blocks")
            return dt

        def fetch_profile():
            return dec.stats().get("cluster", {}).get("fetch_profile", {})

        pull(blocks)  # warm-up: connects, faults the pool in
        before = fetch_profile()
        times = sorted(pull(blocks) for _ in range(reps))
        after = fetch_profile()
        ok = all(np.array_equal(a, b) for a, b in zip(src, dst))
        lat = sorted(pull(1) for _ in range(lat_iters))
        # Where a whole-prefix load went on the decode node (cluster stats "fetch_profile", ms
        # per load over the timed reps); the rest of load_ms is the IPC, pinning and the
        # client's verified copy out of the pool.
        profile = {k[:-2] + "_ms": round((after.get(k, 0) - before.get(k, 0)) * 1e3 / reps, 3)
                   for k in after if k.endswith("_s")}
        profile["load_ms"] = round(times[len(times) // 2] * 1e3, 3)
        return {"GBps": blocks * block_bytes / times[len(times) // 2] / 1e9,
                "p50_us": pct(lat, 0.5) * 1e6, "p99_us": pct(lat, 0.99) * 1e6, "verified": ok,
                "profile": profile}
    except Exception as e:
        # Say what the nodes said: a closed connection is the daemon's exit or its refusal.
        notes = []
        for nid, p in procs.items():
            try:
                tail = open(os.path.join(d, nid + ".log"), errors="replace").read()[-3000:]
            except OSError:
                tail = ""
            notes.append(f"{nid} node {'exited ' + str(p.poll()) if p.poll() is not None else 'running'}"
                         f", log tail: {tail!r}")
        raise RuntimeError(f"{e} ({'; '.join(notes)})") from e
    finally:
        clients.clear()
        for p in procs.values():
            stop(p)
        shutil.rmtree(d, ignore_errors=True)


def _mooncake_te_target(block_bytes, blocks, seed, q):
    """The prefill side of Mooncake's transfer engine: KV in registered memory, read by peers."""
    try:
        from mooncake.engine import TransferEngine
        te = TransferEngine()
        rc = te.initialize("127.0.0.1", "P2PHANDSHAKE", "tcp", "")
        if rc != 0:
            raise RuntimeError(f"TransferEngine.initialize returned {rc}")
        buf = np.random.default_rng(seed).integers(0, 255, size=block_bytes * blocks,
                                                   dtype=np.uint8)
        rc = te.register_memory(buf.ctypes.data, buf.nbytes)
        if rc != 0:
            raise RuntimeError(f"TransferEngine.register_memory returned {rc}")
        q.put({"port": te.get_rpc_port(), "addr": buf.ctypes.data})
        time.sleep(3600)
    except Exception as e:
        q.put({"error": f"{type(e).__name__}: {e}"})


def mooncake_transfer(block_bytes: int, blocks: int, reps: int, lat_iters: int):
    """Mooncake's transfer engine over TCP (P2P handshake, no metadata server): the decode side
    reads the prefix block by block from the prefill process's registered memory in one
    batch_transfer_sync_read (what its vLLM connector does per request), the same bytes as
    Strata's pull; the single-block latency is one transfer_sync_read."""
    from mooncake.engine import TransferEngine
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    seed = block_bytes + blocks
    target = ctx.Process(target=_mooncake_te_target, args=(block_bytes, blocks, seed, q))
    target.start()
    try:
        r = q.get(timeout=120)
        if "error" in r:
            raise RuntimeError(r["error"])
        peer, base = f"127.0.0.1:{r['port']}", r["addr"]
        te = TransferEngine()
        rc = te.initialize("127.0.0.1", "P2PHANDSHAKE", "tcp", "")
        if rc != 0:
            raise RuntimeError(f"TransferEngine.initialize returned {rc}")
        dst = np.zeros(block_bytes * blocks, dtype=np.uint8)
        if te.register_memory(dst.ctypes.data, dst.nbytes) != 0:
            raise RuntimeError("TransferEngine.register_memory failed")
        local = [dst.ctypes.data + i * block_bytes for i in range(blocks)]
        remote = [base + i * block_bytes for i in range(blocks)]

        def pull(k):
            dst[: k * block_bytes] = 0
            t = time.perf_counter()
            rc = te.batch_transfer_sync_read(peer, local[:k], remote[:k], [block_bytes] * k)
            dt = time.perf_counter() - t
            if rc != 0:
                raise RuntimeError(f"batch_transfer_sync_read returned {rc}")
            return dt

        pull(blocks)
        times = sorted(pull(blocks) for _ in range(reps))
        want = np.random.default_rng(seed).integers(0, 255, size=block_bytes * blocks,
                                                    dtype=np.uint8)
        ok = bool(np.array_equal(want, dst))
        lat = sorted(pull(1) for _ in range(lat_iters))
        te.unregister_memory(dst.ctypes.data)
        return {"GBps": blocks * block_bytes / times[len(times) // 2] / 1e9,
                "p50_us": pct(lat, 0.5) * 1e6, "p99_us": pct(lat, 0.99) * 1e6, "verified": ok}
    finally:
        target.kill()
        target.join()


def transfer_rows(cli, size_name, block_bytes, blocks, reps, lat_iters, mooncake_version):
    case = f"transfer/{size_name}/blocks={blocks}"
    label = f"mooncake transfer engine {mooncake_version} tcp"
    mine = strata_transfer(cli, block_bytes, blocks, reps, lat_iters)
    try:
        theirs = mooncake_transfer(block_bytes, blocks, reps, lat_iters)
    except Exception as e:
        return [{"bench": "peers", "case": case, "metric": "GB/s", "value": mine["GBps"],
                 "baseline": label, "error": f"{type(e).__name__}: {e}"}]
    rows = [row(case, "GB/s", mine["GBps"], label, theirs["GBps"]),
            row(case, "p50_us_1_block", mine["p50_us"], label, theirs["p50_us"], False),
            row(case, "p99_us_1_block", mine["p99_us"], label, theirs["p99_us"], False),
            row(case, "verified", float(mine["verified"]), label, float(theirs["verified"]))]
    for r in rows:
        r["path"] = ("strata: serve -> serve peer pull (UCX tcp), client Lookup + Load on the "
                     "decode node; mooncake: TransferEngine batch_transfer_sync_read over tcp")
    rows[0]["puller_fetch_profile_ms"] = mine["profile"]
    return rows


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
        if value and peer_value and value > 0 and peer_value > 0 else None
    return {"bench": "peers", "case": case, "metric": metric, "value": value,
            "baseline": peer, "baseline_value": peer_value, "ratio": ratio}


def overhead_rows(size_name, mine, peer, theirs):
    """Memory per cached block of one put_get case (one client), Strata's beside the peer's."""
    growth = row(f"overhead/{size_name}", "pss_growth_B/block", mine["pss_per_block"], peer,
                 theirs["pss_per_block"], False)
    footprint = row(f"overhead/{size_name}", "pss_footprint_B/block_beyond_payload",
                    mine["footprint_per_block"], peer, theirs["footprint_per_block"], False)
    footprint["capacity_bytes"] = mine["capacity_bytes"]
    return [growth, footprint]


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
    ap.add_argument("--cases", default="trace,put_get,restart,transfer,vllm",
                    help="which cases to run (comma-separated): " + ",".join(CASES))
    ap.add_argument("--transfer-mib", type=int, default=128,
                    help="prefix size of the transfer case (MiB); default 128")
    ap.add_argument("--reps", type=int, default=5, help="transfer reps (median)")
    ap.add_argument("--peers", default="",
                    help="only these peers (comma-separated names: mooncake, lmcache, "
                         "lmcache-disk, lmcache-disk-odirect, lmcache-server); default: all installed")
    ap.add_argument("--no-embedded", dest="embedded", action="store_false",
                    help="skip Strata's embedded mode beside LMCache in-process")
    ap.add_argument("--strata-pool-mib", type=int, default=0,
                    help="Strata's daemon host pool of at least this many MiB (a production-sized "
                         "pool: how clients map it depends on its size); default: what the case "
                         "needs")
    a = ap.parse_args(argv)
    cases = set(x for x in a.cases.split(",") if x)
    unknown = cases - set(CASES)
    if unknown:
        ap.error(f"unknown case(s) {sorted(unknown)}: choose from {','.join(CASES)}")

    strata_sys = Strata(a.strata_cli, a.strata_pool_mib << 20)
    peers = []
    only = set(x for x in a.peers.split(",") if x)
    for cls in (Mooncake, LmcacheCpu, LmcacheDisk, LmcacheDiskDirect, LmcacheServer):
        if only and cls.name not in only:
            continue
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
    if "trace" in cases and lm is not None and os.path.exists(trace):
        try:
            emit(trace_rows(a.strata_cli, trace, fractions, lm.version, a.strata_policy),
                 a.json)
        except Exception as e:
            emit([{"bench": "peers", "case": "trace", "error": f"{type(e).__name__}: {e}"}],
                 a.json)
    if "trace" in cases:
        emit([{"bench": "peers", "case": "trace", "baseline": "mooncake", "error":
               "mooncake: eviction runs inside mooncake_master (C++), not drivable offline"}],
             a.json)
    if "vllm" in cases:
        emit(vllm_rows(), a.json)
    rows = []
    mc = next((p for p in peers if p.name == "mooncake"), None)
    for size_name in a.sizes.split(","):
        block = SIZES[size_name]
        if "transfer" in cases:
            blocks = max(4, (a.transfer_mib << 20) // block)
            try:
                emit(transfer_rows(a.strata_cli, size_name, block, blocks, a.reps,
                                   max(15, min(200, (256 << 20) // block)),
                                   mc.version if mc else "not installed"), a.json)
            except Exception as e:
                emit([{"bench": "peers", "case": f"transfer/{size_name}",
                       "error": f"strata: {type(e).__name__}: {e}"}], a.json)
        for n in (map(int, a.clients.split(",")) if "put_get" in cases else ()):
            per_client = max(8, (a.mib_per_client << 20) // block // n)
            case = f"put_get/{size_name}/clients={n}"
            mine_by_tier = {}
            for peer in peers:
                # A disk peer is measured against Strata with its disk tier (write-through),
                # acknowledged at the peer's durability (DISK_DURABILITY).
                tier = getattr(peer, "disk_tier", None) or "memory"
                if tier not in mine_by_tier:
                    try:
                        mine_by_tier[tier] = put_get(strata_sys, block, n, per_client,
                                                     disk=tier if tier != "memory" else False)
                    except Exception as e:
                        mine_by_tier[tier] = None
                        emit([{"bench": "peers", "case": case, "tier": tier,
                               "error": f"strata: {e}"}], a.json)
                mine = mine_by_tier[tier]
                if mine is None:
                    continue
                label = f"{peer.name} {peer.version}"
                try:
                    theirs = put_get(peer, block, n, per_client, disk=tier != "memory")
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
                    out += overhead_rows(size_name, mine, label, theirs)
                for r in out:
                    r["strata_tier"] = tier
                    if tier in DISK_DURABILITY:
                        r["durability"] = DISK_DURABILITY[tier]
                emit(out, a.json)
                rows += out
                if peer.name != "lmcache" or not a.embedded:
                    continue
                # In-process beside in-process: Strata's embedded mode against the same LMCache
                # figures (the daemon's rows above pay the socket; these do not).
                try:
                    emb = put_get(StrataEmbedded(a.strata_cli), block, n, per_client)
                except Exception as e:
                    emit([{"bench": "peers", "case": case, "tier": "embedded",
                           "error": f"strata-embedded: {e}"}], a.json)
                    continue
                out = [row(case, m, emb[k], label, theirs[k], hb) for m, k, hb in (
                    ("put_GB/s", "put_GBps", True), ("get_GB/s", "get_GBps", True),
                    ("put_p50_us", "put_p50_us", False), ("put_p99_us", "put_p99_us", False),
                    ("get_p50_us", "get_p50_us", False), ("get_p99_us", "get_p99_us", False),
                    ("verified", "verified", True))]
                if n == 1:
                    out += overhead_rows(size_name, emb, label, theirs)
                for r in out:
                    r["strata_tier"] = "embedded"
                emit(out, a.json)
                rows += out
        if "restart" not in cases:
            continue
        case = f"restart/{size_name}"
        blocks = max(8, (min(64, a.mib_per_client) << 20) // block)  # 64 MiB, or less
        try:
            mine = restart_case(strata_sys, block, blocks)
        except Exception as e:
            emit([{"bench": "peers", "case": case, "error": f"strata: {e}"}], a.json)
            continue
        for peer in peers:
            label = f"{peer.name} {peer.version}"
            try:
                theirs = restart_case(peer, block, blocks)
                emit([row(case, "served_after_kill", mine["served"], label, theirs["served"]),
                      row(f"overhead/{size_name}", "disk_B/block_beyond_payload",
                          mine["disk_per_block"], label, theirs["disk_per_block"], False)],
                     a.json)
            except Exception as e:
                emit([{"bench": "peers", "case": case, "metric": "served_after_kill",
                       "value": mine["served"], "baseline": label, "error": str(e)}], a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
