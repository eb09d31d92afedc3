"""KV events of engine-scheme namespaces name the engine's own block hashes (docs/kv-events.md,
"Engine hashes"): tokens stored in a `vllm-sha256-cbor` namespace through the Python client (plain
Store, and paged StorePaged from two tensor-parallel ranks, one shard per KV head) against a real
`strata serve --kv-events`; every batch decoded with vLLM's own msgspec decoder; the block hashes,
parents and token ids equal what vLLM's hash_block_tokens computes for the same tokens and seed
(vLLM from the project's .venv, PYTHONHASHSEED as the namespace's hash_seed); one event per engine
block, not per head shard; BlockRemoved after host eviction, demotion to disk, and a clear after a
restart of the daemon name the same engine hashes. Skipped when there is no vLLM in .venv."""
import json
import os
import subprocess
import tempfile
import time

import msgpack
import numpy as np

import strata
from kv_events_util import Subscriber, free_port, strata_serve, wait_for
from test_kv_events_vllm_decoder import DECODE, vllm_python

B = 16
SEED = "0"
SHA256 = "sha256_cbor"

# vLLM's own hashing (imports vLLM and torch: about half a minute). Reads {"prompts": [...]}
# and prints, per prompt, per full block: the BlockHash hex, maybe_convert_block_hash of it
# (int form, VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES default) and of its parent.
VLLM_HASHES = r"""
import json, sys
from vllm.utils.hashing import sha256_cbor
from vllm.v1.core import kv_cache_utils as k
k.init_none_hash(sha256_cbor)
req = json.loads(sys.stdin.read())
b = req["block_size"]
out = []
for toks in req["prompts"]:
    parent, blocks = None, []
    for i in range(len(toks) // b):
        h = k.hash_block_tokens(sha256_cbor, parent, tuple(toks[i * b:(i + 1) * b]), None)
        blocks.append({"hex": h.hex(), "int": k.maybe_convert_block_hash(h),
                       "parent": None if parent is None else k.maybe_convert_block_hash(parent)})
        parent = h
    out.append(blocks)
print(json.dumps(out))
"""


