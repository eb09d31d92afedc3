"""`strata serve --engine-events`: a real publisher in vLLM's format (Debian's python3-zmq +
python3-msgpack, vLLM's PUB/ROUTER protocol) feeds a real daemon, whose statistics then show which
blocks each engine holds on its GPU; sequence gaps are filled through the engine's replay socket,
or flagged when it has none; a sequence that restarts at 0 empties the engine's view
(docs/kv-events.md)."""
import time

import msgpack
import pytest
import zmq

import strata
from kv_events_util import free_port, strata_serve, wait_for

END_SEQ = (-1).to_bytes(8, "big", signed=True)


class VllmPublisher:
    """vLLM's ZmqEventPublisher in miniature: PUB bound at `port`, optional ROUTER replay at
    `replay_port`, a ring of past batches, msgspec's encoding of KVEventBatch (array_like batch,
    events as tagged maps, or tagged arrays with legacy=True)."""

    def __init__(self, port, replay_port=None, legacy=False, topic=b""):
        self.ctx = zmq.Context()
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.bind(f"tcp://127.0.0.1:{port}")
        self.replay = None
        if replay_port:
            self.replay = self.ctx.socket(zmq.ROUTER)
            self.replay.bind(f"tcp://127.0.0.1:{replay_port}")
        self.ring = []
        self.seq = 0
        self.legacy = legacy
        self.topic = topic

    def stored(self, hashes, medium="GPU"):
        if self.legacy:
            return ["BlockStored", hashes, None, list(range(16 * len(hashes))), 16, None, medium,
                    None]
        return {"type": "BlockStored", "block_hashes": hashes, "parent_block_hash": None,
                "token_ids": list(range(16 * len(hashes))), "block_size": 16, "lora_id": None,
                "medium": medium, "lora_name": None, "extra_keys": [None] * len(hashes),
                "group_idx": 0, "kv_cache_spec_kind": "full_attention"}

    def removed(self, hashes, medium="GPU"):
        if self.legacy:
            return ["BlockRemoved", hashes, medium]
        return {"type": "BlockRemoved", "block_hashes": hashes, "medium": medium, "group_idx": 0}

    def cleared(self):
        return ["AllBlocksCleared"] if self.legacy else {"type": "AllBlocksCleared"}

    def publish(self, *events, send=True):
        """One batch; send=False keeps it only in the replay ring (a message the network lost)."""
        payload = msgpack.packb([time.time(), list(events), 0])
        seq = self.seq
        self.seq += 1
        self.ring.append((seq, payload))
        if send:
            self.pub.send_multipart([self.topic, seq.to_bytes(8, "big"), payload])
        return seq

    def serve_replay(self, timeout_s=3.0):
        """Answers one replay request as vLLM 0.33's _service_replay does (with the topic frame;
        legacy: without, as vLLM before it). Returns its start seq."""
        assert self.replay.poll(int(timeout_s * 1000)), "no replay request"
        client_id, empty, start = self.replay.recv_multipart()
        start = int.from_bytes(start, "big")
        topic = [] if self.legacy else [self.topic]
        for seq, payload in self.ring:
            if seq >= start:
                self.replay.send_multipart([client_id, b""] + topic +
                                           [seq.to_bytes(8, "big"), payload])
        self.replay.send_multipart([client_id, b""] + ([] if self.legacy else [b""]) +
                                   [END_SEQ, b""])
        return start

    def close(self):
        self.pub.close(linger=0)
        if self.replay is not None:
            self.replay.close(linger=0)
        self.ctx.term()


def engine(client, name):
    return next(e for e in client.stats()["engines"] if e["name"] == name)


def wait_seq(client, name, seq):
    return wait_for(lambda: engine(client, name)["last_seq"] == seq and engine(client, name),
                    5, f"{name} at seq {seq}")


@pytest.mark.parametrize("legacy", [False, True], ids=["tagged-map", "tagged-array"])
def test_engine_view_gap_replay_and_restart(legacy):
    port, rport = free_port(), free_port()
    pub = VllmPublisher(port, rport, legacy=legacy)
    spec = f"vllm0=tcp://127.0.0.1:{port}|tcp://127.0.0.1:{rport}"
    with strata_serve("--host-pool", "16MiB", "--engine-events", spec) as (sock, _):
        client = strata.Client.connect(sock)
        time.sleep(0.5)  # the daemon's SUB connects
        # History the subscriber never saw live: seq 0 only in the ring. The first live batch
        # (seq 1) makes the daemon replay from 0.
        pub.publish(pub.stored([1, 2, 3]), send=False)
        pub.publish(pub.stored([4, 5]))
        assert pub.serve_replay() == 0
        e = wait_seq(client, "vllm0", 1)
        assert e["held_blocks"] == {"GPU": 5} and not e["stale"] and e["replay_requests"] == 1

        # A removal, a CPU-tier store (vLLM's offloading connector) and a gap: seq 3 and 4 are
        # lost on the network, seq 5 arrives; the daemon asks for 3.. and applies 3, 4, 5 in order.
        pub.publish(pub.removed([2]))
        pub.publish(pub.stored([2**64 - 1, 7], medium="CPU"), send=False)
        pub.publish(pub.removed([4]), send=False)
        pub.publish(pub.stored([8]))
        assert pub.serve_replay() == 3
        e = wait_seq(client, "vllm0", 5)
        assert e["held_blocks"] == {"GPU": 4, "CPU": 2}  # GPU {1, 3, 5, 8}, CPU {2^64-1, 7}
        assert e["gaps"] == 1 and e["unrecovered_gaps"] == 0 and not e["stale"]
        assert e["replayed_batches"] >= 3 and e["blocks_stored"] == 8 and e["blocks_removed"] == 2

        # The engine restarts: its sequence starts again at 0 and its view is emptied first.
        pub.seq = 0
        pub.ring.clear()
        pub.publish(pub.stored([42]))
        e = wait_for(lambda: engine(client, "vllm0")["restarts"] == 1 and
                     engine(client, "vllm0"), 5, "restart")
        assert e["held_blocks"] == {"GPU": 1} and e["last_seq"] == 0
        del client
    pub.close()


def test_gap_without_replay_is_flagged_until_clear():
    port = free_port()
    pub = VllmPublisher(port)
    with strata_serve("--host-pool", "16MiB", "--engine-events",
                      f"tcp://127.0.0.1:{port}") as (sock, _):
        client = strata.Client.connect(sock)
        time.sleep(0.5)
        pub.publish(pub.stored([10, 11]))
        e = wait_seq(client, "engine0", 0)
        assert e["held_blocks"] == {"GPU": 2} and not e["stale"]
        pub.publish(pub.stored([12]), send=False)  # lost, and no replay endpoint
        pub.publish(pub.removed([10]))
        e = wait_seq(client, "engine0", 2)
        assert e["gaps"] == 1 and e["unrecovered_gaps"] == 1 and e["stale"]
        assert e["held_blocks"] == {"GPU": 1}  # 12 is missing: hence stale
        pub.publish(pub.cleared())
        e = wait_seq(client, "engine0", 3)
        assert not e["stale"] and e["held_blocks"] == {} and e["clears"] == 1
        # A payload that is not an EventBatch is counted and skipped.
        pub.pub.send_multipart([b"", (4).to_bytes(8, "big"), b"\xc1not msgpack"])
        e = wait_for(lambda: engine(client, "engine0")["decode_errors"] == 1 and
                     engine(client, "engine0"), 5, "decode error")
        assert e["last_seq"] == 4
        del client
    pub.close()
