"""vLLM adapters against a real `strata serve`, driven by vLLM's own objects: its Scheduler (which
calls the scheduler side of StrataConnector, loaded by KVConnectorFactory from
kv_connector_module_path), Request with vLLM's sha256_cbor block hasher, SchedulerOutput,
KVCacheBlocks, ModelRunnerOutput / KVConnectorOutput, and the tiering offload classes. The model
runner is the reference engine's (tools/reference_engine): vLLM's GPU model runner needs a GPU.

One pytest process for all of them: importing vLLM takes ~30 s on the CI machine."""
import logging
import os
import tempfile
import types

import numpy as np
import pytest
import torch

vllm = pytest.importorskip("vllm")

import strata  # noqa: E402
import reference_engine as ref  # noqa: E402

SPEC = ref.ModelSpec(layers=2, kv_heads=2, head_dim=64, hidden=128, ffn=256, vocab=4096,
                     max_positions=4096)
B = SPEC.block_size


@pytest.fixture(scope="module")
def model():
    return ref.TinyDecoder(SPEC), ref.write_model_dir(SPEC, tempfile.mkdtemp())


def engine(model, socket, **extra):
    m, d = model
    kv = {"extra": {"strata.socket": socket, **extra}}
    if "role" in extra:
        kv["role"] = extra.pop("role")
        kv["extra"].pop("role")
    return ref.Engine(m, d, num_blocks=256, kv=kv)


