"""CUDA torch tensors (bf16 included) through the Python API's store/load: the module copies them
through pinned host memory. Needs a CUDA device and a CUDA build of torch; without them every test
here is skipped, and ctest reports the whole test as skipped (SKIP_REGULAR_EXPRESSION)."""
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


def test_cuda_tensors_cannot_be_registered_as_paged_cache_yet():
    client = strata.Client.embedded()
    ns = strata.Namespace("py/cuda", num_layers=1, num_kv_heads=2, head_dim=64, block_size=16)
    with pytest.raises(ValueError):
        client.register_kv_cache(ns, [torch.zeros(2, 4, 16, 2, 64, device="cuda")])
