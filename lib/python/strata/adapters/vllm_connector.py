"""StrataConnector: vLLM's KV connector (KVConnectorBase_V1) on Strata's paged API.

Load it out of tree (docs/engines.md):

    vllm serve MODEL --prefix-caching-hash-algo sha256_cbor --kv-transfer-config '{
      "kv_connector": "StrataConnector",
      "kv_connector_module_path": "strata.adapters.vllm_connector",
      "kv_role": "kv_both",
      "kv_connector_extra_config": {"strata.socket": "/run/strata/strata.sock"}}'

Keys are vLLM's own block hashes: block i of a request is stored under
`Namespace.engine_keys([request.block_hashes[i]])` = XXH3-128(ns_id || vLLM's hash) with the
namespace's tag in its first 4 bytes, so Strata, vLLM, its KV events and the routers above it name
a block alike (docs/keys.md). The namespace comes
from vLLM's config; a configured one that differs is an error in the log and a counter, never a
silent miss (vllm_common.py). Requests are spot-checked too: the first block of a plain-text
request is keyed by Strata from its tokens and must equal the key of vLLM's hash.

Scheduler side (one instance, the scheduler process):
  get_num_new_matched_tokens  the blocks after the locally cached ones that every rank can load
                              *now* (LookupPaged: all head shards present, local or on a peer);
                              never pins or loads anything. At most (num_tokens - 1) // B blocks.
  update_state_after_alloc    plans the load of those blocks into the pages vLLM allocated.
  build_connector_meta        hands the step's loads and saves to the workers: every block whose
                              KV this step completes is saved (full blocks only).
  request_finished            with `strata.save: on_finish`, saves the request's full computed
                              blocks now (blocks held until the workers report them in
                              get_finished); a P/D producer returns the kv_transfer_params that
                              tell the decode instance how many blocks to expect.

Worker side (one instance per rank):
  register_kv_caches          registers the layer tensors (vLLM flash-attn, FlashInfer or MLA
                              layout, this rank's heads) with RegisterKvCache.
  start_load_kv               starts a layer-by-layer paged load (LoadPagedLayerwise) per request.
  wait_for_layer_load         waits for that layer: attention on layer i runs while later layers
                              still load.
  save_kv_layer               gathers the layer of the step's saved blocks (StoreLayer); the pages
                              are free again when it returns.
  wait_for_save               gathers what save_kv_layer did not, then commits in the background.
  get_finished                the finish-time saves that completed.
  get_block_ids_with_load_errors  pages whose load failed (a block past the verified prefix, a
                              dead daemon): vLLM recomputes them, never reads wrong KV.

P/D: the prefill instance (request kv_transfer_params {"do_remote_decode": true}) saves as usual
and returns {"do_remote_prefill": true, "strata_num_blocks": n, "strata_namespace": id}; the proxy
passes them to the decode instance, whose connector waits (up to `strata.pd_wait_s`) until its own
Strata node sees those n blocks (the cluster directory finds them on the prefill node) and loads
them: node B pulls them from node A over UCX.

Thread-safety: vLLM calls each side from one thread. Background commits run on one helper
thread and touch only the futures list under a lock.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

import strata
from strata.adapters.vllm_common import AdapterCounters, resolve_namespace

from vllm.distributed.kv_transfer.kv_connector.v1.base import (
    KVConnectorBase_V1,
    KVConnectorMetadata,
    KVConnectorRole,
)

try:  # vLLM >= 0.33 labels hits by tier.
    from vllm.v1.metrics.cache_hit_source import CacheHitSource
except ImportError:  # pragma: no cover
    CacheHitSource = None

if TYPE_CHECKING:
    from vllm.config import VllmConfig
    from vllm.forward_context import ForwardContext
    from vllm.v1.attention.backend import AttentionMetadata
    from vllm.v1.core.kv_cache_manager import KVCacheBlocks
    from vllm.v1.core.sched.output import SchedulerOutput
    from vllm.v1.kv_cache_interface import KVCacheConfig
    from vllm.v1.request import Request

logger = logging.getLogger("strata.adapters.vllm")

# Bytes of KV one background commit may hold in the client's staging memory (a layerwise store
# must fit whole; ClientOptions::staging_bytes is 256 MiB by default).
_SAVE_CHUNK_BYTES = 48 << 20
_MAX_INFLIGHT_SAVE_BYTES = 160 << 20


@dataclass
class LoadOp:
    """Load keys[i] into page block_ids[i] (vLLM's block ids of KV cache group 0)."""
    req_id: str
    keys: list[bytes]
    block_ids: list[int]


@dataclass
class SaveOp:
    """Save page block_ids[i] as keys[i]; `finish`: report req_id in get_finished when done.
    `engine_blocks`: what vLLM publishes for each block in its KV events (its hash, its parent's,
    its tokens), so that the node's KV events name the blocks as vLLM's own do."""
    req_id: str
    keys: list[bytes]
    block_ids: list[int]
    finish: bool = False
    engine_blocks: list[tuple[bytes, bytes | None, list[int]]] | None = None


@dataclass
class StrataConnectorMetadata(KVConnectorMetadata):
    loads: list[LoadOp] = field(default_factory=list)
    saves: list[SaveOp] = field(default_factory=list)
    # Requests whose finish-time saves are in `saves` (possibly none left to save).
    finishing: list[str] = field(default_factory=list)


@dataclass
class _ReqState:
    request: Any
    block_ids: list[int] = field(default_factory=list)
    saved_blocks: int = 0  # leading blocks already in Strata or handed to a save


@dataclass
class _ActiveSave:
    op: SaveOp
    handle: Any  # strata.LayerwiseStore
    layers_done: set[int] = field(default_factory=set)


def _detect_layout(t: torch.Tensor, block_size: int, override: str | None) -> str:
    if override:
        return override
    if t.dim() == 3:
        return "mla"  # [num_blocks, block_size, latent_dim]
    if t.dim() == 5 and t.shape[0] == 2 and t.shape[2] == block_size:
        return "vllm"  # [2, num_blocks, block_size, heads, head_dim]
    if t.dim() == 5 and t.shape[1] == 2 and t.shape[2] == block_size:
        return "flashinfer"  # [num_blocks, 2, block_size, heads, head_dim]
    raise ValueError(f"KV cache tensor of shape {tuple(t.shape)} is in no layout Strata knows; "
                     "set strata.layout")


class StrataConnector(KVConnectorBase_V1):
    """vLLM KV connector storing and loading prefix KV through a Strata node."""

    if CacheHitSource is not None:
        _cache_hit_source = CacheHitSource.HOST

    def __init__(self, vllm_config: "VllmConfig", role: KVConnectorRole,
                 kv_cache_config: "KVCacheConfig | None" = None, *, client: Any = None):
        super().__init__(vllm_config=vllm_config, role=role, kv_cache_config=kv_cache_config)
        extra = dict(self._kv_transfer_config.kv_connector_extra_config or {})
        self._extra = extra
        self.counters = AdapterCounters()
        self._block_size = int(vllm_config.cache_config.block_size)
        self._layerwise = bool(extra.get("strata.layerwise", True))
        self._save_policy = extra.get("strata.save", "per_step")
        if self._save_policy not in ("per_step", "on_finish", "none"):
            raise ValueError("strata.save must be per_step, on_finish or none")
        self._pd_wait_s = float(extra.get("strata.pd_wait_s", 5.0))
        self.ns = resolve_namespace(vllm_config, extra, self.counters)
        self._client = client if client is not None else strata.Client.connect(
            extra.get("strata.socket", ""))
        # The engine's prefill rate, sent with its loads (`strata inspect funnel`).
        if extra.get("strata.recompute_tokens_per_second") is not None:
            self._client.set_recompute_rate(
                self.ns, float(extra["strata.recompute_tokens_per_second"]))
        tp = vllm_config.parallel_config
        self._tp_size = int(extra.get("strata.tp_size", tp.tensor_parallel_size))
        if tp.pipeline_parallel_size != 1:
            raise ValueError("StrataConnector: pipeline parallelism is not supported")

        # Scheduler side.
        self._reqs: dict[str, _ReqState] = {}
        self._match_start: dict[str, int] = {}  # memo of the last lookup: first block asked
        self._pd_deadline: dict[str, float] = {}
        self._pending_loads: list[LoadOp] = []
        self._pending_finish_saves: list[SaveOp] = []
        self._pending_finishing: list[str] = []
        self._lookup_cache = None
        self._key_check_done = False
        if role == KVConnectorRole.SCHEDULER:
            self._lookup_cache = self._register_lookup_cache()

        # Worker side.
        self._cache = None
        self._layer_index: dict[str, int] = {}
        self._num_layers = 0
        self._on_cuda = False
        self._active_loads: list[tuple[LoadOp, Any, int]] = []  # (op, handle, loaded or -1)
        self._active_saves: list[_ActiveSave] = []
        self._load_errors: set[int] = set()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="strata-commit")
        self._futures_lock = threading.Lock()
        self._save_futures: list[tuple[SaveOp, concurrent.futures.Future, int]] = []
        self._finish_waiting: dict[str, int] = {}  # req_id -> saves not yet committed
        self._finished_sending: set[str] = set()
        logger.info("StrataConnector (%s): namespace %s, key scheme %s, layerwise %s, save %s",
                    role.name, self.ns.id, self.ns.key_scheme, self._layerwise, self._save_policy)

    # ---------------------------------------------------------------- shared helpers

    def _keys(self, hashes: list[bytes]) -> list[bytes]:
        return self.ns.engine_keys(list(hashes)) if hashes else []

    def _register_lookup_cache(self):
        # LookupPaged asks for every head shard of a block in this namespace; the scheduler holds
        # no pages, so it registers one page per layer (all heads: what every rank together needs).
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}.get(
            self._ns_field("kv_dtype"), torch.uint8)
        mla = self._ns_field("mla")
        heads, dim, B = self._ns_field("num_kv_heads"), self._ns_field("head_dim"), self._block_size
        shape = (1, B, dim) if mla else (2, 1, B, heads, dim)
        layers = [torch.zeros(shape, dtype=dtype) for _ in range(self._ns_field("num_layers"))]
        return self._client.register_kv_cache(self.ns, layers, layout="mla" if mla else "vllm")

    def _ns_field(self, name: str):
        from strata.adapters.vllm_common import announced_namespace_fields
        if not hasattr(self, "_ns_fields"):
            f = announced_namespace_fields(self._vllm_config, self._extra.get("strata.codec",
                                                                              "none"))
            f.update(self._extra.get("strata.namespace", {}) or {})
            self._ns_fields = f
        return self._ns_fields[name]

    def _check_request_keys(self, request: "Request") -> None:
        """A plain-text request's first block keyed by Strata from its tokens must equal the key
        of vLLM's own hash; otherwise the namespace's key scheme or seed differs from vLLM's."""
        if self._key_check_done or not request.block_hashes:
            return
        if (getattr(request, "lora_request", None) or getattr(request, "mm_features", None)
                or getattr(request, "cache_salt", None)):
            return
        tokens = list(request.prompt_token_ids[:self._block_size])
        self._key_check_done = True
        ours = self.ns.keys(tokens)[:1]
        if ours != self._keys(request.block_hashes[:1]):
            self.counters.add("fingerprint_mismatches")
            logger.error(
                "StrataConnector: vLLM's block hash of the first block differs from Strata's "
                "key scheme %s (seed %r) for namespace %s: vLLM's --prefix-caching-hash-algo or "
                "PYTHONHASHSEED is not what the namespace says; keys of other instances and "
                "`strata keys` will not match this one", self.ns.key_scheme, self.ns.hash_seed,
                self.ns.id)

    def strata_stats(self) -> dict[str, int]:
        """The adapter's counters (lookups, hit blocks, loaded and failed blocks, saves,
        fingerprint mismatches)."""
        return self.counters.snapshot()

    # ---------------------------------------------------------------- scheduler side

    def get_num_new_matched_tokens(self, request: "Request",
                                   num_computed_tokens: int) -> tuple[int | None, bool]:
        B = self._block_size
        self._check_request_keys(request)
        max_blocks = (request.num_tokens - 1) // B  # one token is always computed
        start = num_computed_tokens // B
        hashes = request.block_hashes[start:max_blocks]
        if not hashes:
            return 0, False
        try:
            found = self._client.lookup_paged(self._lookup_cache, self._keys(hashes))
        except Exception as e:  # a daemon that is gone: no hits, never an engine error
            self.counters.add("lookup_errors")
            logger.warning("StrataConnector: lookup failed (%s); computing request %s",
                           e, request.request_id)
            return 0, False
        self.counters.add("lookups")
        params = request.kv_transfer_params or {}
        if params.get("do_remote_prefill") and "strata_num_blocks" in params:
            expected = min(int(params["strata_num_blocks"]), max_blocks) - start
            if found < expected:
                deadline = self._pd_deadline.setdefault(request.request_id,
                                                        time.monotonic() + self._pd_wait_s)
                if time.monotonic() < deadline:
                    return None, False  # the prefill node's blocks are not visible yet
                self.counters.add("pd_wait_timeouts")
                logger.warning("StrataConnector: request %s expected %d blocks from its prefill "
                               "instance, %d are visible after %.1f s; computing the rest",
                               request.request_id, expected, found, self._pd_wait_s)
        self._match_start[request.request_id] = start
        return found * B, False

    def update_state_after_alloc(self, request: "Request", blocks: "KVCacheBlocks",
                                 num_external_tokens: int):
        st = self._reqs.get(request.request_id)
        if st is None:
            st = self._reqs[request.request_id] = _ReqState(request)
        st.request = request
        st.block_ids = list(blocks.get_block_ids()[0]) if blocks is not None else []
        start = self._match_start.pop(request.request_id, 0)
        self._pd_deadline.pop(request.request_id, None)
        n = num_external_tokens // self._block_size
        # Blocks below `start` were in vLLM's own prefix cache: computed (and saved) earlier.
        st.saved_blocks = max(st.saved_blocks, start + n)
        if n <= 0:
            return
        if start + n > len(st.block_ids):
            logger.error("StrataConnector: %d pages for a load of blocks [%d, %d); not loading",
                         len(st.block_ids), start, start + n)
            st.saved_blocks = start
            return
        keys = self._keys(request.block_hashes[start:start + n])
        self._pending_loads.append(LoadOp(request.request_id, keys, st.block_ids[start:start + n]))
        self.counters.add("hit_blocks", n)

    def _plan_save(self, meta: StrataConnectorMetadata, st: _ReqState, computed: int) -> None:
        if self._save_policy != "per_step":
            return
        full = min(computed // self._block_size, len(st.request.block_hashes), len(st.block_ids))
        if full > st.saved_blocks:
            self._append_saves(meta.saves, st, full, finish=False)

    def _append_saves(self, out: list[SaveOp], st: _ReqState, full: int, finish: bool) -> None:
        rid = st.request.request_id
        first = st.saved_blocks
        keys = self._keys(st.request.block_hashes[first:full])
        engine = self._engine_blocks(st.request, first, full)
        per = max(1, _SAVE_CHUNK_BYTES // max(1, self.ns.block_bytes // self._tp_size))
        for i in range(0, full - first, per):
            out.append(SaveOp(rid, keys[i:i + per], st.block_ids[first + i:min(full, first + i +
                                                                                per)], finish,
                              engine[i:i + per] if engine is not None else None))
        st.saved_blocks = full

    def _engine_blocks(self, request: "Request", first: int,
                       full: int) -> list[tuple[bytes, bytes | None, list[int]]] | None:
        """Blocks [first, full) as vLLM's BlockStored names them (vllm/v1/core/block_pool.py):
        the block's hash, the previous block's (None for block 0), the block's tokens. None when
        the key scheme is not one Strata shares with vLLM (its events then name the keys)."""
        if self.ns.key_scheme not in ("vllm-sha256-cbor", "vllm-xxhash-cbor"):
            return None
        hashes, tokens, b = request.block_hashes, request.all_token_ids, self._block_size
        return [(bytes(hashes[j]), bytes(hashes[j - 1]) if j > 0 else None,
                 list(tokens[j * b:(j + 1) * b])) for j in range(first, full)]

    def build_connector_meta(self, scheduler_output: "SchedulerOutput") -> KVConnectorMetadata:
        meta = StrataConnectorMetadata(loads=self._pending_loads)
        self._pending_loads = []
        so = scheduler_output
        for new in so.scheduled_new_reqs:
            st = self._reqs.get(new.req_id)
            if st is None:
                continue
            st.block_ids = list(new.block_ids[0])
            self._plan_save(meta, st, new.num_computed_tokens +
                            so.num_scheduled_tokens.get(new.req_id, 0))
        cached = so.scheduled_cached_reqs
        for i, req_id in enumerate(cached.req_ids):
            st = self._reqs.get(req_id)
            if st is None:
                continue
            new_ids = cached.new_block_ids[i]
            if req_id in cached.resumed_req_ids:
                st.block_ids = list(new_ids[0]) if new_ids else []
            elif new_ids:
                st.block_ids.extend(new_ids[0])
            self._plan_save(meta, st, cached.num_computed_tokens[i] +
                            so.num_scheduled_tokens.get(req_id, 0))
        meta.saves.extend(self._pending_finish_saves)
        meta.finishing = self._pending_finishing
        self._pending_finish_saves, self._pending_finishing = [], []
        return meta

    def request_finished(self, request: "Request",
                         block_ids: list[int]) -> tuple[bool, dict[str, Any] | None]:
        st = self._reqs.pop(request.request_id, None)
        self._match_start.pop(request.request_id, None)
        self._pd_deadline.pop(request.request_id, None)
        full = min(request.num_computed_tokens // self._block_size, len(request.block_hashes),
                   len(block_ids))
        delay = False
        if st is not None and self._save_policy == "on_finish" and full > st.saved_blocks:
            st.block_ids = list(block_ids)
            self._append_saves(self._pending_finish_saves, st, full, finish=True)
            self._pending_finishing.append(request.request_id)
            delay = True  # pages stay allocated until get_finished reports the save
        params = None
        if (request.kv_transfer_params or {}).get("do_remote_decode"):
            params = {"do_remote_prefill": True, "do_remote_decode": False,
                      "strata_num_blocks": full, "strata_namespace": self.ns.id}
        return delay, params

    @classmethod
    def get_required_kvcache_layout(cls, vllm_config: "VllmConfig") -> str | None:
        return "NHD"  # [.., block_size, heads, head_dim]: the layouts Strata gathers from

    @classmethod
    def requires_piecewise_for_cudagraph(cls, extra_config: dict[str, Any]) -> bool:
        return bool(extra_config.get("strata.layerwise", True))

    # ---------------------------------------------------------------- worker side

    def register_kv_caches(self, kv_caches: dict[str, torch.Tensor]):
        names = list(kv_caches)
        tensors = [kv_caches[n] for n in names]
        if not tensors:
            return
        self._layer_index = {n: i for i, n in enumerate(names)}
        self._num_layers = len(names)
        self._on_cuda = tensors[0].is_cuda
        layout = _detect_layout(tensors[0], self._block_size, self._extra.get("strata.layout"))
        rank = int(self._extra.get("strata.tp_rank", self._tp_rank()))
        try:
            self._cache = self._client.register_kv_cache(self.ns, tensors, layout=layout,
                                                         tp_rank=rank, tp_size=self._tp_size)
        except ValueError as e:  # InvalidArgument: the tensors do not fit the namespace
            self.counters.add("fingerprint_mismatches")
            logger.error("StrataConnector: vLLM's KV cache (%d layers of %s, %s layout, rank %d "
                         "of %d) does not match namespace %s: %s", len(tensors),
                         tuple(tensors[0].shape), layout, rank, self._tp_size, self.ns.id, e)
            raise

    def _tp_rank(self) -> int:
        try:
            from vllm.distributed.parallel_state import get_tensor_model_parallel_rank
            return int(get_tensor_model_parallel_rank())
        except Exception:  # no process group (a single process)
            return 0

    def _fail_load(self, op: LoadOp, loaded: int, why: str) -> None:
        failed = op.block_ids[loaded:]
        if failed:
            self._load_errors.update(failed)
            self.counters.add("load_failed_blocks", len(failed))
            logger.warning("StrataConnector: request %s loaded %d of %d blocks (%s); vLLM "
                           "recomputes the rest", op.req_id, loaded, len(op.keys), why)

    def _finish_load(self, op: LoadOp, loaded: int) -> None:
        self.counters.add("loaded_blocks", loaded)
        if loaded < len(op.keys):
            self._fail_load(op, loaded, "a block was evicted, failed its checksum or is gone")

    def start_load_kv(self, forward_context: "ForwardContext", **kwargs: Any) -> None:
        meta = self._get_connector_metadata()
        assert isinstance(meta, StrataConnectorMetadata)
        for op in meta.loads:
            try:
                if self._layerwise:
                    h = self._client.load_paged_layerwise(self._cache, op.keys, op.block_ids)
                    self._active_loads.append((op, h, -1))
                else:
                    self._finish_load(op, self._client.load_paged(self._cache, op.keys,
                                                                   op.block_ids))
            except Exception as e:
                self._fail_load(op, 0, str(e))

    def wait_for_layer_load(self, layer_name: str) -> None:
        idx = self._layer_index.get(layer_name)
        if idx is None or not self._active_loads:
            return
        self._wait_loads(idx)

    def _wait_loads(self, layer: int) -> None:
        still = []
        for op, h, loaded in self._active_loads:
            try:
                n = h.wait_layer(layer)
            except Exception as e:
                self._fail_load(op, 0, str(e))
                continue
            if loaded < 0:
                self._finish_load(op, n)
            if layer + 1 < self._num_layers:
                still.append((op, h, n))
        self._active_loads = still

    def save_kv_layer(self, layer_name: str, kv_layer: torch.Tensor,
                      attn_metadata: "AttentionMetadata", **kwargs: Any) -> None:
        idx = self._layer_index.get(layer_name)
        if idx is None or not self.has_connector_metadata():
            return
        meta = self._get_connector_metadata()
        if not meta.saves:
            return
        if not self._active_saves:
            self._begin_saves(meta)
        if self._on_cuda:
            torch.cuda.current_stream().synchronize()  # the layer's KV is written
        for s in self._active_saves:
            self._store_layer(s, idx)

    def _begin_saves(self, meta: StrataConnectorMetadata) -> None:
        bytes_per_block = max(1, self.ns.block_bytes // self._tp_size)
        need = sum(len(op.keys) for op in meta.saves) * bytes_per_block
        self._bound_inflight(need)
        for op in meta.saves:
            try:
                h = self._client.store_paged_layerwise(self._cache, op.keys, op.block_ids,
                                                       engine_blocks=op.engine_blocks)
                self._active_saves.append(_ActiveSave(op, h))
            except Exception as e:
                self._save_failed(op, e)

    def _store_layer(self, s: _ActiveSave, layer: int) -> None:
        if s.handle is None or layer in s.layers_done:
            return
        try:
            s.handle.store_layer(layer)
            s.layers_done.add(layer)
        except Exception as e:
            self._save_failed(s.op, e)
            s.handle = None

    def _save_failed(self, op: SaveOp, e: Exception) -> None:
        self.counters.add("save_errors")
        logger.warning("StrataConnector: saving %d blocks of request %s failed: %s",
                       len(op.keys), op.req_id, e)

    def wait_for_save(self):
        if not self.has_connector_metadata():
            return
        meta = self._get_connector_metadata()
        for rid in meta.finishing:
            self._finish_waiting.setdefault(rid, 0)
        if meta.saves and not self._active_saves:
            self._begin_saves(meta)
        if self._on_cuda and self._active_saves:
            torch.cuda.current_stream().synchronize()
        bytes_per_block = max(1, self.ns.block_bytes // self._tp_size)
        for s in self._active_saves:
            for layer in range(self._num_layers):
                self._store_layer(s, layer)
            if s.op.finish:
                self._finish_waiting[s.op.req_id] = self._finish_waiting.get(s.op.req_id, 0) + 1
            if s.handle is None:
                self._commit_done(s.op, None)
                continue
            fut = self._executor.submit(s.handle.finish)
            with self._futures_lock:
                self._save_futures.append((s.op, fut, len(s.op.keys) * bytes_per_block))
        self._active_saves = []
        # Finish-time saves with nothing left to save are done now.
        for rid in meta.finishing:
            if self._finish_waiting.get(rid) == 0:
                del self._finish_waiting[rid]
                self._finished_sending.add(rid)
        # Loads whose layers were not all waited for (a model without some attention layer).
        if self._active_loads:
            self._wait_loads(self._num_layers - 1)

    def _commit_done(self, op: SaveOp, result: Any) -> None:
        if isinstance(result, int):
            self.counters.add("saved_blocks", len(op.keys))
        if op.finish:
            left = self._finish_waiting.get(op.req_id, 1) - 1
            if left <= 0:
                self._finish_waiting.pop(op.req_id, None)
                self._finished_sending.add(op.req_id)
            else:
                self._finish_waiting[op.req_id] = left

    def _poll_saves(self, block_until_bytes: int | None = None) -> None:
        with self._futures_lock:
            futures = list(self._save_futures)
        inflight = sum(b for _, f, b in futures if not f.done())
        done = []
        for op, f, b in futures:
            if not f.done() and block_until_bytes is not None and inflight > block_until_bytes:
                concurrent.futures.wait([f])
                inflight -= b
            if f.done():
                done.append((op, f, b))
        for op, f, b in done:
            try:
                self._commit_done(op, f.result())
            except Exception as e:
                self._save_failed(op, e)
                self._commit_done(op, None)
        with self._futures_lock:
            ids = {id(f) for _, f, _ in done}
            self._save_futures = [x for x in self._save_futures if id(x[1]) not in ids]

    def _bound_inflight(self, need: int) -> None:
        self._poll_saves(block_until_bytes=max(0, _MAX_INFLIGHT_SAVE_BYTES - need))

    def get_finished(self, finished_req_ids: set[str]) -> tuple[set[str] | None, set[str] | None]:
        self._poll_saves()
        out, self._finished_sending = self._finished_sending, set()
        return (out or None), None

    def get_block_ids_with_load_errors(self) -> set[int]:
        out, self._load_errors = self._load_errors, set()
        return out

    def wait_for_all_saves(self) -> None:
        """Blocks until every background commit finished (tests, shutdown)."""
        with self._futures_lock:
            futures = [f for _, f, _ in self._save_futures]
        concurrent.futures.wait(futures)
        self._poll_saves()

    def shutdown(self):
        self.wait_for_all_saves()
        self._executor.shutdown(wait=True)
        logger.info("StrataConnector (%s) counters: %s", self.role.name, self.strata_stats())
        # The registered caches hold the engine's tensors (and, with STRATA_KV_HUGE_PAGES=collapse,
        # a collapse in flight): released here, before the engine frees its KV.
        for cache in (self._cache, self._lookup_cache):
            if cache is not None:
                self._client.unregister_kv_cache(cache)
        self._cache = self._lookup_cache = None
