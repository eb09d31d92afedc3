"""SGLang HiCache storage backend (strata.adapters.sglang_hicache) with SGLang's own objects.

Runs in the engines' virtual environment (deploy/install-engines.sh: sglang 0.5.23) against a real
`strata serve` started here. The backend is created the way SGLang creates it
(StorageBackendFactory, backend "dynamic"), on SGLang's real host KV pools (MHATokenToKVPoolHost,
MLATokenToKVPoolHost) built on the CPU, in each host layout; the page hashes are SGLang's own
(get_hash_str). Nothing is stood in for except the GPU-side pool the host pool mirrors, whose
tensors here are CPU tensors.
"""
import os
import signal
import subprocess
import tempfile
import time

import pytest
import torch

sglang = pytest.importorskip("sglang")

from sglang.srt.mem_cache.device_pool_info import KVBufferLayout, KVBuffers, MHABufferInfo  # noqa
from sglang.srt.mem_cache.hicache_storage import HiCacheStorageConfig  # noqa: E402
from sglang.srt.mem_cache.utils import get_hash_str  # noqa: E402
from sglang.srt.mem_cache.pool_host.mha import MHATokenToKVPoolHost  # noqa: E402
from sglang.srt.mem_cache.storage.backend_factory import StorageBackendFactory  # noqa: E402

import strata  # noqa: E402
from strata.adapters import sglang_hicache  # noqa: E402

LAYERS, HEADS, DIM, PAGE = 4, 4, 64, 16
LAYOUTS = ["layer_first", "page_first", "page_first_direct"]
MODEL = "test/sglang-model"


