"""CUDA torch tensors (bf16 included) through the Python API: store/load copy them through pinned
host memory; the paged API registers CUDA tensors in place (data_ptr and device index) and moves
KV with the client's CUDA kernels, embedded and against a real `strata serve` (STRATA_CLI). Needs
a CUDA device and a CUDA build of torch; without them every test here is skipped, and ctest
reports the whole test as skipped (SKIP_REGULAR_EXPRESSION)."""
import os
import signal
import subprocess
import tempfile
import time

import pytest
import torch

import strata

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device (or a CPU-only torch)")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cuda_tensors_store_and_load(dtype):
    client = strata.Client.embedded()
    ns = strata.Namespace("py/cuda", num_layers=4, num_kv_heads=2, head_dim=64, block_size=16,
                          kv_dtype="bf16" if dtype == torch.bfloat16 else "fp16",
                          codec="shuffle_lz4")
    keys = ns.keys(list(range(4 * 16)))
    blocks = [torch.randn(4, 2, 16, 2, 64, device="cuda").to(dtype) for _ in keys]
    assert client.store(ns, keys, blocks) == 4
    out = [torch.empty_like(b) for b in blocks]
    assert client.load(ns, keys, out) == 4
    for a, b in zip(blocks, out):
        assert b.device.type == "cuda" and torch.equal(a, b)


@pytest.fixture(params=["embedded", "daemon"])
def client(request):
    if request.param == "embedded":
        yield strata.Client.embedded(host_pool_bytes=128 << 20)
        return
    cli = os.environ.get("STRATA_CLI")
    if not cli:
        pytest.skip("STRATA_CLI is not set: no daemon to test against")
    with tempfile.TemporaryDirectory() as d:
        sock = os.path.join(d, "s.sock")
        proc = subprocess.Popen([cli, "serve", "--socket", sock, "--no-disk", "--host-pool",
                                 "128MiB"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for _ in range(400):
            if os.path.exists(sock):
                break
            time.sleep(0.025)
        c = strata.Client.connect(sock)
        yield c
        del c
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


LOSSLESS = ["none", "shuffle_zstd", "shuffle_lz4"]


@pytest.mark.parametrize("codec", LOSSLESS + ["fp8_e4m3", "int8_group", "int4_kivi"])
@pytest.mark.parametrize("layout", ["vllm", "flashinfer"])
def test_cuda_paged_cache_shares_blocks_with_host_caches(client, codec, layout):
    """A CUDA cache stores, a host cache at TP=2 loads its heads, and a CUDA cache loads them
    back: lossless codecs bit for bit, lossy ones exactly as the host round trip."""
    ns = strata.Namespace("py/cuda-paged-" + layout, num_layers=2, num_kv_heads=4, head_dim=64,
                          block_size=16, kv_dtype="bf16", codec=codec)
    pages = 12

    def shape(heads):
        return (2, pages, 16, heads, 64) if layout == "vllm" else (pages, 2, 16, heads, 64)

    def page(t, p):  # [2, 16, heads, 64] of page p in either layout
        return t[:, p] if layout == "vllm" else t[p]

    gpu = [torch.randn(*shape(4), device="cuda").to(torch.bfloat16) for _ in range(2)]
    cache = client.register_kv_cache(ns, gpu, layout=layout)
    assert cache.device == torch.cuda.current_device()
    keys = ns.keys(list(range(3 * 16)))
    assert client.store_paged(cache, keys, [5, 11, 2]) == 3 * 4

    host = [torch.zeros(*shape(2), dtype=torch.bfloat16) for _ in range(2)]
    rank1 = client.register_kv_cache(ns, host, layout=layout, tp_rank=1, tp_size=2)
    assert client.load_paged(rank1, keys, [0, 1, 2]) == 3
    back = [torch.zeros(*shape(4), dtype=torch.bfloat16, device="cuda") for _ in range(2)]
    dev2 = client.register_kv_cache(ns, back, layout=layout)
    assert client.load_paged(dev2, keys, [7, 8, 9]) == 3
    for l in range(2):
        for src, dst in zip([5, 11, 2], [0, 1, 2]):
            want = page(gpu[l], src)[:, :, 2:4].cpu()
            got = page(host[l], dst)
            if codec in LOSSLESS:
                assert torch.equal(got, want)
            else:
                assert torch.allclose(got.float(), want.float(), atol=0.5, rtol=0.2)
        for src, dst in zip([5, 11, 2], [7, 8, 9]):
            got = page(back[l], dst)[:, :, 2:4].cpu()
            if codec in LOSSLESS:
                assert torch.equal(page(back[l], dst), page(gpu[l], src))
            assert torch.equal(got, page(host[l], [0, 1, 2][[5, 11, 2].index(src)]))


def test_cuda_paged_layerwise(client):
    ns = strata.Namespace("py/cuda-layerwise", num_layers=3, num_kv_heads=2, head_dim=128,
                          block_size=16, kv_dtype="fp16", codec="none")
    src = [torch.randn(2, 8, 16, 2, 128, device="cuda").half() for _ in range(3)]
    dst = [torch.zeros_like(t) for t in src]
    a = client.register_kv_cache(ns, src)
    b = client.register_kv_cache(ns, dst)
    keys = ns.keys(list(range(2 * 16)))
    store = client.store_paged_layerwise(a, keys, [3, 6])
    for l in range(3):
        store.store_layer(l)
    assert store.finish() == 2 * 2
    load = client.load_paged_layerwise(b, keys, [1, 4])
    for l in range(3):
        assert load.wait_layer(l) == 2
        assert torch.equal(dst[l][:, [1, 4]], src[l][:, [3, 6]])


def test_cuda_tensors_on_two_devices_are_refused():
    client = strata.Client.embedded()
    ns = strata.Namespace("py/cuda", num_layers=2, num_kv_heads=2, head_dim=64, block_size=16)
    layers = [torch.zeros(2, 4, 16, 2, 64, dtype=torch.float16, device="cuda"),
              torch.zeros(2, 4, 16, 2, 64, dtype=torch.float16)]
    with pytest.raises(ValueError):
        client.register_kv_cache(ns, layers)
