"""`strata serve --kv-events`: a real daemon, driven through the client API (store, eviction and
demotion to disk, clear), publishes vLLM KV events that a real subscriber (Debian's python3-zmq +
python3-msgpack) decodes field by field; the replay socket answers with vLLM's protocol; a
subscriber that is absent or slow never blocks a store (docs/kv-events.md)."""
import time

import msgpack
import zmq

import strata
from kv_events_util import Subscriber, decode, free_port, replay, strata_serve, wait_for

STORED_FIELDS = {"type", "block_hashes", "parent_block_hash", "token_ids", "block_size",
                 "lora_id", "medium", "lora_name"}
REMOVED_FIELDS = {"type", "block_hashes", "medium"}


def make_ns():
    # 512 KiB blocks: a 16 MiB host pool holds a few dozen, so stores evict.
    return strata.Namespace("events/model", num_layers=8, num_kv_heads=8, head_dim=128,
                            block_size=16, kv_dtype="bf16")


def int_hash(key):
    # vLLM's int form of a hash: the low 64 bits, big-endian; the key's second half.
    return int.from_bytes(key[-8:], "big")


def apply(model, event):
    """vLLM consumer semantics: a set of held hashes per medium."""
    if event["type"] == "BlockStored":
        model.setdefault(event["medium"], set()).update(event["block_hashes"])
    elif event["type"] == "BlockRemoved":
        model.setdefault(event["medium"], set()).difference_update(event["block_hashes"])
    else:
        assert event == {"type": "AllBlocksCleared"}
        model.clear()


def check_batch_shapes(messages, topic):
    seqs = [s for _, s, _ in messages]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs  # monotonic, no gap
    for t, _, payload in messages:
        assert t == topic
        batch = decode(payload)
        # EventBatch is array_like: [ts, events, data_parallel_rank], rank 0 as a one-rank vLLM.
        assert isinstance(batch, list) and len(batch) == 3 and batch[2] == 0
        ts, events, _ = batch
        # What msgpack itself writes for the same values (msgspec writes the same bytes).
        assert msgpack.packb(batch) == payload
        assert isinstance(ts, float) and abs(ts - time.time()) < 120
        assert events
        for e in events:
            if e["type"] == "BlockStored":
                assert set(e) == STORED_FIELDS
                assert e["parent_block_hash"] is None and e["token_ids"] == []
                assert e["block_size"] == 16 and e["lora_id"] is None and e["lora_name"] is None
                assert e["medium"] in ("CPU", "STORAGE")
            elif e["type"] == "BlockRemoved":
                assert set(e) == REMOVED_FIELDS and e["medium"] in ("CPU", "STORAGE")
            else:
                assert e == {"type": "AllBlocksCleared"}
            if "block_hashes" in e:
                assert e["block_hashes"] and all(
                    isinstance(h, int) and 0 <= h < 1 << 64 for h in e["block_hashes"])


def test_store_evict_demote_clear_and_replay():
    port, replay_port = free_port(), free_port()
    # The prefix policy evicts shared prefixes that the disk admits (demotions to observe); the
    # default (learned) evicts one-off chain tails first, which the disk does not admit.
    with strata_serve("--host-pool", "16MiB", "--disk", "256MiB", "--eviction-policy", "prefix",
                      "--kv-events",
                      f"tcp://*:{port}", "--kv-events-replay", f"tcp://*:{replay_port}",
                      "--kv-events-topic", "kv", disk=True) as (sock, _):
        sub = Subscriber(f"tcp://127.0.0.1:{port}", b"kv")
        time.sleep(0.5)  # the subscription reaches the publisher
        client = strata.Client.connect(sock)
        ns = make_ns()
        block = bytes(ns.block_bytes)

        # 1. A store: one BlockStored on CPU with the keys' int hashes, in chain order.
        first = ns.keys(list(range(16 * 4)))
        assert client.store(ns, first, [block] * len(first)) == 4
        sub.poll(0.5)
        events = sub.events()
        assert [e["type"] for e in events] == ["BlockStored"]
        assert events[0]["block_hashes"] == [int_hash(k) for k in first]
        assert events[0]["medium"] == "CPU"
        assert sub.messages[0][1] == 0  # sequence numbers start at 0

        # 2. Stores that overflow the host pool: host evictions (BlockRemoved CPU) and
        # demotions of shared prefixes to disk (BlockStored STORAGE).
        more = ns.keys(list(range(100000, 100000 + 16 * 60)))
        for i in range(0, len(more), 10):
            client.store(ns, more[i:i + 10], [block] * 10)
        # Demotions may be written by a background queue: wait for them, then for their events.
        wait_for(lambda: client.stats()["demotions"] > 0, 10, "demotions")
        time.sleep(0.2)
        sub.poll(0.5)
        model = {}
        for e in sub.events():
            apply(model, e)
        stats = client.stats()
        assert stats["host"]["evictions"] > 0 and stats["demotions"] > 0
        removed_cpu = {h for e in sub.events() if e["type"] == "BlockRemoved"
                       and e["medium"] == "CPU" for h in e["block_hashes"]}
        assert removed_cpu
        # The subscriber's view is exactly where Lookup finds each block.
        for k in first + more:
            matched, tiers = client.lookup([k])
            h = int_hash(k)
            where = tiers[0] if matched else None
            assert (h in model.get("CPU", set())) == (where == "host"), (k.hex(), where)
            if where == "disk":
                assert h in model.get("STORAGE", set())
        assert model.get("STORAGE")

        # 3. Clear: every remaining block removed, then AllBlocksCleared.
        before = len(sub.messages)
        client.clear()
        sub.poll(0.5)
        tail = [e for _, _, p in sub.messages[before:] for e in decode(p)[1]]
        assert tail[-1] == {"type": "AllBlocksCleared"}
        for e in tail:
            apply(model, e)
        assert model == {}
        check_batch_shapes(sub.messages, b"kv")

        # 4. Replay: every batch from 0 (the ring holds them all), byte for byte; then from a
        # later start.
        n = len(sub.messages)
        got = replay(f"tcp://127.0.0.1:{replay_port}", 0)
        assert [(s, p) for _, s, p in sub.messages] == got
        got = replay(f"tcp://127.0.0.1:{replay_port}", n - 2)
        assert [s for s, _ in got] == [n - 2, n - 1]
        assert replay(f"tcp://127.0.0.1:{replay_port}", n + 5) == []

        st = client.stats()["kv_events"]
        assert st["batches"] == n and st["next_seq"] == n and st["dropped"] == 0
        assert st["replay_requests"] == 3 and st["clears"] == 1
        del client
        sub.close()