def prompt(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(10, SPEC.vocab, (n,), generator=g).tolist()


def test_keys_are_vllm_block_hashes(model, strata_node):
    """Block keys are vLLM's own hashes (request.block_hashes); Strata computes the very same
    ones from the tokens under the namespace's vllm-sha256-cbor scheme."""
    e = engine(model, strata_node)
    conn = e.scheduler_connector
    assert type(conn).__name__ == "StrataConnector"  # loaded from kv_connector_module_path
    assert conn.ns.key_scheme == "vllm-sha256-cbor"
    from vllm.sampling_params import SamplingParams
    from vllm.v1.request import Request
    toks = prompt(5 * B + 3, 1)
    req = Request("k", toks, SamplingParams(max_tokens=1), None, block_hasher=e.hasher)
    assert len(req.block_hashes) == 5
    assert conn.ns.engine_keys(list(req.block_hashes)) == conn.ns.keys(toks)
    assert conn.strata_stats().get("fingerprint_mismatches", 0) == 0
    e.close()


def test_kv_events_name_vllm_block_hashes(model):
    """Blocks the connector saves are published by the node's KV events under vLLM's own block
    hashes (docs/kv-events.md, "Engine hashes"), decoded with vLLM's KVEventBatch: the hashes of
    request.block_hashes as maybe_convert_block_hash gives them, the parent of each event's first
    block, and the blocks' tokens, as vLLM's BlockStored carries them."""
    import socket as socketlib
    import time

    import msgspec
    import zmq
    from vllm.distributed.kv_events import KVEventBatch
    from vllm.sampling_params import SamplingParams
    from vllm.v1.core.kv_cache_utils import maybe_convert_block_hash
    from vllm.v1.request import Request
    with socketlib.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    nodes = ref.StrataNodes(os.environ["STRATA_CLI"], pool="256MiB",
                            extra=("--kv-events", f"tcp://*:{port}"))
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(f"tcp://127.0.0.1:{port}")
    try:
        time.sleep(0.5)
        e = engine(model, nodes.sockets[0])
        p = prompt(5 * B + 3, 11)
        e.generate(p, 2)
        req = Request("h", p, SamplingParams(max_tokens=1), None, block_hasher=e.hasher)
        e.close()
        dec = msgspec.msgpack.Decoder(KVEventBatch)
        stored = []
        while sub.poll(1000):
            _, _, payload = sub.recv_multipart()
            stored += [ev for ev in dec.decode(payload).events
                       if type(ev).__name__ == "BlockStored" and ev.medium == "CPU"]
    finally:
        sub.close(linger=0)
        ctx.term()
        nodes.close()
    want = [maybe_convert_block_hash(h) for h in req.block_hashes]
    assert len(want) == 5
    assert [h for ev in stored for h in ev.block_hashes] == want
    at = 0
    for ev in stored:
        n = len(ev.block_hashes)
        assert ev.parent_block_hash == (want[at - 1] if at else None)
        assert ev.token_ids == p[at * B:(at + n) * B]
        assert ev.block_size == B
        at += n


def test_store_then_load_exact_tokens_and_side_effect_free_lookup(model, strata_node):
    base = ref.Engine(*model, num_blocks=256)
    p = prompt(7 * B + 5, 2)
    want, _, _ = base.generate(p, 6)

    first = engine(model, strata_node)
    got1, _, _ = first.generate(p, 6)
    first.close()
    assert got1 == want
    assert first.worker.connector.strata_stats()["saved_blocks"] >= 7

    second = engine(model, strata_node)
    conn = second.scheduler_connector
    from vllm.sampling_params import SamplingParams
    from vllm.v1.request import Request
    req = Request("probe", p, SamplingParams(max_tokens=1), None, block_hasher=second.hasher)
    # Side-effect free: asked twice, the same answer, and nothing planned or pinned.
    assert conn.get_num_new_matched_tokens(req, 0) == (7 * B, False)
    assert conn.get_num_new_matched_tokens(req, 0) == (7 * B, False)
    assert conn.get_num_new_matched_tokens(req, 2 * B) == (5 * B, False)
    assert not conn._pending_loads and not conn._reqs
    # At most num_tokens - 1: a prompt of exactly 7 blocks leaves its last block to compute.
    req7 = Request("probe7", p[:7 * B], SamplingParams(max_tokens=1), None,
                   block_hasher=second.hasher)
    assert conn.get_num_new_matched_tokens(req7, 0) == (6 * B, False)

    got2, _, _ = second.generate(p, 6)
    stats = second.worker.connector.strata_stats()
    second.close()
    assert got2 == want
    assert conn.strata_stats()["hit_blocks"] == 7
    assert stats["loaded_blocks"] == 7 and stats.get("load_failed_blocks", 0) == 0


def test_failed_load_becomes_recompute(model, strata_node):
    """The blocks vanish between the scheduler's lookup and the worker's load: the worker
    reports their pages in get_block_ids_with_load_errors, vLLM recomputes them, and the tokens
    are still exactly the baseline's."""
    base = ref.Engine(*model, num_blocks=256)
    p = prompt(6 * B + 1, 3)
    want, _, _ = base.generate(p, 4)
    writer = engine(model, strata_node)
    writer.generate(p, 4)
    writer.close()

    reader = engine(model, strata_node, **{"strata.layerwise": False})
    wc = reader.worker.connector
    start = wc.start_load_kv

    def clear_then_load(ctx, **kw):
        if wc._get_connector_metadata().loads:
            strata.Client.connect(strata_node).clear()
        return start(ctx, **kw)

    wc.start_load_kv = clear_then_load
    got, _, _ = reader.generate(p, 4)
    stats = wc.strata_stats()
    reader.close()
    assert got == want
    assert stats["load_failed_blocks"] == 6 and stats.get("loaded_blocks", 0) == 0


def test_fingerprint_mismatch_is_logged_and_counted(model, strata_node, caplog):
    caplog.set_level(logging.ERROR, logger="strata.adapters.vllm")
    e = engine(model, strata_node, **{"strata.namespace": {"model_id": "someone/else"}})
    conn = e.scheduler_connector
    assert conn.strata_stats()["fingerprint_mismatches"] == 1
    assert "model_id" in caplog.text and "someone/else" in caplog.text
    e.close()

    # The namespace says xxhash_cbor with a seed; vLLM hashes with sha256_cbor: reported at start
    # and again when the first request's hash disagrees with Strata's key of its tokens.
    caplog.clear()
    e = engine(model, strata_node, **{"strata.namespace": {"key_scheme": "vllm-xxhash-cbor",
                                                           "hash_seed": "7"}})
    conn = e.scheduler_connector
    assert conn.strata_stats()["fingerprint_mismatches"] == 1
    e.generate(prompt(3 * B, 4), 1)
    assert conn.strata_stats()["fingerprint_mismatches"] == 2
    assert "key_scheme" in caplog.text and "first block" in caplog.text
    e.close()


def test_save_on_finish_holds_blocks_until_get_finished(model, strata_node):
    e = engine(model, strata_node, **{"strata.save": "on_finish"})
    p = prompt(4 * B + 2, 5)
    e.generate(p, 3)
    sc, wc = e.scheduler_connector, e.worker.connector
    # The engine ran until request_finished's delayed free came back through get_finished.
    assert not e.scheduler.has_finished_requests()
    wc.wait_for_all_saves()
    assert wc.strata_stats()["saved_blocks"] == 4
    assert sc.strata_stats().get("hit_blocks", 0) == 0
    e.close()
    reader = engine(model, strata_node)
    reader.generate(p, 1)
    assert reader.worker.connector.strata_stats()["loaded_blocks"] == 4
    reader.close()


def test_pd_params_and_wait_for_remote_blocks(model, strata_node):
    pre = engine(model, strata_node, role="kv_producer")
    p = prompt(5 * B + 4, 6)
    _, _, params = pre.generate(p, 1, kv_transfer_params={"do_remote_decode": True})
    pre.close()
    assert params["do_remote_prefill"] and params["strata_num_blocks"] == 5
    dec = engine(model, strata_node, role="kv_consumer", **{"strata.pd_wait_s": 0.3})
    conn = dec.scheduler_connector
    from vllm.sampling_params import SamplingParams
    from vllm.v1.request import Request
    sp = SamplingParams(max_tokens=1, extra_args={"kv_transfer_params": params})
    ok = Request("d1", p, sp, None, block_hasher=dec.hasher)
    assert conn.get_num_new_matched_tokens(ok, 0) == (5 * B, False)
    # Blocks the prefill node has not published yet: ask again later, then give up and compute.
    other = prompt(5 * B + 4, 7)
    late = Request("d2", other, SamplingParams(max_tokens=1, extra_args={
        "kv_transfer_params": params}), None, block_hasher=dec.hasher)
    assert conn.get_num_new_matched_tokens(late, 0) == (None, False)
    import time
    time.sleep(0.35)
    assert conn.get_num_new_matched_tokens(late, 0) == (0, False)
    assert conn.strata_stats()["pd_wait_timeouts"] == 1
    dec.close()


def test_offload_secondary_tier(strata_node):
    """StrataSecondaryTier through vLLM's SecondaryTierFactory (out of tree, module_path), on a
    primary view like the CPU tier's: (num_chunks, row_bytes) bytes."""
    from vllm.v1.kv_offload.base import LookupResult, ReqContext, make_offload_key
    from vllm.v1.kv_offload.tiering.base import TransferJob
    from vllm.v1.kv_offload.tiering.factory import SecondaryTierFactory
    rows = np.zeros((8, 4096), dtype=np.uint8)
    cfg = types.SimpleNamespace(
        model=types.SimpleNamespace(name="test/model", dtype="float16"),
        cache=types.SimpleNamespace(tokens_per_hash=16, blocks_per_chunk=1),
        parallel=types.SimpleNamespace(tp_size=1, pp_size=1), kv_cache_layout="NHD")
    spec = types.SimpleNamespace(config=cfg)
    tier = SecondaryTierFactory.create_secondary_tier(
        {"type": "StrataSecondaryTier", "module_path": "strata.adapters.vllm_offload_tier",
         "socket": strata_node, "codec": "shuffle_lz4"}, memoryview(rows), spec)
    ctx = ReqContext("r")
    keys = [make_offload_key(bytes([i]) * 32, 0) for i in range(4)]
    rng = np.random.default_rng(0)
    rows[:4] = rng.integers(0, 255, size=(4, 4096), dtype=np.uint8)
    want = rows[:4].copy()
    assert tier.lookup(keys[0], ctx) == LookupResult.MISS
    tier.submit_store(TransferJob(1, keys, np.arange(4), False, ctx))
    assert tier.lookup(keys[0], ctx) in (LookupResult.RETRY, LookupResult.HIT)
    tier.drain_jobs()
    done = list(tier.get_finished_jobs())
    assert [(j.job_id, j.success) for j in done] == [(1, True)]
    assert all(tier.lookup(k, ctx) == LookupResult.HIT for k in keys)
    assert [e.keys for e in tier.take_events()] == [keys]
    # Promote into other rows; a job with a missing key reports the verified prefix only.
    tier.submit_load(TransferJob(2, keys, np.arange(4, 8), True, ctx))
    missing = make_offload_key(b"\xee" * 32, 0)
    tier.submit_load(TransferJob(3, keys[:2] + [missing], np.array([4, 5, 6]), True, ctx))
    tier.drain_jobs()
    res = {j.job_id: j for j in tier.get_finished_jobs()}
    assert res[2].success and np.array_equal(rows[4:8], want)
    assert not res[3].success and list(res[3].successful_keys) == keys[:2]
    # Another KV cache group is another namespace: the same hash does not match.
    assert tier.lookup(make_offload_key(bytes([0]) * 32, 1), ctx) == LookupResult.MISS
    assert not tier.has_pending_work()
    tier.shutdown()
    with pytest.raises(ValueError, match="lossy"):
        SecondaryTierFactory.create_secondary_tier(
            {"type": "StrataSecondaryTier", "module_path": "strata.adapters.vllm_offload_tier",
             "socket": strata_node, "codec": "int8_group"}, memoryview(rows), spec)


def test_offload_tier_under_vllm_tiering_manager(strata_node):
    """vLLM's own TieringOffloadingSpec builds StrataSecondaryTier from its config; chunks stored
    in one instance's CPU tier cascade into Strata, and a fresh instance (another engine_id, an
    empty CPU tier) finds them there and promotes them, byte for byte."""
    import dataclasses
    import time
    from vllm.v1.kv_offload.base import (LookupResult, ReqContext, ScheduleEndContext,
                                         make_offload_key)
    from vllm.v1.kv_offload.config import (OffloadingCacheConfig, OffloadingConfig,
                                           OffloadingGroupConfig, OffloadingModelConfig,
                                           OffloadingParallelConfig)
    from vllm.v1.kv_offload.tiering.spec import TieringOffloadingSpec
    cfg = OffloadingConfig(
        groups=(OffloadingGroupConfig(tokens_per_block=16, layer_names=("l0",), group_id=0),),
        worker_kv_bytes_per_block=8192, enable_kv_cache_events=True,
        extra_config={"cpu_bytes_to_use": 16 << 20, "tier_poll_interval_s": 0,
                      "secondary_tiers": [{"type": "StrataSecondaryTier",
                                           "module_path": "strata.adapters.vllm_offload_tier",
                                           "socket": strata_node}]},
        engine_id=f"strata-test-{os.getpid()}", model=OffloadingModelConfig("test/m", "float16"),
        cache=OffloadingCacheConfig(tokens_per_hash=16, blocks_per_chunk=1),
        parallel=OffloadingParallelConfig(
            rank=0, world_size=1, tp_size=1, pp_size=1, pcp_size=1, dcp_size=1,
            data_parallel_index=0, data_parallel_size=1, data_parallel_rank_local=0,
            is_parallelism_agnostic=False))
    m = TieringOffloadingSpec(cfg).get_manager()
    tier = m.secondary_tiers[0]
    assert type(tier).__name__ == "StrataSecondaryTier"
    rows = np.asarray(m.primary_tier.get_kv_memoryview()).view(np.uint8)
    ctx = ReqContext("a")
    m.on_new_request(ctx)
    keys = [make_offload_key(bytes([i + 1]) * 32, 0) for i in range(3)]
    for i, k in enumerate(keys):
        ctx.set_offload_key_position(k, (i + 1) * 16)
    out = m.prepare_store(keys, ctx)
    want = np.random.default_rng(1).integers(0, 255, size=(3, rows.shape[1]), dtype=np.uint8)
    rows[np.asarray(out.store_spec.block_ids)] = want  # what the GPU->CPU copy would write
    m.complete_store(keys, ctx)
    m.on_request_finished(ctx)
    for _ in range(100):  # the cascade to Strata runs on the tier's threads
        m.on_schedule_end(ScheduleEndContext([], []))
        tier.drain_jobs()
        if all(tier.lookup(k, ctx) == LookupResult.HIT for k in keys):
            break
        time.sleep(0.02)
    assert tier.counters.get("stored_chunks") == 3
    del rows
    m.shutdown()

    cfg2 = dataclasses.replace(cfg, engine_id=cfg.engine_id + "b")
    m2 = TieringOffloadingSpec(cfg2).get_manager()
    rows2 = np.asarray(m2.primary_tier.get_kv_memoryview()).view(np.uint8)
    assert not rows2.any()
    ctx2 = ReqContext("b")
    m2.on_new_request(ctx2)
    for _ in range(100):  # RETRY while the promotion from Strata runs, then HIT
        res = [m2.lookup(k, ctx2) for k in keys]
        if all(r == LookupResult.HIT for r in res):
            break
        m2.on_schedule_end(ScheduleEndContext(["b"], []))
        time.sleep(0.02)
    assert res == [LookupResult.HIT] * 3
    ids = np.asarray(m2.prepare_load(keys, ctx2).block_ids)
    assert np.array_equal(rows2[ids], want)
    m2.complete_load(keys, ctx2)
    del rows2
    m2.shutdown()