@pytest.fixture(scope="module")
def daemon():
    cli = os.environ["STRATA_CLI"]
    with tempfile.TemporaryDirectory() as d:
        sock = os.path.join(d, "s.sock")
        proc = subprocess.Popen([cli, "serve", "--socket", sock, "--no-disk", "--host-pool",
                                 "256MiB"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(400):
            if os.path.exists(sock):
                break
            time.sleep(0.025)
        yield sock
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def host_pool(layout, heads=HEADS, dtype=torch.bfloat16, device_tokens=256):
    """SGLang's MHA host pool on the CPU, mirroring a device pool of device_tokens tokens."""
    k = tuple(torch.zeros(device_tokens, heads, DIM, dtype=dtype) for _ in range(LAYERS))
    v = tuple(torch.zeros(device_tokens, heads, DIM, dtype=dtype) for _ in range(LAYERS))
    ptrs = lambda ts: torch.tensor([t.data_ptr() for t in ts], dtype=torch.uint64)  # noqa: E731
    info = MHABufferInfo(
        buffers=KVBuffers(k=k, v=v, k_data_ptrs=ptrs(k), v_data_ptrs=ptrs(v),
                          layout=KVBufferLayout.NHD),
        page_size=PAGE, head_num=heads, head_dim=DIM, v_head_dim=DIM, dtype=dtype,
        device=torch.device("cpu"))
    pool = MHATokenToKVPoolHost(info, 2.0, 0, PAGE, layout, pin_memory=False, device="cpu",
                                device_capacity_tokens=device_tokens, start_layer=0,
                                end_layer=LAYERS)
    g = torch.Generator().manual_seed(hash(layout) % 1000)
    pool.kv_buffer.copy_(torch.randn(pool.kv_buffer.shape, generator=g).to(dtype))
    return pool


def backend(sock, pool, tp_rank=0, tp_size=1, **extra):
    config = HiCacheStorageConfig(
        tp_rank=tp_rank, tp_size=tp_size, pp_rank=0, pp_size=1, attn_cp_rank=0, attn_cp_size=1,
        is_mla_model=False, enable_storage_metrics=False,
        is_page_first_layout=pool.layout != "layer_first", model_name=MODEL,
        extra_config={"backend_name": "strata", "module_path": "strata.adapters.sglang_hicache",
                      "class_name": "StrataHiCacheStorage", "socket": sock, **extra})
    b = StorageBackendFactory.create_backend("dynamic", config, pool)
    b.register_mem_pool_host(pool)
    return b


def page_hashes(tokens):
    out, prior = [], None
    for i in range(0, len(tokens) - len(tokens) % PAGE, PAGE):
        prior = get_hash_str(tokens[i:i + PAGE], prior)
        out.append(prior)
    return out


def pages_of(pool, layout_pages):
    """Token indices of the given host pages (page aligned, as HiCache passes them)."""
    return torch.cat([torch.arange(p * PAGE, (p + 1) * PAGE) for p in layout_pages])


def page_tensor(pool, page, heads=None):
    """[2, L, PAGE, H, D] of one host page, whatever the layout."""
    kv = pool.kv_buffer
    tok = torch.arange(page * PAGE, (page + 1) * PAGE)
    if pool.layout == "layer_first":
        t = kv[:, :, tok]
    elif pool.layout == "page_first":
        t = kv[:, tok].permute(0, 2, 1, 3, 4)
    else:
        t = kv[:, page].clone()
    return t if heads is None else t[..., heads, :]


def test_keys_are_sglang_page_hashes(daemon):
    # Strata's `sglang` key scheme computes SGLang's chained SHA-256 itself: the keys the backend
    # derives from SGLang's hex hashes equal the keys Strata computes from the same tokens.
    ns = strata.Namespace(MODEL, num_layers=LAYERS, num_kv_heads=HEADS, head_dim=DIM,
                          block_size=PAGE, key_scheme="sglang")
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        tokens = torch.randint(0, 150000, (PAGE * (3 + seed) + 5,), generator=g).tolist()
        assert ns.engine_keys(page_hashes(tokens)) == ns.keys(tokens)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_round_trip_per_layout(daemon, layout):
    src = host_pool(layout)
    b = backend(daemon, src)
    assert isinstance(b, sglang_hicache.StrataHiCacheStorage)
    tokens = list(range(1000 + LAYOUTS.index(layout), 1000 + 8 * PAGE))
    keys = page_hashes(tokens)[:6]
    assert b.batch_exists(keys) == 0
    src_pages = [3, 7, 1, 9, 2, 5]
    assert b.batch_set_v1(keys, pages_of(src, src_pages)) == [True] * 6
    assert b.batch_exists(keys) == 6 and b.exists(keys[0])
    # Load into other pages of a fresh pool (another instance of the same model).
    dst = host_pool(layout)
    dst.kv_buffer.zero_()
    bd = backend(daemon, dst)
    dst_pages = [10, 11, 4, 20, 6, 8]
    assert bd.batch_get_v1(keys, pages_of(dst, dst_pages)) == [True] * 6
    for s, d in zip(src_pages, dst_pages):
        assert torch.equal(page_tensor(src, s), page_tensor(dst, d))
    # Pages not asked for stay untouched.
    assert not page_tensor(dst, 0).any()
    assert bd.get_stats()["loaded_pages"] == 6


def test_other_layout_and_tensor_parallel_degree_load_the_same_pages(daemon):
    # Stored by a TP=1 page_first instance, loaded by both ranks of a TP=2 layer_first instance:
    # each rank gets exactly its heads (Strata stores one shard per KV head).
    src = host_pool("page_first")
    b = backend(daemon, src)
    tokens = list(range(5000, 5000 + 4 * PAGE))
    keys = page_hashes(tokens)
    assert b.batch_set_v1(keys, pages_of(src, [0, 1, 2, 3])) == [True] * 4
    for rank in range(2):
        dst = host_pool("layer_first", heads=HEADS // 2)
        dst.kv_buffer.zero_()
        bd = backend(daemon, dst, tp_rank=rank, tp_size=2)
        assert bd.batch_exists(keys) == 4
        assert bd.batch_get_v1(keys, pages_of(dst, [4, 5, 6, 7])) == [True] * 4
        heads = list(range(rank * HEADS // 2, (rank + 1) * HEADS // 2))
        for s, d in zip([0, 1, 2, 3], [4, 5, 6, 7]):
            assert torch.equal(page_tensor(src, s, heads), page_tensor(dst, d))
    # And back: TP=2 ranks store, a TP=1 instance loads whole pages.
    tokens2 = list(range(9000, 9000 + 2 * PAGE))
    keys2 = page_hashes(tokens2)
    halves = []
    for rank in range(2):
        p = host_pool("page_first_direct", heads=HEADS // 2)
        assert backend(daemon, p, tp_rank=rank, tp_size=2).batch_set_v1(
            keys2, pages_of(p, [1, 2])) == [True, True]
        halves.append(p)
    whole = host_pool("layer_first")
    whole.kv_buffer.zero_()
    assert backend(daemon, whole).batch_get_v1(keys2, pages_of(whole, [0, 1])) == [True, True]
    for s, d in zip([1, 2], [0, 1]):
        expect = torch.cat([page_tensor(h, s) for h in halves], dim=3)
        assert torch.equal(expect, page_tensor(whole, d))


def test_missing_pages_load_the_leading_run_only(daemon):
    pool = host_pool("layer_first")
    b = backend(daemon, pool)
    tokens = list(range(20000, 20000 + 5 * PAGE))
    keys = page_hashes(tokens)
    assert b.batch_set_v1(keys[:2], pages_of(pool, [0, 1])) == [True, True]
    assert b.batch_exists(keys) == 2
    dst = host_pool("layer_first")
    dst.kv_buffer.zero_()
    bd = backend(daemon, dst)
    assert bd.batch_get_v1(keys, pages_of(dst, [2, 3, 4, 5, 6])) == [True, True, False, False,
                                                                       False]
    assert not page_tensor(dst, 4).any()  # a page that missed is never written
    assert bd.get_stats()["load_failures"] == 3


def test_codecs(daemon):
    # Lossless codecs are bit-exact; fp8 is within its documented bound (docs/kernels.md).
    for codec, exact in [("shuffle_zstd", True), ("fp8_e4m3", False)]:
        pool = host_pool("page_first")
        b = backend(daemon, pool, codec=codec)
        tokens = list(range(30000 + len(codec), 30000 + len(codec) + 3 * PAGE))
        keys = page_hashes(tokens)
        assert b.batch_set_v1(keys, pages_of(pool, [0, 1, 2])) == [True] * 3
        dst = host_pool("page_first")
        dst.kv_buffer.zero_()
        assert backend(daemon, dst, codec=codec).batch_get_v1(
            keys, pages_of(dst, [3, 4, 5])) == [True] * 3
        for s, d in zip([0, 1, 2], [3, 4, 5]):
            a, r = page_tensor(pool, s).float(), page_tensor(dst, d).float()
            if exact:
                assert torch.equal(a, r)
            else:
                assert (a - r).norm() / a.norm() < 0.05


def test_namespaces_do_not_mix(daemon):
    # Another model id (or codec) is another namespace: its hashes never hit this one's blocks.
    pool = host_pool("layer_first")
    tokens = list(range(40000, 40000 + 2 * PAGE))
    keys = page_hashes(tokens)
    assert backend(daemon, pool).batch_set_v1(keys, pages_of(pool, [0, 1])) == [True, True]
    other = backend(daemon, pool, model_id="test/another-model")
    assert other.batch_exists(keys) == 0
    other.clear()  # clears only its own namespace
    assert backend(daemon, pool).batch_exists(keys) == 2


def test_fingerprint_mismatch_is_an_error_not_silent_misses(daemon):
    pool = host_pool("layer_first")
    with pytest.raises(sglang_hicache.FingerprintMismatch, match="num_kv_heads"):
        backend(daemon, pool, num_kv_heads=8)
    with pytest.raises(sglang_hicache.FingerprintMismatch, match="page_size"):
        backend(daemon, pool, page_size=64)


def test_bad_calls_raise(daemon):
    pool = host_pool("layer_first")
    b = backend(daemon, pool)
    keys = page_hashes(list(range(2 * PAGE)))
    with pytest.raises(ValueError, match="host indices"):
        b.batch_set_v1(keys, torch.arange(PAGE))
    with pytest.raises(ValueError):
        b.batch_exists(["not-a-hash"])
