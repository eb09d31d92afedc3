"""The `strata` Python module: numpy arrays, bytes and CPU torch tensors, embedded and against a
real `strata serve` (started by the fixture), and the layer-major KV connector recipe of
docs/client-api.md."""
import os
import signal
import subprocess
import tempfile
import time

import numpy as np
import pytest
import torch

import strata


def make_ns(salt=""):
    return strata.Namespace("py/model", num_layers=4, num_kv_heads=2, head_dim=64, block_size=16,
                            kv_dtype="fp16", tenant_salt=salt)


@pytest.fixture(params=["embedded", "daemon"])
def client(request):
    if request.param == "embedded":
        yield strata.Client.embedded(host_pool_bytes=64 << 20)
        return
    cli = os.environ["STRATA_CLI"]
    with tempfile.TemporaryDirectory() as d:
        sock = os.path.join(d, "s.sock")
        proc = subprocess.Popen([cli, "serve", "--socket", sock, "--no-disk", "--host-pool", "64MiB"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for _ in range(200):
            if os.path.exists(sock):
                break
            time.sleep(0.025)
        c = strata.Client.connect(sock)
        yield c
        del c
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_keys_match_documented_vector():
    ns = strata.Namespace("meta-llama/Llama-3.1-8B-Instruct", num_layers=32, num_kv_heads=8,
                          head_dim=128, block_size=16, kv_dtype="bf16")
    assert ns.id == "3f58d2461c669656ef65408d0403e8c7"
    keys = ns.keys(list(range(32)))
    assert [k.hex() for k in keys] == ["62221939c158671d71bfd513ae97a0a5",
                                       "389c010207038575aaa855c7629c515b"]
    assert len(ns.keys(list(range(15)))) == 0


def test_numpy_round_trip(client):
    ns = make_ns()
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, 128000, size=16 * 6).tolist()
    keys = ns.keys(tokens)
    blocks = [rng.standard_normal((4, 2, 16, 2, 64)).astype(np.float16) for _ in keys]
    assert client.store(ns, keys, blocks) == 6
    matched, tiers = client.lookup(keys)
    assert matched == 6 and tiers[0] == "host"
    out = [np.empty_like(b) for b in blocks]
    assert client.load(keys, out) == 6
    for a, b in zip(blocks, out):
        assert np.array_equal(a, b)
    assert client.store(ns, keys, blocks) == 0  # already cached


def test_bytes_and_errors(client):
    ns = make_ns()
    keys = ns.keys(list(range(32)))
    assert client.store(ns, keys, [b"a" * 1000, bytearray(b"b" * 1000)]) == 2
    out = [bytearray(1000), bytearray(1000)]
    assert client.load(keys, out) == 2
    assert out[0] == b"a" * 1000 and out[1] == b"b" * 1000
    with pytest.raises(ValueError):
        client.load(keys, [bytearray(10), bytearray(10)])  # too small
    with pytest.raises(ValueError):
        client.lookup([b"short"])
    with pytest.raises(TypeError):
        client.store(ns, keys, [object(), object()])
    with pytest.raises(BufferError):  # bytes are read-only: cannot load into them
        client.load(keys, [b"x" * 1000, b"y" * 1000])
    other = make_ns("tenant-b")
    assert client.lookup(other.keys(list(range(32))))[0] == 0
    assert client.clear(ns) == 2
    assert client.lookup(keys)[0] == 0


def test_torch_layer_major_kv_connector_recipe(client):
    """A connector stores a layer-major KV tensor [layers, 2, tokens, heads, dim] for a token list
    and loads it back, in a few lines (docs/client-api.md)."""
    ns = make_ns()
    B = ns.block_size
    tokens = list(range(1000, 1000 + 5 * B + 7))  # 5 full blocks and a tail that is not cached
    kv = torch.randn(4, 2, len(tokens), 2, 64, dtype=torch.float16)

    keys = ns.keys(tokens)
    n = len(keys)
    blocks = kv[:, :, : n * B].unflatten(2, (n, B)).permute(2, 0, 1, 3, 4, 5).contiguous()
    assert client.store(ns, keys, list(blocks)) == n

    matched, _ = client.lookup(keys)
    restored = torch.empty_like(blocks)
    assert client.load(keys[:matched], list(restored[:matched])) == matched
    kv_back = restored.permute(1, 2, 0, 3, 4, 5).flatten(2, 3)
    assert torch.equal(kv_back, kv[:, :, : n * B])

    with pytest.raises(ValueError):  # a non-contiguous view is refused, not silently copied
        client.store(ns, keys[:1], [kv[:, :, :B]])


def test_stats(client):
    s = client.stats()
    assert "host" in s and "pins" in s and s["pins"] == 0
