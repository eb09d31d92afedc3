"""Helpers of the KV-event tests (docs/kv-events.md): free ports, a real `strata serve`, a ZMQ
subscriber that decodes vLLM's frames with Debian's python3-zmq and python3-msgpack, and vLLM's
replay protocol spoken from the client side."""
import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time

import msgpack
import zmq

END_SEQ = (-1).to_bytes(8, "big", signed=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def strata_serve(*flags, disk=False, data_dir=None):
    """A real `strata serve` on a private socket; yields (socket path, process). With `data_dir`
    its disk tier lives there (and outlives the daemon, for restarts)."""
    cli = os.environ["STRATA_CLI"]
    with tempfile.TemporaryDirectory() as d:
        sock = os.path.join(d, "s.sock")
        args = [cli, "serve", "--socket", sock]
        if data_dir is not None:
            args += ["--data-dir", data_dir]
        else:
            args += ["--data-dir", os.path.join(d, "data")] if disk else ["--no-disk"]
        log = open(os.path.join(d, "serve.log"), "w+")
        proc = subprocess.Popen(args + list(flags), stdout=log, stderr=subprocess.STDOUT)
        try:
            for _ in range(400):
                if os.path.exists(sock) or proc.poll() is not None:
                    break
                time.sleep(0.025)
            if not os.path.exists(sock):
                log.seek(0)
                raise RuntimeError("strata serve did not start: " + log.read())
            yield sock, proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=20)


def decode(payload):
    """msgpack -> Python, bins as bytes and strings as str (what msgspec writes)."""
    return msgpack.unpackb(payload, raw=False)


class Subscriber:
    """A SUB socket on `endpoint`, collecting (topic, seq, payload) messages."""

    def __init__(self, endpoint, topic=b""):
        self.ctx = zmq.Context()
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.SUBSCRIBE, topic)
        self.sub.connect(endpoint)
        self.messages = []

    def poll(self, timeout_s):
        """Collects messages for up to timeout_s after the last one."""
        while self.sub.poll(int(timeout_s * 1000)):
            topic, seq, payload = self.sub.recv_multipart()
            self.messages.append((topic, int.from_bytes(seq, "big"), payload))
        return self.messages

    def poll_until(self, done, timeout_s=15.0, quiet_s=0.3):
        """Collects messages until done(events) holds (then for quiet_s more, so that a batch in
        flight is not cut) or timeout_s passes: a loaded machine may publish later than a fixed
        poll waits."""
        deadline = time.monotonic() + timeout_s
        while not done(self.events()) and time.monotonic() < deadline:
            self.poll(0.1)
        return self.poll(quiet_s)

    def events(self):
        return [e for _, _, p in self.messages for e in decode(p)[1]]

    def close(self):
        self.sub.close(linger=0)
        self.ctx.term()


def replay(endpoint, start_seq, timeout_s=5.0):
    """vLLM 0.33's replay protocol: send the start sequence to the ROUTER, read (topic, seq,
    payload) replies until the end marker (b"", -1, b""). Returns [(seq, payload)]."""
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.connect(endpoint)
    s.send_multipart([b"", start_seq.to_bytes(8, "big")])
    out = []
    try:
        while True:
            if not s.poll(int(timeout_s * 1000)):
                raise TimeoutError("no end-of-replay marker")
            empty, topic, seq, payload = s.recv_multipart()
            assert empty == b""
            if seq == END_SEQ:
                assert topic == b"" and payload == b""
                return out
            out.append((int.from_bytes(seq, "big"), payload))
    finally:
        s.close(linger=0)
        ctx.term()


def wait_for(pred, timeout_s=5.0, what="condition"):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError("timed out waiting for " + what)
