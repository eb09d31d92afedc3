"""The binding's layer-by-layer paged API and namespace fingerprint comparison (what the vLLM
connector uses: strata.adapters.vllm_connector), embedded."""
import torch

import strata


def make_ns(**kw):
    args = dict(num_layers=3, num_kv_heads=2, head_dim=64, block_size=16, kv_dtype="fp16")
    args.update(kw)
    return strata.Namespace("py/layerwise", **args)


def test_layerwise_store_and_load_round_trip():
    client = strata.Client.embedded(host_pool_bytes=64 << 20)
    ns = make_ns()
    src = [torch.randn(2, 8, 16, 2, 64).half() for _ in range(3)]
    dst = [torch.zeros_like(t) for t in src]
    cache = client.register_kv_cache(ns, src)
    out = client.register_kv_cache(ns, dst)
    keys = ns.keys(list(range(3 * 16)))
    store = client.store_paged_layerwise(cache, keys, [4, 1, 6])
    for layer in range(3):
        store.store_layer(layer)
    assert store.finish() == 3 * 2  # head shards
    load = client.load_paged_layerwise(out, keys, [0, 1, 2])
    for layer in range(3):
        assert load.wait_layer(layer) == 3
        assert torch.equal(dst[layer][:, [0, 1, 2]], src[layer][:, [4, 1, 6]])
    # A prefix that is not cached loads nothing and leaves the pages alone.
    other = ns.keys(list(range(100, 100 + 16)))
    before = dst[0].clone()
    assert client.load_paged_layerwise(out, other, [5]).wait_layer(0) == 0
    assert torch.equal(dst[0], before)


def test_fingerprint_differences():
    a = make_ns(key_scheme="vllm-sha256-cbor")
    assert a.fingerprint_differences(make_ns(key_scheme="vllm-sha256-cbor")) == []
    diffs = a.fingerprint_differences(make_ns(key_scheme="vllm-xxhash-cbor", hash_seed="0",
                                              block_size=32))
    assert any(d.startswith("key_scheme") for d in diffs)
    assert any(d.startswith("block_size") for d in diffs)