def vllm_block_hashes(py, prompts):
    env = dict(os.environ, PYTHONHASHSEED=SEED)
    env.pop("VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES", None)
    r = subprocess.run([py, "-c", VLLM_HASHES], input=json.dumps(
        {"block_size": B, "prompts": prompts}), capture_output=True, text=True, timeout=240,
        env=env)
    assert r.returncode == 0, r.stderr[-4000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def vllm_decode(py, payloads):
    """Every batch through vLLM's msgspec decoder for KVEventBatch, as dicts."""
    with tempfile.NamedTemporaryFile(suffix=".msgpack") as f:
        f.write(msgpack.packb(payloads))
        f.flush()
        r = subprocess.run([py, "-c", DECODE, f.name], capture_output=True, text=True,
                           timeout=60)
    assert r.returncode == 0, r.stderr[-4000:]
    batches = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(batches) == len(payloads)
    return [e for b in batches for e in b["events"]]


def make_ns(scheme="vllm-sha256-cbor", seed=SEED, name="events/engine"):
    # 512 KiB blocks: a 16 MiB host pool holds a few dozen, so stores evict.
    return strata.Namespace(name, num_layers=8, num_kv_heads=8, head_dim=128, block_size=B,
                            kv_dtype="bf16", key_scheme=scheme, hash_seed=seed)


def int_hash(key):
    return int.from_bytes(key[-8:], "big")


def apply(model, e):
    if e["type"] == "BlockStored":
        model.setdefault(e["medium"], set()).update(e["block_hashes"])
    elif e["type"] == "BlockRemoved":
        model.setdefault(e["medium"], set()).difference_update(e["block_hashes"])
    else:
        model.clear()


def chain_runs(events):
    """Consecutive BlockStored events of one medium whose parent is the previous event's last
    hash, joined into one (hashes and tokens concatenated in order)."""
    out = []
    for e in events:
        prev = out[-1] if out else None
        if prev and prev["medium"] == e["medium"] and \
                e["parent_block_hash"] == prev["block_hashes"][-1]:
            prev["block_hashes"] = prev["block_hashes"] + e["block_hashes"]
            prev["token_ids"] = prev["token_ids"] + e["token_ids"]
        else:
            out.append(dict(e))
    return out


def test_events_name_vllm_block_hashes_across_eviction_demotion_and_restart(tmp_path):
    py, array_like = vllm_python()  # skips without vLLM
    assert not array_like, "vLLM 0.33 encodes events as tagged maps"
    # Prompt A: six blocks, stored by the plain API in two calls (the second's first block has
    # a parent). Prompt B: three blocks, stored paged by two TP ranks (4 KV heads each).
    prompt_a = [(i * 7919 + 13) % 32000 for i in range(6 * B)]
    prompt_b = [(i * 104729 + 5) % 32000 for i in range(3 * B)]
    vllm = vllm_block_hashes(py, [prompt_a, prompt_b])
    va, vb = vllm
    ns = make_ns()
    block = bytes(ns.block_bytes)
    keys_a, keys_b = ns.keys(prompt_a), ns.keys(prompt_b)
    eng_a, eng_b = ns.engine_blocks(prompt_a), ns.engine_blocks(prompt_b)
    # Strata's engine hashes are vLLM's (docs/keys.md), and the keys derive from them.
    assert [h.hex() for h, _, _ in eng_a] == [b["hex"] for b in va]
    assert [h.hex() for h, _, _ in eng_b] == [b["hex"] for b in vb]
    assert keys_a == ns.engine_keys([h for h, _, _ in eng_a])
    strata_ints = {int_hash(k) for k in keys_a + keys_b}
    engine_ints = {b["int"] for b in va + vb}

    data_dir = str(tmp_path / "data")
    port = free_port()
    flags = ("--host-pool", "16MiB", "--disk", "256MiB", "--eviction-policy", "prefix",
             "--kv-events", f"tcp://*:{port}")
    with strata_serve(*flags, data_dir=data_dir) as (sock, _):
        sub = Subscriber(f"tcp://127.0.0.1:{port}")
        time.sleep(0.5)
        client = strata.Client.connect(sock)
        assert client.store(ns, keys_a[:3], [block] * 3, engine_blocks=eng_a[:3]) == 3
        sub.poll(0.3)  # published on its own: one chain run per batch
        assert client.store(ns, keys_a[3:], [block] * 3, engine_blocks=eng_a[3:]) == 3
        sub.poll(0.3)
        # Paged, TP 2: each rank stores its 4 head shards of every block.
        caches = []
        for rank in range(2):
            layers = [np.zeros((2, 4, B, 4, 128), dtype=np.uint16) for _ in range(8)]
            cache = client.register_kv_cache(ns, layers, "vllm", tp_rank=rank, tp_size=2)
            caches.append((cache, layers))
            assert client.store_paged(cache, keys_b, [0, 1, 2], engine_blocks=eng_b) == 3 * 4

        def stored_cpu_hashes(events):
            return sum(len(e["block_hashes"]) for e in events
                       if e["type"] == "BlockStored" and e["medium"] == "CPU")
        sub.poll_until(lambda events: stored_cpu_hashes(events) >= 9)  # 6 of A, 3 of B
        # (The host pool may already demote some: the paged shards' size class takes a slab.)
        stored = [e for e in sub.events() if e["type"] == "BlockStored" and e["medium"] == "CPU"]

        # What vLLM's BlockStored says for the same blocks (block_pool.py): hashes in chain
        # order, the parent of the first, every token, the block size.
        def expect(v, toks, lo, hi):
            return {"block_hashes": [b["int"] for b in v[lo:hi]], "parent_block_hash":
                    v[lo]["parent"], "token_ids": toks[lo * B:hi * B], "block_size": B,
                    "medium": "CPU"}
        want = [expect(va, prompt_a, 0, 3), expect(va, prompt_a, 3, 6),
                expect(vb, prompt_b, 0, 3)]
        got = [{f: e[f] for f in want[0]} for e in stored]
        # One event per engine block run, no per-shard events (a shard's event would repeat a
        # hash). A run may reach subscribers as consecutive chained events when the publisher's
        # batch timer fires between two commits of one store (a loaded CI machine did): compare
        # runs joined along their parents.
        assert chain_runs(got) == chain_runs(want)
        assert want[1]["parent_block_hash"] == va[2]["int"]

        # Host evictions and demotions to disk: stores of another (strata-scheme) namespace.
        filler = make_ns("strata", "", "events/filler")
        more = filler.keys(list(range(100000, 100000 + B * 60)))
        for i in range(0, len(more), 10):
            client.store(filler, more[i:i + 10], [block] * 10)
        wait_for(lambda: client.stats()["demotions"] > 0, 10, "demotions")
        last = [None]

        def settled():  # the demotion queue's writer is done: no new demotions for 0.3 s
            n = client.stats()["demotions"]
            done, last[0] = n == last[0], n
            time.sleep(0.3)
            return done
        wait_for(settled, 20, "demotions to settle")
        time.sleep(0.2)
        sub.poll(0.5)
        events = sub.events()
        model = {}
        for e in events:
            apply(model, e)
        # No event names a Strata key of these blocks; removals and demotions name vLLM's hashes.
        for e in events:
            assert not set(e.get("block_hashes", [])) & strata_ints, e
        ours = [e for e in events if set(e.get("block_hashes", [])) & engine_ints]
        removed_cpu = {h for e in ours if e["type"] == "BlockRemoved" and e["medium"] == "CPU"
                       for h in e["block_hashes"]} & engine_ints
        stored_disk = [e for e in ours if e["type"] == "BlockStored" and e["medium"] == "STORAGE"]
        assert removed_cpu and stored_disk
        for e in stored_disk:  # a stored event is one chain run: only engine blocks
            assert set(e["block_hashes"]) <= engine_ints, e
        # Demoted blocks keep their parents and tokens on disk.
        by_int = {b["int"]: (b, toks, i) for v, toks in ((va, prompt_a), (vb, prompt_b))
                  for i, b in enumerate(v)}
        for e in stored_disk:
            b, toks, i = by_int[e["block_hashes"][0]]
            assert e["parent_block_hash"] == b["parent"]
            n = len(e["block_hashes"])
            assert e["token_ids"] == toks[i * B:(i + n) * B]
        on_disk = model.get("STORAGE", set()) & engine_ints
        assert on_disk
        # Every batch decodes with vLLM's own decoder to the same values.
        decoded = vllm_decode(py, [p for _, _, p in sub.messages])
        assert len(decoded) == len(events)
        for mine, theirs in zip(events, decoded):
            for field, value in mine.items():
                assert theirs[field] == value, (field, mine, theirs)
        sub.close()
        del client, caches

    # A restart: the disk kept each block's engine hash; a clear removes them by that hash.
    with strata_serve(*flags, data_dir=data_dir) as (sock, _):
        sub = Subscriber(f"tcp://127.0.0.1:{port}")
        time.sleep(0.5)
        client = strata.Client.connect(sock)
        client.clear(ns)

        def removed_from_storage(events):
            return {h for e in events if e["type"] == "BlockRemoved" and e["medium"] == "STORAGE"
                    for h in e["block_hashes"]}
        sub.poll_until(lambda events: on_disk <= removed_from_storage(events))
        events = sub.events()
        removed = {h for e in events if e["type"] == "BlockRemoved" and e["medium"] == "STORAGE"
                   for h in e["block_hashes"]}
        # Everything the first daemon had on disk, named by vLLM's hashes (the daemon may also
        # have written blocks still staged when it stopped).
        assert on_disk <= removed <= engine_ints
        assert not removed & strata_ints
        decoded = vllm_decode(py, [p for _, _, p in sub.messages])
        assert [sorted(e["block_hashes"]) for e in decoded if e["type"] == "BlockRemoved"] == \
            [sorted(e["block_hashes"]) for e in events if e["type"] == "BlockRemoved"]
        sub.close()


def test_strata_scheme_events_keep_naming_keys():
    """A strata-scheme namespace's key is its block hash: its events are unchanged."""
    port = free_port()
    with strata_serve("--host-pool", "16MiB", "--kv-events", f"tcp://*:{port}") as (sock, _):
        sub = Subscriber(f"tcp://127.0.0.1:{port}")
        time.sleep(0.5)
        client = strata.Client.connect(sock)
        ns = make_ns("strata", "", "events/plain")
        keys = ns.keys(list(range(3 * B)))
        assert client.store(ns, keys, [bytes(ns.block_bytes)] * 3) == 3
        sub.poll_until(lambda events: sum(len(e["block_hashes"]) for e in events) >= 3)
        events = chain_runs(sub.events())  # one run, possibly in chained batches
        assert [e["block_hashes"] for e in events] == [[int_hash(k) for k in keys]]
        assert events[0]["parent_block_hash"] is None and events[0]["token_ids"] == []
        sub.close()