def test_bytes_hashes_array_encoding_media_and_connecting_publisher():
    # The subscriber binds and the daemon connects (vLLM's rule: no '*' in the endpoint).
    port = free_port()
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.bind(f"tcp://127.0.0.1:{port}")
    with strata_serve("--host-pool", "16MiB", "--kv-events", f"tcp://127.0.0.1:{port}",
                      "--kv-events-hash-format", "bytes", "--kv-events-encoding", "array",
                      "--kv-events-medium-host", "DRAM", "--kv-events-block-size", "32") as (
                          sock, _):
        client = strata.Client.connect(sock)
        # A PUB socket drops what it sends before its connection is up (ZMQ's slow joiner):
        # store one warm-up block until its batch arrives; the test's batches follow it.
        warm = strata.Namespace("events/warm-up", num_layers=8, num_kv_heads=8, head_dim=128,
                                block_size=16, kv_dtype="bf16")
        base = None
        for attempt in range(50):
            wkeys = warm.keys(list(range(1000 + 16 * attempt, 1000 + 16 * (attempt + 1))))
            assert client.store(warm, wkeys, [bytes(warm.block_bytes)]) == 1
            if sub.poll(200):
                _, wseq, _ = sub.recv_multipart()
                base = int.from_bytes(wseq, "big") + 1
                break
        assert base is not None
        while sub.poll(300):  # batches of later warm-up stores
            _, wseq, _ = sub.recv_multipart()
            base = int.from_bytes(wseq, "big") + 1
        ns = make_ns()
        keys = ns.keys(list(range(7, 7 + 16 * 3)))
        def events_until(n_hashes, next_seq):
            # The three blocks' events arrive in one batch, or (when the batch timer fires between
            # two commits of the store, as on a loaded machine) in consecutive ones: collect
            # batches, each numbered one more than the last, until they name n_hashes blocks.
            got = []
            while sum(len(e[1]) for e in got) < n_hashes:
                assert sub.poll(5000)
                topic, seq, payload = sub.recv_multipart()
                assert topic == b"" and seq == next_seq.to_bytes(8, "big")
                next_seq += 1
                got += decode(payload)[1]
            return got, next_seq

        assert client.store(ns, keys, [bytes(ns.block_bytes)] * 3) == 3
        events, next_seq = events_until(3, base)
        # Tagged arrays in vLLM's field order; hashes are the 16 key bytes (msgpack bin).
        assert [e[0] for e in events] == ["BlockStored"] * len(events)
        assert [h for e in events for h in e[1]] == list(keys)
        for e in events:
            assert e[2:] == [None, [], 32, None, "DRAM", None]
        assert client.clear(ns) == 3
        events, _ = events_until(3, next_seq)
        # A clear of one namespace is not AllBlocksCleared.
        assert [e[0] for e in events] == ["BlockRemoved"] * len(events)
        assert sorted(h for e in events for h in e[1]) == sorted(keys)
        assert all(e[2] == "DRAM" for e in events)
        del client
    sub.close(linger=0)
    ctx.term()


def test_absent_subscriber_never_blocks_and_buffer_is_bounded():
    # Nobody listens at the endpoint; the pending buffer holds 8 events and batches leave every
    # 2 s, so most of 40 stores' events are dropped (counted) and every store completes at once.
    port = free_port()
    with strata_serve("--host-pool", "64MiB", "--kv-events", f"tcp://127.0.0.1:{port}",
                      "--kv-events-max-pending", "8", "--kv-events-batch-ms", "2000") as (
                          sock, _):
        client = strata.Client.connect(sock)
        ns = make_ns()
        keys = ns.keys(list(range(16 * 40)))
        t0 = time.time()
        for k in keys:
            assert client.store(ns, [k], [bytes(ns.block_bytes)]) == 1
        assert time.time() - t0 < 10
        st = wait_for(lambda: client.stats()["kv_events"]["batches"] >= 1 and
                      client.stats()["kv_events"], 10, "a batch")
        assert st["dropped"] >= 40 - 3 * 8 and st["blocks_stored"] + st["dropped"] <= 40
        del client
