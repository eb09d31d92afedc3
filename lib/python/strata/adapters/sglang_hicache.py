"""SGLang HiCache storage backend (L3) on Strata.

Loaded by SGLang with its dynamic backend::

    --enable-hierarchical-cache --hicache-storage-backend dynamic \\
    --hicache-storage-backend-extra-config '{"backend_name": "strata",
        "module_path": "strata.adapters.sglang_hicache", "class_name": "StrataHiCacheStorage",
        "socket": "/run/strata/strata.sock", "codec": "none"}'

SGLang hands the backend page hashes (its chained SHA-256 over uint32 little-endian tokens, hex:
Strata's `sglang` key scheme) and token indices of its host pool. Each page is one Strata block:
the pages are copied (one torch copy) into a staging cache registered with the paged API, whose
store encodes with the namespace's codec and cuts every block into one shard per KV head, so a
rank of any tensor-parallel degree loads exactly its heads (docs/data-plane.md). A load verifies
every block before a byte reaches SGLang's pool; a failed load is a miss for that page and the
pages after it, never wrong KV.

The namespace is built from the host pool (model, layers, KV heads of the whole model, head dim,
page size, dtype, MLA) and what the extra config names (model id, codec, tenant salt, revision).
An extra-config value that contradicts the pool is a fingerprint mismatch: logged as an error,
counted in get_stats()["fingerprint_mismatches"], and the backend refuses to attach (raising),
rather than missing silently forever.

docs/engines.md: versions tested, configuration keys, what the tests stand in for.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, List, Optional

import torch

from sglang.srt.mem_cache.hicache_storage import (
    HiCacheStorage,
    HiCacheStorageConfig,
    HiCacheStorageExtraInfo,
)

import strata

logger = logging.getLogger(__name__)

# torch dtype -> Strata's dtype name (strata::ParseKvDtype).
_DTYPES = {
    torch.float16: "fp16",
    torch.bfloat16: "bf16",
    torch.float32: "fp32",
    torch.float8_e4m3fn: "fp8_e4m3",
    torch.float8_e5m2: "fp8_e5m2",
}
# The staging cache holds at most this many bytes; larger batches go in several rounds.
_STAGING_BYTES = 256 << 20


class FingerprintMismatch(ValueError):
    """The extra config names a namespace that the engine's pool contradicts."""


def _default_socket() -> str:
    return os.environ.get("STRATA_SOCKET", "")


