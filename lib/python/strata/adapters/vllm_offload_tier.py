"""StrataSecondaryTier: Strata as a secondary tier of vLLM's native KV offloading
(`TieringOffloadingSpec`), so that vLLM's CPU offloading cascades into Strata's host pool, NVMe
and peers, and promotes from them.

    --kv-transfer-config '{"kv_connector": "OffloadingConnector", "kv_role": "kv_both",
      "kv_connector_extra_config": {"spec_name": "TieringOffloadingSpec",
        "cpu_bytes_to_use": 8589934592,
        "secondary_tiers": [{"type": "StrataSecondaryTier",
                             "module_path": "strata.adapters.vllm_offload_tier",
                             "socket": "/run/strata/strata.sock"}]}}'

vLLM's primary (CPU) tier owns the bytes: one row of `primary_kv_view` per offloaded chunk, every
layer (and every rank's share) of `blocks_per_chunk` blocks in vLLM's own layout. Strata stores a
row as one opaque block: the namespace names the model, dtype, layout and parallel degree vLLM
reports (so rows of another layout never match) and its payload is the row; the key of a row is
`engine_keys([block_hash])` of vLLM's offload key, one namespace per KV cache group. Lossless codecs
apply; lossy ones are refused (the row is not one dtype Strata could quantize).

Every method runs in vLLM's scheduler under the tiering manager's lock and returns at once:
`submit_store` / `submit_load` hand the copy to a worker thread (the client releases the GIL while
bytes move); `get_finished_jobs` drains what completed; `lookup` is one control round trip to the
local node (which also answers for peers' blocks in a cluster), RETRY for a chunk still being
stored. A load that returns fewer chunks than asked (evicted, failed its checksum) reports the
successful prefix, so vLLM promotes only verified bytes.

Thread-safety: results are queued under a lock; everything else is touched by the caller's thread.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

import strata
from strata.adapters.vllm_common import AdapterCounters

from vllm.v1.kv_offload.base import (
    LookupResult,
    Medium,
    OffloadingEvent,
    OffloadKey,
    ReqContext,
    RequestOffloadingContext,
    get_offload_block_hash,
    get_offload_group_idx,
)
from vllm.v1.kv_offload.tiering.base import JobResult, SecondaryTierManager, TransferJob

if TYPE_CHECKING:
    from vllm.v1.kv_offload.base import OffloadingSpec
    from vllm.v1.kv_offload.tiering.backpressure import BackpressureDetector

logger = logging.getLogger("strata.adapters.vllm")

_LOSSLESS = ("none", "shuffle_zstd", "shuffle_lz4")


class StrataSecondaryTier(SecondaryTierManager):
    """A non-blocking SecondaryTierManager backed by a Strata node."""

    medium: ClassVar[Medium] = Medium.STORAGE

    def __init__(self, offloading_spec: "OffloadingSpec", primary_kv_view: memoryview,
                 tier_type: str, backpressure_detector: "BackpressureDetector | None" = None,
                 socket: str = "", codec: str = "none", model_id: str | None = None,
                 tenant_salt: str = "", threads: int = 2, client: Any = None, **_: Any):
        super().__init__(offloading_spec=offloading_spec, primary_kv_view=primary_kv_view,
                         tier_type=tier_type, backpressure_detector=backpressure_detector)
        if codec not in _LOSSLESS:
            raise ValueError(f"StrataSecondaryTier: codec {codec!r} is lossy; a vLLM offload row "
                             f"is opaque bytes, use one of {_LOSSLESS}")
        self._rows = np.asarray(primary_kv_view)  # (num_chunks, row_bytes) uint8, no copy
        if self._rows.ndim != 2:
            self._rows = self._rows.reshape(self._rows.shape[0], -1)
        self._row_bytes = int(self._rows.shape[1])
        if self._row_bytes % 2:
            raise ValueError(f"StrataSecondaryTier: a row of {self._row_bytes} bytes is odd")
        self._codec, self._salt = codec, tenant_salt
        self._model_id = model_id
        self._ns_by_group: dict[int, strata.Namespace] = {}
        self.counters = AdapterCounters()
        self._client = client if client is not None else strata.Client.connect(socket)
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, threads),
                                                           thread_name_prefix="strata-tier")
        self._lock = threading.Lock()
        self._done: list[JobResult] = []  # guarded by _lock
        self._futures: set[concurrent.futures.Future] = set()
        self._storing: dict[OffloadKey, int] = {}  # keys of in-flight stores (caller's thread)
        self._events: list[OffloadingEvent] = []  # guarded by _lock
        self._stored_keys: list[OffloadKey] = []  # keys of finished stores, guarded by _lock
        logger.info("StrataSecondaryTier: rows of %d bytes, codec %s, namespace %s",
                    self._row_bytes, codec, self._namespace(0).id)

    # A row as one opaque block: 2 planes x 1 layer x 1 token x 1 head x row/2 one-byte elements.
    # The model's own layout is named in model_revision so that rows of another layout, dtype,
    # chunk size or parallel degree never match.
    def _namespace(self, group: int) -> strata.Namespace:
        ns = self._ns_by_group.get(group)
        if ns is None:
            cfg = getattr(self._offloading_spec, "config", None)
            model = getattr(cfg, "model", None)
            par = getattr(cfg, "parallel", None)
            cache = getattr(cfg, "cache", None)
            name = self._model_id or getattr(model, "name", "unknown")
            layout = (f"vllm-offload-row|dtype={getattr(model, 'dtype', '?')}"
                      f"|layout={getattr(cfg, 'kv_cache_layout', None)}"
                      f"|tokens_per_hash={getattr(cache, 'tokens_per_hash', '?')}"
                      f"|blocks_per_chunk={getattr(cache, 'blocks_per_chunk', '?')}"
                      f"|tp={getattr(par, 'tp_size', '?')}|pp={getattr(par, 'pp_size', '?')}"
                      f"|group={group}|row={self._row_bytes}")
            ns = strata.Namespace(name, num_layers=1, num_kv_heads=1,
                                  head_dim=self._row_bytes // 2, block_size=1,
                                  kv_dtype="fp8_e4m3", codec=self._codec,
                                  tenant_salt=self._salt, model_revision=layout)
            self._ns_by_group[group] = ns
        return ns

    def _split(self, keys: Collection[OffloadKey], chunk_ids) -> dict[int, tuple]:
        """Per KV cache group: (strata keys, row indices, offload keys, their block hashes), in job
        order."""
        out: dict[int, tuple[list, list, list]] = {}
        for k, c in zip(keys, chunk_ids):
            g = get_offload_group_idx(k)
            sk, rows, oks = out.setdefault(g, ([], [], []))
            sk.append(get_offload_block_hash(k))
            rows.append(int(c))
            oks.append(k)
        for g, (hashes, rows, oks) in out.items():
            out[g] = (self._namespace(g).engine_keys(hashes), rows, oks, hashes)
        return out

    # ------------------------------------------------------------- SecondaryTierManager

    def lookup(self, key: OffloadKey, req_context: ReqContext) -> LookupResult:
        if key in self._storing:
            return LookupResult.RETRY
        try:
            sk = self._namespace(get_offload_group_idx(key)).engine_keys(
                [get_offload_block_hash(key)])
            matched, _ = self._client.lookup(sk)
        except Exception as e:  # a node that is gone is a miss, never an engine error
            self.counters.add("lookup_errors")
            logger.warning("StrataSecondaryTier: lookup failed: %s", e)
            return LookupResult.MISS
        self.counters.add("lookups")
        if matched:
            self.counters.add("lookup_hits")
        return LookupResult.HIT if matched else LookupResult.MISS

    def _submit(self, fn, job: TransferJob) -> None:
        fut = self._pool.submit(fn, job)
        self._futures.add(fut)

    def submit_store(self, job_metadata: TransferJob) -> None:
        for k in job_metadata.keys:
            self._storing[k] = self._storing.get(k, 0) + 1
        self._submit(self._run_store, job_metadata)

    def submit_load(self, job_metadata: TransferJob) -> None:
        self._submit(self._run_load, job_metadata)

    def _run_store(self, job: TransferJob) -> None:
        t0 = time.perf_counter()
        ok, stored_keys = True, []
        try:
            for g, (keys, rows, oks, hashes) in self._split(job.keys, job.chunk_ids).items():
                # The node's KV events name each row by its offload key's hash, as vLLM's own
                # events name a secondary tier's chunk (no parent, no tokens).
                self._client.store(self._namespace(g), keys, [self._rows[r] for r in rows],
                                   engine_blocks=[(h, None, None) for h in hashes])
                stored_keys.extend(oks)
        except Exception as e:
            ok = False
            self.counters.add("store_errors")
            logger.warning("StrataSecondaryTier: store job %d failed: %s", job.job_id, e)
        n = len(job.keys)
        self.counters.add("stored_chunks", len(stored_keys))
        with self._lock:
            self._done.append(JobResult(job_id=job.job_id, success=ok,
                                        transfer_time=time.perf_counter() - t0,
                                        transfer_bytes=n * self._row_bytes))
            if stored_keys:
                self._events.append(OffloadingEvent(keys=stored_keys, medium=self.medium,
                                                    removed=False, ownership=self.tier_type))
            self._stored_keys.extend(job.keys)

    def _run_load(self, job: TransferJob) -> None:
        t0 = time.perf_counter()
        loaded: list[OffloadKey] = []
        ok = True
        try:
            for g, (keys, rows, oks, _) in self._split(job.keys, job.chunk_ids).items():
                n = self._client.load(self._namespace(g), keys, [self._rows[r] for r in rows])
                loaded.extend(oks[:n])
                if n < len(keys):
                    ok = False
                    break
        except Exception as e:
            ok = False
            logger.warning("StrataSecondaryTier: load job %d failed: %s", job.job_id, e)
        self.counters.add("loaded_chunks", len(loaded))
        if not ok:
            self.counters.add("load_failed_chunks", len(job.keys) - len(loaded))
        with self._lock:
            self._done.append(JobResult(
                job_id=job.job_id, success=ok, successful_keys=None if ok else loaded,
                transfer_time=time.perf_counter() - t0,
                transfer_bytes=len(loaded) * self._row_bytes))

    def get_finished_jobs(self) -> Iterable[JobResult]:
        with self._lock:
            out, self._done = self._done, []
            finished_keys, self._stored_keys = self._stored_keys, []
        for k in finished_keys:
            left = self._storing.get(k, 0) - 1
            if left > 0:
                self._storing[k] = left
            else:
                self._storing.pop(k, None)
        self._futures = {f for f in self._futures if not f.done()}
        return out

    def has_pending_work(self) -> bool:
        return any(not f.done() for f in self._futures)

    def take_events(self) -> Iterable[OffloadingEvent]:
        with self._lock:
            out, self._events = self._events, []
        return out

    def on_new_request(self, req_context: ReqContext) -> RequestOffloadingContext:
        return RequestOffloadingContext()

    def drain_jobs(self) -> None:
        concurrent.futures.wait(list(self._futures))

    def shutdown(self) -> None:
        self.drain_jobs()
        self._pool.shutdown(wait=True)
        self._rows = None  # release our export of the primary view, so vLLM can unmap it
        logger.info("StrataSecondaryTier counters: %s", self.counters.snapshot())
