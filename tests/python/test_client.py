"""The `strata` Python module: numpy arrays, bytes and CPU torch tensors (bf16 included), embedded
and against a real `strata serve` (started by the fixture), the layer-major KV connector recipe and
the paged API of docs/client-api.md."""
import json
import os
import signal
import subprocess
import tempfile
import time

import numpy as np
import pytest
import torch

import strata


BLOCK_BYTES = 4 * 2 * 16 * 2 * 64 * 2  # layers x planes x tokens x heads x dim x fp16


def make_ns(salt="", dtype="fp16", codec="none"):
    return strata.Namespace("py/model", num_layers=4, num_kv_heads=2, head_dim=64, block_size=16,
                            kv_dtype=dtype, codec=codec, tenant_salt=salt)


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
    assert ns.id == "187c067a43dd7ddd405c25c0db1fcd76"
    keys = ns.keys(list(range(32)))
    assert [k.hex() for k in keys] == ["187c067a01aeafae57409d9461d2813c",
                                       "187c067a7d12525e26dcfba4b50b7705"]
    assert len(ns.keys(list(range(15)))) == 0


def test_namespace_key_scheme_vllm_sha256_cbor():
    # docs/keys.md "Key schemes": key = XXH3-128(ns_id || vLLM's sha256_cbor block hash), its
    # first 4 bytes replaced by the namespace id's first 4 ("Namespace tag").
    cbor2 = pytest.importorskip("cbor2")
    xxhash = pytest.importorskip("xxhash")
    import hashlib
    ns = strata.Namespace("meta-llama/Llama-3.1-8B-Instruct", num_layers=32, num_kv_heads=8,
                          head_dim=128, key_scheme="vllm-sha256-cbor")
    assert ns.key_scheme == "vllm-sha256-cbor" and ns.hash_seed == "vllm-none-hash"
    sha = lambda o: hashlib.sha256(cbor2.dumps(o, canonical=True)).digest()
    h0 = sha((sha("vllm-none-hash"), tuple(range(16)), None))
    ns_id = bytes.fromhex(ns.id)
    assert ns.keys(list(range(16))) == [ns_id[:4] + xxhash.xxh3_128_digest(ns_id + h0)[4:]]
    with pytest.raises(Exception, match="PYTHONHASHSEED"):
        strata.Namespace("m", num_layers=1, num_kv_heads=1, head_dim=8,
                         key_scheme="vllm-xxhash-cbor")


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
    assert client.load(ns, keys, out) == 6
    for a, b in zip(blocks, out):
        assert np.array_equal(a, b)
    assert client.store(ns, keys, blocks) == 0  # already cached


def test_embedded_verify_loads_argument(monkeypatch):
    # EmbeddedOptions::verify_loads reaches Python (it had only the environment): loads hash every
    # block and still round-trip; a bad STRATA_VERIFY_LOADS fails the call, naming the variable.
    monkeypatch.delenv("STRATA_VERIFY_LOADS", raising=False)
    client = strata.Client.embedded(host_pool_bytes=64 << 20, verify_loads=True)
    ns = make_ns()
    rng = np.random.default_rng(2)
    keys = ns.keys(rng.integers(0, 128000, size=16 * 3).tolist())
    blocks = [rng.standard_normal((4, 2, 16, 2, 64)).astype(np.float16) for _ in keys]
    assert client.store(ns, keys, blocks) == 3
    out = [np.empty_like(b) for b in blocks]
    assert client.load(ns, keys, out) == 3
    assert all(np.array_equal(a, b) for a, b in zip(blocks, out))
    monkeypatch.setenv("STRATA_VERIFY_LOADS", "sometimes")
    with pytest.raises(Exception, match="STRATA_VERIFY_LOADS"):
        strata.Client.embedded(host_pool_bytes=64 << 20, verify_loads=False)


def test_keys_of_another_namespace_are_refused(client):
    """Issue 14: a store whose keys were computed in another namespace is refused (each key
    carries its namespace's tag, docs/keys.md "Namespace tag"), nothing of it is stored, and the
    client (and daemon) keep serving."""
    ns, other = make_ns("keys-a"), make_ns("keys-b")
    n = BLOCK_BYTES
    mine = ns.keys(list(range(48)))
    theirs = other.keys(list(range(48)))
    assert all(k[:4] == bytes.fromhex(ns.id)[:4] for k in mine)
    with pytest.raises(ValueError, match="not computed in namespace " + ns.id):
        client.store(ns, theirs, [b"t" * n] * 3)
    mixed = [mine[0], theirs[1], mine[2]]
    with pytest.raises(ValueError, match="block 1's key " + theirs[1].hex()):
        client.store(ns, mixed, [b"m" * n] * 3)
    assert client.lookup(theirs)[0] == 0
    assert client.lookup(mine)[0] == 0  # the good keys of the refused store were not stored
    assert client.store(ns, mine, [b"a" * n, b"b" * n, b"c" * n]) == 3
    out = [bytearray(n) for _ in range(3)]
    assert client.load(ns, mine, out) == 3
    assert out[2] == b"c" * n
    assert client.clear(ns) == 3