class StrataHiCacheStorage(HiCacheStorage):
    """HiCacheStorage over a Strata daemon (`strata serve`), or an embedded cache.

    extra_config keys (all optional): socket (daemon socket; default $STRATA_SOCKET, else the
    daemon's default), embedded_pool_bytes (no daemon: an in-process cache of that size, for
    tests and single-process use), model_id (default storage_config.model_name), codec (default
    none), tenant_salt, model_revision, num_kv_heads / head_dim / dtype / num_layers /
    page_size (checked against the pool: a mismatch is refused, see the module doc).
    """

    def __init__(self, storage_config: HiCacheStorageConfig, kwargs: Optional[dict] = None):
        self.storage_config = storage_config
        self.extra = dict(storage_config.extra_config or {})
        self.extra.update(kwargs or {})
        self._lock = threading.Lock()
        self._stats = {"stored_pages": 0, "loaded_pages": 0, "load_failures": 0,
                       "store_failures": 0, "fingerprint_mismatches": 0}
        if "embedded_pool_bytes" in self.extra:
            self.client = strata.Client.embedded(int(self.extra["embedded_pool_bytes"]))
        else:
            self.client = strata.Client.connect(str(self.extra.get("socket",
                                                                   _default_socket())))
        self.ns = None
        self.mem_pool_host = None
        self._cache = None
        self._stage = None

    # ---- attach -------------------------------------------------------------------------------

    def register_mem_pool_host(self, mem_pool_host) -> None:
        super().register_mem_pool_host(mem_pool_host)
        pool = mem_pool_host
        if pool.layout not in ("layer_first", "page_first", "page_first_direct"):
            raise ValueError(f"strata: host pool layout {pool.layout!r} is not supported "
                             "(layer_first, page_first, page_first_direct are)")
        self.mla = bool(self.storage_config.is_mla_model)
        self.tp_rank = 0 if self.mla else self.storage_config.tp_rank
        self.tp_size = 1 if self.mla else self.storage_config.tp_size
        self.page_size = int(pool.page_size)
        self.layers = int(pool.layer_num)
        if pool.dtype not in _DTYPES:
            raise ValueError(f"strata: host pool dtype {pool.dtype} has no Strata dtype")
        dtype = _DTYPES[pool.dtype]
        if self.mla:
            local_heads, head_dim = 1, int(getattr(pool, "kv_cache_dim", 0)
                                           or pool.kv_lora_rank + pool.qk_rope_head_dim)
        else:
            local_heads, head_dim = int(pool.head_num), int(pool.head_dim)
            if getattr(pool, "v_head_dim", head_dim) != head_dim:
                raise ValueError("strata: K and V head dims differ; not supported")
        self.local_heads = local_heads
        self.head_dim = head_dim
        total_heads = local_heads * self.tp_size
        announced = {"num_layers": self.layers, "num_kv_heads": total_heads,
                     "head_dim": head_dim, "dtype": dtype, "page_size": self.page_size}
        wrong = {k: (self.extra[k], v) for k, v in announced.items()
                 if k in self.extra and str(self.extra[k]) != str(v)}
        model = self.extra.get("model_id") or self.storage_config.model_name or ""
        if not model:
            wrong["model_id"] = ("", "a model id (extra_config model_id or --model-path)")
        if wrong:
            self._stats["fingerprint_mismatches"] += 1
            detail = ", ".join(f"{k}: configured {a!r}, engine has {b!r}"
                               for k, (a, b) in wrong.items())
            logger.error("strata: namespace fingerprint mismatch (%s); not attaching", detail)
            raise FingerprintMismatch(f"strata namespace fingerprint mismatch: {detail}")
        self.ns = strata.Namespace(
            model_id=model, num_layers=self.layers, num_kv_heads=total_heads,
            head_dim=head_dim, block_size=self.page_size, kv_dtype=dtype, mla=self.mla,
            codec=str(self.extra.get("codec", "none")),
            tenant_salt=str(self.extra.get("tenant_salt", "")),
            model_revision=str(self.extra.get("model_revision", "")), key_scheme="sglang")
        page_bytes = self._page_bytes(pool.dtype)
        self.stage_pages = max(1, min(_STAGING_BYTES // page_bytes, 1024))
        # vLLM layout, one tensor per layer: [2, pages, page_size, heads, head_dim] (MLA: the
        # latent, [pages, page_size, 1, dim]); all layers in one allocation.
        if self.mla:
            shape = (self.layers, self.stage_pages, self.page_size, 1, head_dim)
        else:
            shape = (self.layers, 2, self.stage_pages, self.page_size, local_heads, head_dim)
        self._stage = torch.empty(shape, dtype=pool.dtype)
        self._cache = self.client.register_kv_cache(
            self.ns, [self._stage[i] for i in range(self.layers)],
            layout="mla" if self.mla else "vllm", tp_rank=self.tp_rank, tp_size=self.tp_size)
        logger.info("strata: attached (namespace %s, %d-token pages, %d layers, %s, rank %d/%d)",
                    self.ns.id, self.page_size, self.layers, dtype, self.tp_rank, self.tp_size)

    def _page_bytes(self, dtype: torch.dtype) -> int:
        planes = 1 if self.mla else 2
        elem = torch.empty((), dtype=dtype).element_size()
        return planes * self.layers * self.page_size * self.local_heads * self.head_dim * elem

    # ---- page views of SGLang's host pool -----------------------------------------------------

    def _pages(self, host_indices: torch.Tensor, n: int) -> torch.Tensor:
        """Page ids of the first n pages of host_indices (token indices, page aligned)."""
        starts = host_indices.reshape(-1)[: n * self.page_size: self.page_size]
        return (starts // self.page_size).to(torch.long)

    def _gather(self, pages: torch.Tensor, out: torch.Tensor) -> None:
        """Copies pool pages into out: [L, 2, n, ps, H, D] (MLA [L, n, ps, 1, D])."""
        pool, ps = self.mem_pool_host, self.page_size
        kv = pool.kv_buffer
        tok = (pages[:, None] * ps + torch.arange(ps)).reshape(-1)
        n = pages.numel()
        if self.mla:
            if pool.layout == "layer_first":      # [L, size, 1, D]
                src = kv[:, tok].view(self.layers, n, ps, 1, self.head_dim)
            elif pool.layout == "page_first":     # [size, L, 1, D]
                src = kv[tok].view(n, ps, self.layers, 1, self.head_dim).permute(2, 0, 1, 3, 4)
            else:                                 # [page_num, L, ps, 1, D]
                src = kv[pages].permute(1, 0, 2, 3, 4)
        else:
            if pool.layout == "layer_first":      # [2, L, size, H, D]
                src = kv[:, :, tok].view(2, self.layers, n, ps, self.local_heads, self.head_dim)
            elif pool.layout == "page_first":     # [2, size, L, H, D]
                src = kv[:, tok].view(2, n, ps, self.layers, self.local_heads, self.head_dim)
                src = src.permute(0, 3, 1, 2, 4, 5)
            else:                                 # [2, page_num, L, ps, H, D]
                src = kv[:, pages].permute(0, 2, 1, 3, 4, 5)
            src = src.transpose(0, 1)
        out.copy_(src)

    def _scatter(self, pages: torch.Tensor, src: torch.Tensor) -> None:
        """Copies src (as _gather's out) into the pool's pages."""
        pool, ps = self.mem_pool_host, self.page_size
        kv = pool.kv_buffer
        tok = (pages[:, None] * ps + torch.arange(ps)).reshape(-1)
        n = pages.numel()
        if self.mla:
            if pool.layout == "layer_first":
                kv[:, tok] = src.reshape(self.layers, n * ps, 1, self.head_dim)
            elif pool.layout == "page_first":
                kv[tok] = src.permute(1, 2, 0, 3, 4).reshape(n * ps, self.layers, 1,
                                                              self.head_dim)
            else:
                kv[pages] = src.permute(1, 0, 2, 3, 4)
        else:
            s = src.transpose(0, 1)  # [2, L, n, ps, H, D]
            if pool.layout == "layer_first":
                kv[:, :, tok] = s.reshape(2, self.layers, n * ps, self.local_heads, self.head_dim)
            elif pool.layout == "page_first":
                kv[:, tok] = s.permute(0, 2, 3, 1, 4, 5).reshape(
                    2, n * ps, self.layers, self.local_heads, self.head_dim)
            else:
                kv[:, pages] = s.permute(0, 2, 1, 3, 4, 5)

    def _stage_view(self, n: int) -> torch.Tensor:
        return self._stage[:, :n] if self.mla else self._stage[:, :, :n]

    def _keys(self, keys: List[str]) -> List[bytes]:
        return self.ns.engine_keys(list(keys))

    def _require_attached(self) -> None:
        if self.ns is None:
            raise RuntimeError("strata: no host pool registered (register_mem_pool_host)")

    # ---- HiCacheStorage -----------------------------------------------------------------------

    def batch_exists(self, keys: List[str],
                     extra_info: Optional[HiCacheStorageExtraInfo] = None) -> int:
        """Leading pages this rank can load now (all of its head shards present)."""
        self._require_attached()
        if not keys:
            return 0
        return int(self.client.lookup_paged(self._cache, self._keys(keys)))

    def exists(self, key: str) -> bool:
        return self.batch_exists([key]) == 1

    def batch_set_v1(self, keys: List[str], host_indices: torch.Tensor,
                     extra_info: Optional[HiCacheStorageExtraInfo] = None) -> List[bool]:
        """Stores pages host_indices (page-aligned token indices) as keys; raises on failure."""
        self._require_attached()
        if len(host_indices) != len(keys) * self.page_size:
            raise ValueError(f"strata: {len(keys)} keys need {len(keys) * self.page_size} "
                             f"host indices, got {len(host_indices)}")
        if not self.storage_config.is_storage_writer:
            return [True] * len(keys)  # MLA: one writer per replica group stores for all
        skeys = self._keys(keys)
        pages = self._pages(host_indices, len(keys))
        # For the node's KV events: each page's hash and its parent's (the page before it in the
        # chain: keys[i - 1], or the last of extra_info.prefix_keys); SGLang hands over no tokens.
        prefix = (extra_info.prefix_keys if extra_info is not None else None) or []
        parents = ([prefix[-1]] if prefix else [None]) + list(keys[:-1])
        engine = [(k, p, None) for k, p in zip(keys, parents)]
        with self._lock:
            for lo in range(0, len(keys), self.stage_pages):
                hi = min(lo + self.stage_pages, len(keys))
                self._gather(pages[lo:hi], self._stage_view(hi - lo))
                try:
                    self.client.store_paged(self._cache, skeys[lo:hi], list(range(hi - lo)),
                                            engine_blocks=engine[lo:hi])
                except Exception:
                    self._stats["store_failures"] += hi - lo
                    raise
        self._stats["stored_pages"] += len(keys)
        return [True] * len(keys)

    def batch_get_v1(self, keys: List[str], host_indices: torch.Tensor,
                     extra_info: Optional[HiCacheStorageExtraInfo] = None) -> List[bool]:
        """Loads the longest loadable prefix of keys into host_indices; True per page loaded.

        A page that is absent or fails verification is False, and so is every page after it
        (HiCache uses the leading run). Raises only when the daemon cannot be asked at all."""
        self._require_attached()
        if len(host_indices) != len(keys) * self.page_size:
            raise ValueError(f"strata: {len(keys)} keys need {len(keys) * self.page_size} "
                             f"host indices, got {len(host_indices)}")
        skeys = self._keys(keys)
        pages = self._pages(host_indices, len(keys))
        done = 0
        with self._lock:
            for lo in range(0, len(keys), self.stage_pages):
                hi = min(lo + self.stage_pages, len(keys))
                got = int(self.client.load_paged(self._cache, skeys[lo:hi], list(range(hi - lo))))
                if got:
                    self._scatter(pages[lo:lo + got], self._stage_view(got))
                done += got
                if got < hi - lo:
                    break
        self._stats["loaded_pages"] += done
        self._stats["load_failures"] += len(keys) - done
        return [True] * done + [False] * (len(keys) - done)

    # The per-key forms of the older interface, on the same paths (no target: a page at index 0
    # of a scratch pool is not meaningful, so they take host indices as target_location).
    def get(self, key: str, target_location: Optional[Any] = None,
            target_sizes: Optional[Any] = None) -> torch.Tensor | None:
        if target_location is None:
            raise ValueError("strata: get needs target_location (the page's host indices)")
        ok = self.batch_get_v1([key], torch.as_tensor(target_location))
        return target_location if ok[0] else None

    def batch_get(self, keys: List[str], target_locations: Optional[Any] = None,
                  target_sizes: Optional[Any] = None) -> List[torch.Tensor | None]:
        if target_locations is None:
            raise ValueError("strata: batch_get needs target_locations")
        idx = torch.cat([torch.as_tensor(t).reshape(-1) for t in target_locations])
        ok = self.batch_get_v1(keys, idx)
        return [t if o else None for t, o in zip(target_locations, ok)]

    def set(self, key: str, value: Optional[Any] = None, target_location: Optional[Any] = None,
            target_sizes: Optional[Any] = None) -> bool:
        if target_location is None:
            raise ValueError("strata: set needs target_location (the page's host indices)")
        return self.batch_set_v1([key], torch.as_tensor(target_location))[0]

    def batch_set(self, keys: List[str], values: Optional[Any] = None,
                  target_locations: Optional[Any] = None,
                  target_sizes: Optional[Any] = None) -> bool:
        if target_locations is None:
            raise ValueError("strata: batch_set needs target_locations")
        idx = torch.cat([torch.as_tensor(t).reshape(-1) for t in target_locations])
        return all(self.batch_set_v1(keys, idx))

    def clear(self) -> None:
        """Drops this namespace's blocks (only the caller's namespace: never other tenants')."""
        self._require_attached()
        self.client.clear(self.ns)

    def get_stats(self):
        out = dict(self._stats)
        out["namespace"] = self.ns.id if self.ns is not None else None
        return out

    def close(self) -> None:
        if self._cache is not None:
            self.client.unregister_kv_cache(self._cache)
        self._cache = None
