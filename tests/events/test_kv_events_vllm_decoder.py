"""Strata's KV events decoded by vLLM's own msgspec types (vllm.distributed.kv_events.KVEventBatch)
from the vLLM installed in the project's virtual environment: every batch a real `strata serve`
publishes (store, eviction, demotion, clear) must decode, event for event and field for field, to
what Debian's msgpack reads. Skipped when no vLLM is importable (docs/kv-events.md)."""
import json
import os
import subprocess
import tempfile
import time

import msgpack
import pytest

import strata
from kv_events_util import Subscriber, decode, free_port, strata_serve

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Runs in the virtual environment's interpreter. Loads vLLM's own vllm/distributed/kv_events.py
# (its msgspec structs and KVEventBatch) without importing the vllm package, which would import
# torch and take about a minute: the four modules the file imports for other purposes are stood
# in for, and ExternalBlockHash is checked to be defined in vLLM as the stand-in defines it.
# Exit 77: no vLLM there.
DECODE = r"""
import importlib.util, json, logging, os, sys, types
spec = importlib.util.find_spec("vllm")
if spec is None:
    sys.exit(77)
import msgspec
root = spec.submodule_search_locations[0]
utils = open(os.path.join(root, "v1", "core", "kv_cache_utils.py")).read()
assert "ExternalBlockHash: TypeAlias = bytes | int" in utils, "vLLM changed ExternalBlockHash"
stubs = {"vllm": {}, "vllm.config": {}, "vllm.config.kv_events": {"KVEventsConfig": object},
         "vllm.logger": {"init_logger": logging.getLogger},
         "vllm.utils": {}, "vllm.utils.network_utils": {
             "get_ip": None, "get_tcp_uri": None, "is_valid_ipv6_address": None,
             "split_zmq_path": None},
         "vllm.v1": {}, "vllm.v1.core": {},
         "vllm.v1.core.kv_cache_utils": {"ExternalBlockHash": bytes | int}}
for name, attrs in stubs.items():
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    sys.modules[name] = m
path = os.path.join(root, "distributed", "kv_events.py")
kv = importlib.util.module_from_spec(importlib.util.spec_from_file_location("kv_events", path))
kv.__spec__.loader.exec_module(kv)
if sys.argv[1] == "--array-like":
    print(kv.KVCacheEvent.__struct_config__.array_like)
    sys.exit(0)
dec = msgspec.msgpack.Decoder(kv.KVEventBatch)
out = []
for payload in msgspec.msgpack.decode(open(sys.argv[1], "rb").read()):
    b = dec.decode(payload)
    out.append({"ts": b.ts, "dp": b.data_parallel_rank,
                "events": [dict(msgspec.structs.asdict(e), type=type(e).__name__)
                           for e in b.events]})
print(json.dumps(out))
"""


def vllm_python():
    candidates = [os.environ.get("STRATA_VLLM_PYTHON", ""),
                  os.path.join(ROOT, ".venv", "bin", "python")]
    for py in candidates:
        if py and os.path.exists(py):
            r = subprocess.run([py, "-c", DECODE, "--array-like"], capture_output=True,
                               text=True, timeout=60)
            if r.returncode == 77:
                continue
            assert r.returncode == 0, r.stderr[-4000:]
            return py, r.stdout.strip() == "True"
    pytest.skip("no virtual environment with vLLM (.venv/bin/python or STRATA_VLLM_PYTHON)")


def test_vllm_decodes_strata_events():
    # The encoding the installed vLLM uses: tagged maps since vLLM #42892, tagged arrays before.
    py, array_like = vllm_python()
    encoding = "array" if array_like else "map"
    port = free_port()
    with strata_serve("--host-pool", "16MiB", "--disk", "256MiB", "--kv-events",
                      f"tcp://*:{port}", "--kv-events-encoding", encoding, disk=True) as (sock, _):
        sub = Subscriber(f"tcp://127.0.0.1:{port}")
        time.sleep(0.5)
        client = strata.Client.connect(sock)
        ns = strata.Namespace("events/vllm", num_layers=8, num_kv_heads=8, head_dim=128,
                              block_size=16, kv_dtype="bf16")
        keys = ns.keys(list(range(16 * 48)))
        for i in range(0, len(keys), 8):
            client.store(ns, keys[i:i + 8], [bytes(ns.block_bytes)] * 8)
        client.clear()
        # Until the clear's event came (a loaded machine publishes later than a fixed poll).
        sub.poll_until(lambda events: any(
            (e["type"] if isinstance(e, dict) else e[0]) == "AllBlocksCleared" for e in events))
        del client
    payloads = [p for _, _, p in sub.messages]
    sub.close()
    kinds = {e["type"] if isinstance(e, dict) else e[0] for p in payloads for e in decode(p)[1]}
    assert kinds == {"BlockStored", "BlockRemoved", "AllBlocksCleared"}
    with tempfile.NamedTemporaryFile(suffix=".msgpack") as f:
        f.write(msgpack.packb(payloads))
        f.flush()
        r = subprocess.run([py, "-c", DECODE, f.name], capture_output=True, text=True,
                           timeout=60)
    assert r.returncode == 0, r.stderr[-4000:]
    decoded = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(decoded) == len(payloads)
    for ours, theirs in zip(payloads, decoded):
        ts, events, _ = decode(ours)
        assert theirs["ts"] == ts and theirs["dp"] == 0
        assert len(theirs["events"]) == len(events)
        for e, v in zip(events, theirs["events"]):
            if isinstance(e, list):  # tagged array: vLLM's field order
                names = {"BlockStored": ["block_hashes", "parent_block_hash", "token_ids",
                                         "block_size", "lora_id", "medium", "lora_name"],
                         "BlockRemoved": ["block_hashes", "medium"],
                         "AllBlocksCleared": []}[e[0]]
                e = dict(zip(["type"] + names, e))
            for field, value in e.items():
                assert v[field] == value, (field, v, e)