def test_embedded_eviction_policy():
    """Client.embedded(eviction_policy=...) runs the named policy, "" the node's default; a wrong
    name is refused, naming the setting (as EmbeddedOptions::eviction_policy in C++)."""
    ns = make_ns()
    keys = ns.keys(list(range(32)))
    n = BLOCK_BYTES
    for policy in ("", "lru", "prefix", "regret"):
        c = strata.Client.embedded(host_pool_bytes=64 << 20, eviction_policy=policy)
        assert c.store(ns, keys, [b"a" * n, b"b" * n]) == 2
        out = [bytearray(n), bytearray(n)]
        assert c.load(ns, keys, out) == 2 and out[1] == b"b" * n
    with pytest.raises(Exception, match="eviction_policy"):
        strata.Client.embedded(host_pool_bytes=64 << 20, eviction_policy="no-such-policy")


def test_embedded_disk_bytes(tmp_path):
    """Client.embedded(data_dir=..., disk_bytes=...) sizes the disk tier (EmbeddedOptions::disk_bytes
    in C++): the stats report that capacity, blocks evicted from a small host pool are demoted
    to it and load back bit-exact."""
    ns = make_ns("embedded-disk")
    n = BLOCK_BYTES
    c = strata.Client.embedded(host_pool_bytes=16 << 20, data_dir=str(tmp_path),
                               disk_bytes=48 << 20)
    assert c.stats()["disk"]["capacity_bytes"] == 48 << 20
    count = (24 << 20) // n  # more than the host pool holds: the oldest go to disk
    keys = ns.keys(list(range(count * 16)))
    blocks = [bytes([i % 251]) * n for i in range(count)]
    step = 64  # one request must fit the pool (a larger one is refused, naming host_pool)
    with pytest.raises(RuntimeError, match="NoSpace: Store: a store of 768 blocks needs"):
        c.store(ns, keys, blocks)
    for i in range(0, count, step):
        assert c.store(ns, keys[i:i + step], blocks[i:i + step]) == step
    stats = c.stats()
    assert stats["demotions"] > 0 and stats["disk"]["blocks"] > 0
    # Loads of disk blocks into the full pool: each step loads whole (promotions evict other
    # blocks, never the prefix being loaded), oldest first.
    for i in range(0, count, step):
        out = [bytearray(n) for _ in range(step)]
        assert c.load(ns, keys[i:i + step], out) == step, i
        assert all(o == b for o, b in zip(out, blocks[i:i + step])), i
    assert c.stats()["prefetched"] >= count // 2, c.stats()["prefetched"]  # disk -> host


def test_bytes_and_errors(client):
    ns = make_ns()
    keys = ns.keys(list(range(32)))
    n = BLOCK_BYTES
    with pytest.raises(ValueError):  # not one block of the namespace: refused, not stored
        client.store(ns, keys, [b"a" * 1000, bytearray(b"b" * 1000)])
    assert client.lookup(keys)[0] == 0
    assert client.store(ns, keys, [b"a" * n, bytearray(b"b" * n)]) == 2
    out = [bytearray(n), bytearray(n)]
    assert client.load(ns, keys, out) == 2
    assert out[0] == b"a" * n and out[1] == b"b" * n
    with pytest.raises(ValueError):
        client.load(ns, keys, [bytearray(10), bytearray(10)])  # too small
    with pytest.raises(ValueError):
        client.lookup([b"short"])
    with pytest.raises(TypeError):
        client.store(ns, keys, [object(), object()])
    with pytest.raises(BufferError):  # bytes are read-only: cannot load into them
        client.load(ns, keys, [b"x" * n, b"y" * n])
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
    assert client.load(ns, keys[:matched], list(restored[:matched])) == matched
    kv_back = restored.permute(1, 2, 0, 3, 4, 5).flatten(2, 3)
    assert torch.equal(kv_back, kv[:, :, : n * B])

    with pytest.raises(ValueError):  # a non-contiguous view is refused, not silently copied
        client.store(ns, keys[:1], [kv[:, :, :B]])


def test_stats(client):
    s = client.stats()
    assert "host" in s and "pins" in s and s["pins"] == 0


@pytest.mark.parametrize("dtype,codec", [("bf16", "none"), ("bf16", "shuffle_zstd"),
                                         ("fp16", "shuffle_lz4")])
