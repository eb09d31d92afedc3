"""A reference engine: a small decoder-only transformer (random weights from a fixed seed) with a
paged KV cache in vLLM's layout, scheduled by vLLM's own Scheduler and driving StrataConnector
exactly as vLLM's worker does. It proves that reuse through Strata is exact and measures whether it
is faster (docs/engines.md, docs/benchmarks.md).

    PYTHONPATH=build/python .venv/bin/python tools/reference_engine/reference_engine.py \
        exact|lossy|pd|ttft [--strata build/bin/strata]

Per engine step, in vLLM's order: Scheduler.schedule() (which calls the scheduler-side connector:
get_num_new_matched_tokens, update_state_after_alloc, build_connector_meta), then the worker:
bind_connector_metadata, start_load_kv, per layer wait_for_layer_load -> attention -> save_kv_layer,
wait_for_save, get_finished, get_block_ids_with_load_errors, clear_connector_metadata; then
Scheduler.update_from_output() with the KVConnectorOutput (request_finished is called from there).

The model is batch-invariant by construction, so "with Strata" and "without" can be compared bit
for bit: every matmul runs on 16-row tiles aligned to absolute token positions (a token's result
never depends on which other tokens share its batch), attention of a tile reads keys [0, tile end)
from the pages (masked past the token), RoPE comes from one precomputed table. A prefix loaded from
Strata therefore yields the very logits that recomputing it yields, when the codec is lossless.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import torch

TILE = 16  # rows of every matmul; equals the block size


@dataclass
class ModelSpec:
    layers: int = 8
    kv_heads: int = 8
    head_dim: int = 64
    hidden: int = 512
    ffn: int = 1024
    vocab: int = 32000
    block_size: int = 16
    seed: int = 1234
    max_positions: int = 20480


class TinyDecoder:
    """Llama-shaped decoder (RMSNorm, RoPE, MHA with n_heads == kv_heads, SwiGLU), fp32 compute,
    fp16 KV pages [2, num_blocks, block_size, kv_heads, head_dim] per layer (vLLM flash-attn)."""

    def __init__(self, spec: ModelSpec):
        self.s = spec
        g = torch.Generator().manual_seed(spec.seed)
        d, f, h = spec.hidden, spec.ffn, spec.kv_heads * spec.head_dim

        def w(*shape, scale):
            return (torch.randn(*shape, generator=g) * scale).contiguous()

        self.embed = w(spec.vocab, d, scale=1.0)
        self.layers = []
        for _ in range(spec.layers):
            self.layers.append({
                "wqkv": w(d, 3 * h, scale=1 / math.sqrt(d)),
                "wo": w(h, d, scale=1 / math.sqrt(h)),
                "w13": w(d, 2 * f, scale=1 / math.sqrt(d)),
                "w2": w(f, d, scale=1 / math.sqrt(f)),
            })
        self.lm_head = w(d, spec.vocab, scale=1 / math.sqrt(d))
        pos = torch.arange(spec.max_positions, dtype=torch.float64)[:, None]
        inv = 1.0 / (10000 ** (torch.arange(0, spec.head_dim, 2, dtype=torch.float64) /
                               spec.head_dim))
        ang = pos * inv[None, :]
        self.cos = ang.cos().float()
        self.sin = ang.sin().float()

    @staticmethod
    def _mm(x, w):  # x [T, 16, in] -> [T, 16, out], one GEMM shape per tile
        return torch.bmm(x, w.expand(x.shape[0], -1, -1))

    @staticmethod
    def _norm(x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5)

    def _rope(self, x, pos):  # x [T,16,H,D], pos [T,16]
        c, s = self.cos[pos][:, :, None, :], self.sin[pos][:, :, None, :]
        x1, x2 = x[..., 0::2], x[..., 1::2]
        return torch.stack((x1 * c - x2 * s, x1 * s + x2 * c), dim=-1).flatten(-2)


@dataclass
class _WorkerReq:
    tokens: list[int]
    block_ids: list[int] = field(default_factory=list)
    hidden: torch.Tensor | None = None


class Worker:
    """The model runner: pages, per-request block tables, and the worker-side connector."""

    def __init__(self, model: TinyDecoder, num_blocks: int, connector=None):
        s = model.s
        self.model = model
        self.connector = connector
        self.kv = {f"model.layers.{i}.self_attn.attn": torch.zeros(
            2, num_blocks, s.block_size, s.kv_heads, s.head_dim, dtype=torch.float16)
            for i in range(s.layers)}
        self.names = list(self.kv)
        self.reqs: dict[str, _WorkerReq] = {}
        self.layer_wait_s = [0.0] * s.layers
        if connector is not None:
            connector.register_kv_caches(self.kv)

    def _tiles(self, start: int, end: int):
        a0 = start - start % TILE
        n_tiles = (end - a0 + TILE - 1) // TILE
        pos = torch.arange(a0, a0 + n_tiles * TILE).view(n_tiles, TILE)
        valid = (pos >= start) & (pos < end)
        return a0, pos, valid

    def execute(self, so):
        from vllm.v1.outputs import KVConnectorOutput, ModelRunnerOutput
        conn = self.connector
        for rid in so.finished_req_ids:
            self.reqs.pop(rid, None)
        for new in so.scheduled_new_reqs:
            self.reqs[new.req_id] = _WorkerReq(list(new.prompt_token_ids),
                                               list(new.block_ids[0]))
        cached = so.scheduled_cached_reqs
        for i, rid in enumerate(cached.req_ids):
            r = self.reqs[rid]
            ids = cached.new_block_ids[i]
            if rid in cached.resumed_req_ids:
                r.block_ids = list(ids[0]) if ids else []
            elif ids:
                r.block_ids.extend(ids[0])
        computed = {new.req_id: new.num_computed_tokens for new in so.scheduled_new_reqs}
        computed.update({rid: cached.num_computed_tokens[i]
                         for i, rid in enumerate(cached.req_ids)})
        order = [rid for rid in so.num_scheduled_tokens]
        if conn is not None:
            conn.bind_connector_metadata(so.kv_connector_metadata)
            conn.start_load_kv(None)
        m, s = self.model, self.model.s
        plans = {}
        for rid in order:
            r = self.reqs[rid]
            start, end = computed[rid], computed[rid] + so.num_scheduled_tokens[rid]
            a0, pos, valid = self._tiles(start, end)
            x = torch.zeros(pos.shape[0], TILE, s.hidden)
            x[valid] = m.embed[torch.tensor(r.tokens[start:end])]
            plans[rid] = (start, end, a0, pos, valid, x)
        H, D, B = s.kv_heads, s.head_dim, s.block_size
        for li, name in enumerate(self.names):
            if conn is not None:
                t0 = time.perf_counter()
                conn.wait_for_layer_load(name)
                self.layer_wait_s[li] += time.perf_counter() - t0
            page = self.kv[name]
            L = m.layers[li]
            for rid in order:
                r = self.reqs[rid]
                start, end, a0, pos, valid, x = plans[rid]
                T = pos.shape[0]
                qkv = m._mm(m._norm(x), L["wqkv"]).view(T, TILE, 3, H, D)
                q = m._rope(qkv[:, :, 0], pos)
                k = m._rope(qkv[:, :, 1], pos)
                v = qkv[:, :, 2]
                vp = pos[valid]
                bid = torch.tensor(r.block_ids)[vp // B]
                page[0, bid, vp % B] = k[valid].half()
                page[1, bid, vp % B] = v[valid].half()
                ctx_blocks = (a0 + T * TILE) // B
                ids = torch.tensor(r.block_ids[:ctx_blocks])
                kc = page[0, ids].reshape(-1, H, D).float().transpose(0, 1)  # [H, ctx, D]
                vc = page[1, ids].reshape(-1, H, D).float().transpose(0, 1)
                out = torch.empty(T, TILE, H, D)
                # Keys before a tile are visible to all its rows: only its own 16 are masked.
                causal = torch.ones(TILE, TILE, dtype=torch.bool).triu(1)
                for t in range(T):
                    n_ctx = a0 + (t + 1) * TILE
                    qt = q[t].transpose(0, 1)  # [H, 16, D]
                    sc = torch.matmul(qt, kc[:, :n_ctx].transpose(1, 2)) / math.sqrt(D)
                    sc[:, :, n_ctx - TILE:].masked_fill_(causal[None], float("-inf"))
                    out[t] = torch.matmul(torch.softmax(sc, -1), vc[:, :n_ctx]).transpose(0, 1)
                x = x + m._mm(out.reshape(T, TILE, H * D), L["wo"])
                g13 = m._mm(m._norm(x), L["w13"])
                g1, g3 = g13.chunk(2, dim=-1)
                x = x + m._mm(torch.nn.functional.silu(g1) * g3, L["w2"])
                x = torch.where(valid[..., None], x, torch.zeros(()))
                plans[rid] = (start, end, a0, pos, valid, x)
            if conn is not None:
                conn.save_kv_layer(name, page, None)
        finished_sending, errors = None, set()
        if conn is not None:
            conn.wait_for_save()
            finished_sending, _ = conn.get_finished(set(so.finished_req_ids))
            errors = conn.get_block_ids_with_load_errors()
            conn.clear_connector_metadata()
        sampled = []
        for rid in order:
            r = self.reqs[rid]
            start, end, a0, pos, valid, x = plans[rid]
            if end < len(r.tokens) or set(r.block_ids) & errors:
                sampled.append([])  # a prefill chunk, or a step vLLM redoes after a failed load
                continue
            last = (end - 1 - a0)
            # One row, the same shape in every run: the logits are batch-invariant too.
            logits = (m._norm(x[last // TILE, last % TILE][None]) @ m.lm_head)[0]
            tok = int(torch.argmax(logits))
            r.tokens.append(tok)
            sampled.append([tok])
        kco = None
        if conn is not None:
            kco = KVConnectorOutput(finished_sending=finished_sending, invalid_block_ids=errors)
        return ModelRunnerOutput(req_ids=order, req_id_to_index={r: i for i, r in enumerate(order)},
                                 sampled_token_ids=sampled, kv_connector_output=kco)


def write_model_dir(spec: ModelSpec, path: str) -> str:
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
                   "hidden_size": spec.hidden, "intermediate_size": spec.ffn,
                   "num_attention_heads": spec.kv_heads, "num_key_value_heads": spec.kv_heads,
                   "head_dim": spec.head_dim, "num_hidden_layers": spec.layers,
                   "vocab_size": spec.vocab, "max_position_embeddings": spec.max_positions,
                   "torch_dtype": "float16", "rms_norm_eps": 1e-5}, f)
    return path


def make_vllm_config(model_dir: str, spec: ModelSpec, num_blocks: int, kv: dict | None,
                     max_batched: int = 20480):
    from vllm.config import (CacheConfig, DeviceConfig, KVTransferConfig, ModelConfig,
                             SchedulerConfig, VllmConfig)
    mc = ModelConfig(model=model_dir, tokenizer=model_dir, skip_tokenizer_init=True,
                     dtype="float16", seed=0, max_model_len=spec.max_positions)
    sc = SchedulerConfig(max_num_seqs=16, max_num_batched_tokens=max_batched,
                         max_model_len=spec.max_positions, enable_chunked_prefill=True,
                         is_encoder_decoder=False)
    # vLLM's own prefix cache is off, so that every reused prefix comes through Strata.
    cc = CacheConfig(block_size=spec.block_size, cache_dtype="auto",
                     enable_prefix_caching=False, prefix_caching_hash_algo="sha256_cbor")
    cc.num_gpu_blocks = num_blocks
    kt = None
    if kv is not None:
        kt = KVTransferConfig(kv_connector="StrataConnector",
                              kv_connector_module_path="strata.adapters.vllm_connector",
                              kv_role=kv.get("role", "kv_both"),
                              kv_load_failure_policy="recompute",
                              kv_connector_extra_config=kv.get("extra", {}))
    return VllmConfig(model_config=mc, scheduler_config=sc, cache_config=cc,
                      kv_transfer_config=kt, device_config=DeviceConfig("cpu"))


class Engine:
    """vLLM's Scheduler + a Worker; with `kv` ({"extra": connector config, "role": ...}) both
    sides of StrataConnector, made by vLLM's KVConnectorFactory from kv_connector_module_path."""

    def __init__(self, model: TinyDecoder, model_dir: str, num_blocks: int = 1400,
                 kv: dict | None = None):
        from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash
        from vllm.v1.core.sched.scheduler import Scheduler
        from vllm.v1.kv_cache_interface import (FullAttentionSpec, KVCacheConfig,
                                                KVCacheGroupSpec)
        from vllm.v1.structured_output import StructuredOutputManager
        from vllm.utils.hashing import sha256_cbor
        s = model.s
        self.vc = make_vllm_config(model_dir, s, num_blocks, kv)
        names = [f"model.layers.{i}.self_attn.attn" for i in range(s.layers)]
        kcc = KVCacheConfig(num_blocks=num_blocks, kv_cache_tensors=[],
                            kv_cache_groups=[KVCacheGroupSpec(names, FullAttentionSpec(
                                block_size=s.block_size, num_kv_heads=s.kv_heads,
                                head_size=s.head_dim, dtype=torch.float16))])
        init_none_hash(sha256_cbor)
        self.hasher = get_request_block_hasher(s.block_size, sha256_cbor)
        self.scheduler = Scheduler(vllm_config=self.vc, kv_cache_config=kcc, log_stats=False,
                                   structured_output_manager=StructuredOutputManager(self.vc),
                                   block_size=s.block_size)
        conn = None
        if kv is not None:
            from vllm.distributed.kv_transfer.kv_connector.factory import KVConnectorFactory
            from vllm.distributed.kv_transfer.kv_connector.v1.base import KVConnectorRole
            conn = KVConnectorFactory.create_connector(config=self.vc,
                                                       role=KVConnectorRole.WORKER,
                                                       kv_cache_config=kcc)
        self.worker = Worker(model, num_blocks, conn)
        self.n = 0

    @property
    def scheduler_connector(self):
        return self.scheduler.connector

    def generate(self, prompt: list[int], max_tokens: int, kv_transfer_params=None):
        """Runs one request to completion; returns (tokens, ttft_s, kv_transfer_params out)."""
        from vllm.sampling_params import SamplingParams
        from vllm.v1.request import Request
        self.n += 1
        extra = {"kv_transfer_params": kv_transfer_params} if kv_transfer_params else None
        sp = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True,
                            extra_args=extra)
        req = Request(request_id=f"r{self.n}", prompt_token_ids=list(prompt), sampling_params=sp,
                      pooling_params=None, block_hasher=self.hasher)
        t0 = time.perf_counter()
        self.scheduler.add_request(req)
        ttft, params = None, None
        while self.scheduler.has_requests():
            so = self.scheduler.schedule()
            if so.total_num_scheduled_tokens == 0 and not so.finished_req_ids:
                time.sleep(0.005)  # waiting for a P/D prefill's blocks to become visible
            out = self.worker.execute(so)
            if ttft is None and any(out.sampled_token_ids):
                ttft = time.perf_counter() - t0
            for eco in self.scheduler.update_from_output(so, out).values():
                for o in eco.outputs:
                    if o.kv_transfer_params:
                        params = o.kv_transfer_params
        return list(req.output_token_ids), ttft, params

    def close(self):
        if self.worker.connector is not None:
            self.worker.connector.shutdown()


# ------------------------------------------------------------------ daemons


class StrataNodes:
    """`strata serve` processes: one standalone node, or a cluster of two with etcd."""

    def __init__(self, cli: str, nodes: int = 1, pool: str = "1GiB", extra: tuple = ()):
        self.dir = tempfile.mkdtemp(prefix="strata-ref-")
        self.procs: list[subprocess.Popen] = []
        self.sockets: list[str] = []
        cluster: list[str] = []
        if nodes > 1:
            port = 20000 + os.getpid() % 20000
            self.procs.append(subprocess.Popen(
                ["etcd", "--name", "ref", "--data-dir", f"{self.dir}/etcd",
                 "--listen-client-urls", f"http://127.0.0.1:{port}",
                 "--advertise-client-urls", f"http://127.0.0.1:{port}",
                 "--listen-peer-urls", f"http://127.0.0.1:{port + 1}",
                 "--initial-advertise-peer-urls", f"http://127.0.0.1:{port + 1}",
                 "--initial-cluster", f"ref=http://127.0.0.1:{port + 1}"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            with open(f"{self.dir}/secret", "w") as f:
                f.write("cmVmZXJlbmNlLWVuZ2luZS1jbHVzdGVyLXNlY3JldC0wMQ==\n")
            os.chmod(f"{self.dir}/secret", 0o600)
            import urllib.request
            for _ in range(200):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                    break
                except OSError:
                    time.sleep(0.05)
            cluster = ["--etcd", f"http://127.0.0.1:{port}", "--cluster-secret-file",
                       f"{self.dir}/secret"]
        for i in range(nodes):
            sock = f"{self.dir}/node{i}.sock"
            args = [cli, "serve", "--socket", sock, "--no-disk", "--host-pool", pool]
            if cluster:
                args += ["--node-id", f"node-{'ab'[i]}"] + cluster
            args += list(extra)  # more `strata serve` flags, e.g. --kv-events
            self.procs.append(subprocess.Popen(args, stdout=open(f"{self.dir}/node{i}.log", "w"),
                                               stderr=subprocess.STDOUT))
            self.sockets.append(sock)
        for sock in self.sockets:
            for _ in range(400):
                if os.path.exists(sock):
                    break
                time.sleep(0.025)
            else:
                raise RuntimeError(f"strata serve did not create {sock}")
        if cluster:
            time.sleep(1.0)  # both nodes see each other

    def close(self):
        for p in reversed(self.procs):
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


# ------------------------------------------------------------------ workloads


def conversation_prompts(spec: ModelSpec, n_conversations: int = 6, turns: int = 4,
                         seed: int = 7) -> list[list[int]]:
    """Prompts sharing system prompts and conversation prefixes: 3 system prompts; each
    conversation grows by a user turn and a (fixed, random) assistant turn per prompt."""
    g = torch.Generator().manual_seed(seed)

    def rand(n):
        return torch.randint(10, spec.vocab, (n,), generator=g).tolist()

    systems = [rand(int(torch.randint(48, 160, (1,), generator=g))) for _ in range(3)]
    prompts = []
    for c in range(n_conversations):
        history = list(systems[c % 3])
        for _ in range(turns):
            history += rand(int(torch.randint(12, 60, (1,), generator=g)))
            prompts.append(list(history))
            history += rand(int(torch.randint(8, 40, (1,), generator=g)))
    return prompts


def run_prompts(engine: Engine, prompts, max_tokens):
    return [engine.generate(p, max_tokens)[0] for p in prompts]


def exactness(cli: str, model_dir: str, spec: ModelSpec, prompts, max_tokens: int,
              codecs=("none",), layerwise: bool = True):
    """Tokens without Strata, then per codec with a fresh Strata node: a first engine stores
    (and reuses what earlier prompts stored), a second one, empty like a restarted instance,
    loads every prefix. Returns per codec the agreement of generated tokens with the baseline."""
    model = TinyDecoder(spec)
    base = Engine(model, model_dir)
    ref = run_prompts(base, prompts, max_tokens)
    results = {}
    for codec in codecs:
        nodes = StrataNodes(cli)
        try:
            extra = {"strata.socket": nodes.sockets[0], "strata.codec": codec,
                     "strata.layerwise": layerwise}
            first = Engine(model, model_dir, kv={"extra": extra})
            out1 = run_prompts(first, prompts, max_tokens)
            stats1 = first.worker.connector.strata_stats()
            sched1 = first.scheduler_connector.strata_stats()
            first.close()
            second = Engine(model, model_dir, kv={"extra": extra})
            out2 = run_prompts(second, prompts, max_tokens)
            stats2 = second.worker.connector.strata_stats()
            sched2 = second.scheduler_connector.strata_stats()
            second.close()
        finally:
            nodes.close()
        total = sum(len(r) for r in ref)
        agree1 = sum(a == b for r, o in zip(ref, out1) for a, b in zip(r, o))
        agree2 = sum(a == b for r, o in zip(ref, out2) for a, b in zip(r, o))
        results[codec] = {
            "tokens": total, "identical_first": out1 == ref, "identical_second": out2 == ref,
            "top1_agreement_first": agree1 / total, "top1_agreement_second": agree2 / total,
            "hit_blocks_first": sched1.get("hit_blocks", 0),
            "loaded_blocks_first": stats1.get("loaded_blocks", 0),
            "hit_blocks_second": sched2.get("hit_blocks", 0),
            "loaded_blocks_second": stats2.get("loaded_blocks", 0),
            "load_failed_blocks": stats1.get("load_failed_blocks", 0) +
            stats2.get("load_failed_blocks", 0),
            "fingerprint_mismatches": sched1.get("fingerprint_mismatches", 0) +
            sched2.get("fingerprint_mismatches", 0),
        }
    return results


def disaggregated(cli: str, model_dir: str, spec: ModelSpec, prompts, max_tokens: int):
    """Prefill on node A's engine (kv_producer), decode on node B's (kv_consumer), which loads the
    prefix through B; B pulls it from A over UCX. Tokens must equal the baseline's."""
    model = TinyDecoder(spec)
    base = Engine(model, model_dir)
    ref = run_prompts(base, prompts, max_tokens)
    nodes = StrataNodes(cli, nodes=2)
    try:
        pre = Engine(model, model_dir, kv={"role": "kv_producer",
                                           "extra": {"strata.socket": nodes.sockets[0]}})
        dec = Engine(model, model_dir, kv={"role": "kv_consumer",
                                           "extra": {"strata.socket": nodes.sockets[1],
                                                     "strata.pd_wait_s": 10.0}})
        outs, pulled = [], 0
        for p in prompts:
            _, _, params = pre.generate(p, 1, kv_transfer_params={"do_remote_decode": True})
            toks, _, _ = dec.generate(p, max_tokens, kv_transfer_params=params)
            outs.append(toks)
        stats = dec.worker.connector.strata_stats()
        pulled = stats.get("loaded_blocks", 0)
        pre.close()
        dec.close()
    finally:
        nodes.close()
    return {"identical": outs == ref, "prompts": len(prompts), "blocks_pulled": pulled,
            "expected_blocks": sum((len(p) - 1) // spec.block_size for p in prompts),
            "load_failed_blocks": stats.get("load_failed_blocks", 0)}


def ttft(cli: str, model_dir: str, spec: ModelSpec, sizes=(1024, 4096, 16384), codec="none",
         layerwise=True):
    """TTFT of a prompt whose prefix (all but its last 16 tokens) another instance stored,
    with and without Strata, and the hit funnel; DESIGN.md's JSON lines, yielded per size."""
    model = TinyDecoder(spec)
    g = torch.Generator().manual_seed(99)
    for n in sizes:
        prompt = torch.randint(10, spec.vocab, (n,), generator=g).tolist()
        blocks = (n + spec.block_size * 2) // spec.block_size + 8
        base = Engine(model, model_dir, num_blocks=blocks)
        ref, t_base, _ = base.generate(prompt, 1)
        nodes = StrataNodes(cli, pool="2GiB")
        try:
            extra = {"strata.socket": nodes.sockets[0], "strata.codec": codec,
                     "strata.layerwise": layerwise}
            writer = Engine(model, model_dir, num_blocks=blocks, kv={"extra": extra})
            writer.generate(prompt[:n - spec.block_size] + [1] * spec.block_size, 1)
            writer.close()
            reader = Engine(model, model_dir, num_blocks=blocks, kv={"extra": extra})
            toks, t_strata, _ = reader.generate(prompt, 1)
            st = reader.worker.connector.strata_stats()
            sch = reader.scheduler_connector.strata_stats()
            stalls = reader.worker.layer_wait_s
            reader.close()
        finally:
            nodes.close()
        found = sch.get("hit_blocks", 0)
        loaded = st.get("loaded_blocks", 0)
        # A layer whose wait returned within 1 ms was in the pages before its attention ran.
        ready_layers = sum(1 for w in stalls if w < 1e-3)
        in_time = loaded * ready_layers // max(1, len(stalls))
        load_s = sum(stalls)
        per_block_recompute = t_base / max(1, n // spec.block_size)
        per_block_load = load_s / max(1, loaded)
        yield {
            "bench": "reference_engine", "case": f"ttft/{n // 1024}K/codec={codec}/cpu",
            "metric": "ms", "value": round(t_strata * 1e3, 2), "baseline": "recompute",
            "baseline_value": round(t_base * 1e3, 2), "ratio": round(t_base / t_strata, 3),
            "tokens_identical": toks == ref, "blocks_found": found,
            "blocks_loaded": loaded, "blocks_loaded_before_attention": in_time,
            "load_wait_ms": round(load_s * 1e3, 2),
            "load_ms_per_block": round(per_block_load * 1e3, 4),
            "recompute_ms_per_block": round(per_block_recompute * 1e3, 4),
            "load_faster_than_recompute": per_block_load < per_block_recompute,
        }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=["exact", "lossy", "pd", "ttft"])
    ap.add_argument("--strata", default=os.environ.get("STRATA_CLI", "build/bin/strata"))
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--conversations", type=int, default=6)
    ap.add_argument("--turns", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--sizes", default="1024,4096,16384")
    ap.add_argument("--small", action="store_true",
                    help="2 KV heads, hidden 128, vocab 4096: the ctest's configuration")
    ap.add_argument("--codecs", default="",
                    help="comma list; default none,shuffle_lz4 (exact), fp8_e4m3,int8_group,"
                         "int4_kivi (lossy)")
    ap.add_argument("--no-layerwise", action="store_true")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (1: no oversubscription on a shared machine)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    spec = ModelSpec(layers=a.layers)
    if a.small:
        spec = ModelSpec(layers=a.layers, kv_heads=2, hidden=128, ffn=256, vocab=4096,
                         max_positions=4096)
    model_dir = write_model_dir(spec, tempfile.mkdtemp(prefix="strata-ref-model-"))
    prompts = conversation_prompts(spec, a.conversations, a.turns)
    lw = not a.no_layerwise
    if a.mode in ("exact", "lossy"):
        codecs = tuple(a.codecs.split(",")) if a.codecs else (
            ("none", "shuffle_lz4") if a.mode == "exact" else
            ("fp8_e4m3", "int8_group", "int4_kivi"))
        res = exactness(a.strata, model_dir, spec, prompts, a.max_tokens, codecs, lw)
        for codec, r in res.items():
            print(json.dumps({"bench": "reference_engine", "case": f"{a.mode}/codec={codec}",
                              "metric": "top1_agreement", "value": r["top1_agreement_second"],
                              "baseline": "no_strata", "baseline_value": 1.0,
                              "ratio": r["top1_agreement_second"], "prompts": len(prompts), **r}))
        if a.mode == "exact":
            return 0 if all(r["identical_first"] and r["identical_second"] and
                            r["loaded_blocks_second"] > 0 for r in res.values()) else 1
        return 0
    if a.mode == "pd":
        if shutil.which("etcd") is None:
            print("SKIP: the P/D run needs etcd for its two-node cluster")
            return 77
        r = disaggregated(a.strata, model_dir, spec, prompts, a.max_tokens)
        print(json.dumps({"bench": "reference_engine", "case": "pd/prefill_a_decode_b/ucx",
                          "metric": "identical", "value": int(r["identical"]),
                          "baseline": "no_strata", "baseline_value": 1,
                          "ratio": int(r["identical"]), **r}))
        return 0 if r["identical"] and r["blocks_pulled"] > 0 else 1
    for line in ttft(a.strata, model_dir, spec, [int(x) for x in a.sizes.split(",")],
                     layerwise=lw):
        print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