def test_bf16_tensors_and_lossless_codecs_round_trip(client, dtype, codec):
    """bf16 tensors (which numpy cannot hold) store and load, bit-exact through lossless codecs."""
    ns = make_ns(dtype=dtype, codec=codec)
    torch_dtype = torch.bfloat16 if dtype == "bf16" else torch.float16
    keys = ns.keys(list(range(3 * 16)))
    blocks = [torch.randn(4, 2, 16, 2, 64).to(torch_dtype) for _ in keys]
    assert client.store(ns, keys, blocks) == 3
    out = [torch.empty_like(b) for b in blocks]
    assert client.load(ns, keys, out) == 3
    for a, b in zip(blocks, out):
        assert torch.equal(a, b)


def test_paged_vllm_layout_round_trip_and_tensor_parallel(client):
    """An engine registers per-layer vLLM-layout tensors [2, pages, 16, heads, 64] once, stores
    pages by id and loads them into other pages; a TP=2 rank loads its half of the heads."""
    ns = strata.Namespace("py/paged", num_layers=3, num_kv_heads=4, head_dim=64, block_size=16,
                          kv_dtype="bf16")
    pages = 10
    layers = [torch.randn(2, pages, 16, 4, 64).to(torch.bfloat16) for _ in range(3)]
    cache = client.register_kv_cache(ns, layers, layout="vllm")
    keys = ns.keys(list(range(4 * 16)))
    src = [7, 2, 9, 0]
    assert client.store_paged(cache, keys, src) == 4 * 4  # 4 blocks x 4 head shards
    assert client.lookup_paged(cache, keys) == 4

    dst_layers = [torch.zeros(2, pages, 16, 4, 64, dtype=torch.bfloat16) for _ in range(3)]
    dst = client.register_kv_cache(ns, dst_layers, layout="vllm")
    assert client.load_paged(dst, keys, [1, 3, 5, 6]) == 4
    for l in range(3):
        assert torch.equal(dst_layers[l][:, [1, 3, 5, 6]], layers[l][:, src])

    # Rank 1 of TP=2 holds heads 2 and 3: it loads exactly those, from what TP=1 stored.
    half = [torch.zeros(2, pages, 16, 2, 64, dtype=torch.bfloat16) for _ in range(3)]
    rank1 = client.register_kv_cache(ns, half, layout="vllm", tp_rank=1, tp_size=2)
    assert client.load_paged(rank1, keys, [0, 1, 2, 3]) == 4
    for l in range(3):
        assert torch.equal(half[l][:, [0, 1, 2, 3]], layers[l][:, src, :, 2:4])

    # What the client knows of the caches' huge pages, and unregistering: the tensors may be freed
    # afterwards, and the cache's id names nothing any more.
    hp = client.kv_cache_huge_pages(cache)
    assert hp["cache_bytes"] == sum(t.numel() * t.element_size() for t in layers)
    assert hp["collapsed_bytes"] <= hp["advised_bytes"] <= hp["cache_bytes"]
    for c in (cache, dst, rank1):
        client.unregister_kv_cache(c)
    with pytest.raises(KeyError):
        client.kv_cache_huge_pages(cache)
    with pytest.raises(KeyError):
        client.load_paged(dst, keys, [1, 3, 5, 6])


def test_set_recompute_rate_reaches_inspect_funnel():
    """The engine's prefill rate, reported through the Python client, weighs its loads."""
    cli = os.environ["STRATA_CLI"]
    with tempfile.TemporaryDirectory() as d:
        sock = os.path.join(d, "s.sock")
        proc = subprocess.Popen([cli, "serve", "--socket", sock, "--no-disk", "--host-pool", "64MiB"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            for _ in range(200):
                if os.path.exists(sock):
                    break
                time.sleep(0.025)
            c = strata.Client.connect(sock)
            ns = make_ns()
            keys = ns.keys(list(range(32)))
            with pytest.raises(ValueError):
                c.set_recompute_rate(ns, 0)
            with pytest.raises(ValueError):
                c.set_recompute_rate(ns, float("nan"))
            c.set_recompute_rate(ns, 4.0)  # 32 tokens: 8 s to recompute
            assert c.store(ns, keys, [b"a" * BLOCK_BYTES, b"b" * BLOCK_BYTES]) == 2
            assert c.load(ns, keys, [bytearray(BLOCK_BYTES), bytearray(BLOCK_BYTES)]) == 2
            out = subprocess.run([cli, "inspect", "--socket", sock, "--json", "funnel"],
                                 check=True, capture_output=True, text=True).stdout
            rows = [n for n in json.loads(out)["namespaces"] if n["namespace"] == ns.id]
            assert len(rows) == 1, out
            assert rows[0]["recompute_rate_source"] == "engine"
            assert rows[0]["recompute_tokens_per_second"] == 4.0
            assert rows[0]["faster_than_recompute_blocks"] == 2
            assert 7.0 < rows[0]["net_benefit_seconds"] <= 8.0
            del c
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
