"""What the vLLM adapters share: the namespace a vLLM instance announces, the fingerprint check
against the namespace the operator configured, and the adapters' counters.

A vLLM instance announces its KV format through its config (model, dtype, layers, KV heads, head
size, block size, `--prefix-caching-hash-algo`, PYTHONHASHSEED). The adapters build the Strata
namespace from it; when the operator also configured one (`strata.namespace` in the adapter's
config, e.g. the fleet-wide model id when local model paths differ), every field that differs is
logged as an error and counted (`fingerprint_mismatches`): a namespace that differs from its
engine would otherwise show up only as a silent 0% hit rate (docs/keys.md).

Thread-safety: AdapterCounters is safe to update from several threads; the rest is pure.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import strata

logger = logging.getLogger("strata.adapters.vllm")

# vLLM's --prefix-caching-hash-algo -> Strata key scheme. The pickle-based "sha256" and "xxhash"
# algorithms hash Python objects and cannot be recomputed outside vLLM's own interpreter: the
# adapters still key blocks by those hashes (vLLM instances agree among themselves) but report the
# namespace as a mismatch, because neither `strata keys` nor a router can reproduce them.
HASH_ALGO_TO_KEY_SCHEME = {
    "sha256_cbor": "vllm-sha256-cbor",
    "xxhash_cbor": "vllm-xxhash-cbor",
}

_TORCH_DTYPE_TO_KV = {
    "torch.float16": "fp16",
    "torch.bfloat16": "bf16",
    "torch.float32": "fp32",
    "float16": "fp16",
    "half": "fp16",
    "bfloat16": "bf16",
    "float32": "fp32",
    "float": "fp32",
}

_CACHE_DTYPE_TO_KV = {
    "fp8": "fp8_e4m3",
    "fp8_e4m3": "fp8_e4m3",
    "fp8_e5m2": "fp8_e5m2",
}

NAMESPACE_FIELDS = ("model_id", "num_layers", "num_kv_heads", "head_dim", "block_size",
                    "kv_dtype", "mla", "codec", "lora_id", "tenant_salt", "model_revision",
                    "key_scheme", "hash_seed")


class AdapterCounters:
    """Named event counters of one adapter instance (lookups, hits, loads, failures...)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, int] = {}

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._values[name] = self._values.get(name, 0) + n

    def get(self, name: str) -> int:
        with self._lock:
            return self._values.get(name, 0)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)


def kv_dtype_name(cache_dtype: str, model_dtype: Any) -> str:
    """Strata's name of the KV dtype vLLM stores: its cache_dtype, or the model dtype for 'auto'."""
    if cache_dtype and cache_dtype != "auto":
        if cache_dtype not in _CACHE_DTYPE_TO_KV:
            raise ValueError(f"vLLM kv-cache-dtype {cache_dtype!r} has no Strata dtype")
        return _CACHE_DTYPE_TO_KV[cache_dtype]
    name = str(model_dtype)
    if name not in _TORCH_DTYPE_TO_KV:
        raise ValueError(f"vLLM model dtype {name!r} has no Strata KV dtype")
    return _TORCH_DTYPE_TO_KV[name]


def announced_namespace_fields(vllm_config: Any, codec: str = "none") -> dict[str, Any]:
    """The namespace fields a vLLM instance announces through its config."""
    mc = vllm_config.model_config
    cc = vllm_config.cache_config
    algo = getattr(cc, "prefix_caching_hash_algo", "sha256")
    mla = bool(getattr(mc, "use_mla", False))
    hf = mc.hf_text_config
    num_layers = getattr(hf, "num_hidden_layers", None) or mc.get_num_layers(
        vllm_config.parallel_config)
    return {
        "model_id": mc.model,
        "model_revision": mc.revision or "",
        "num_layers": int(num_layers),
        "num_kv_heads": 1 if mla else int(mc.get_total_num_kv_heads()),
        "head_dim": int(mc.get_head_size()),
        "block_size": int(cc.block_size),
        "kv_dtype": kv_dtype_name(cc.cache_dtype, mc.dtype),
        "mla": mla,
        "codec": codec,
        "lora_id": "",
        "tenant_salt": "",
        # An algorithm Strata cannot recompute announces itself by name: it never equals a scheme.
        "key_scheme": HASH_ALGO_TO_KEY_SCHEME.get(algo, f"vllm-{algo}"),
        "hash_seed": os.environ.get("PYTHONHASHSEED", ""),
    }


def make_namespace(fields: dict[str, Any]) -> strata.Namespace:
    f = dict(fields)
    scheme = f.get("key_scheme", "strata")
    if scheme.startswith("vllm-") and scheme not in HASH_ALGO_TO_KEY_SCHEME.values():
        raise ValueError(
            f"vLLM hash algorithm {scheme[5:]!r} cannot be recomputed outside vLLM; start vLLM "
            "with --prefix-caching-hash-algo sha256_cbor (or xxhash_cbor with PYTHONHASHSEED)")
    return strata.Namespace(**{k: f[k] for k in NAMESPACE_FIELDS if k in f})


def resolve_namespace(vllm_config: Any, extra: dict[str, Any],
                      counters: AdapterCounters) -> strata.Namespace:
    """The namespace an adapter uses: the configured one (`strata.namespace` overrides on top of
    what vLLM announces). Every field in which it differs from what vLLM announces is logged as an
    error and counted as one `fingerprint_mismatches`."""
    codec = extra.get("strata.codec", "none")
    announced = announced_namespace_fields(vllm_config, codec)
    configured = dict(announced)
    configured.update(extra.get("strata.namespace", {}) or {})
    if configured["key_scheme"] not in HASH_ALGO_TO_KEY_SCHEME.values():
        # vLLM's pickle-based algorithm: keyed by its hashes anyway, reported below.
        configured["key_scheme"] = "vllm-sha256-cbor"
        configured["hash_seed"] = ""
    ns = make_namespace(configured)
    diffs = fingerprint_differences(configured, announced)
    if diffs:
        counters.add("fingerprint_mismatches")
        logger.error(
            "Strata namespace %s differs from what this vLLM announces (%s); blocks stored by "
            "instances that disagree will not be found: %s", ns.id,
            "check --prefix-caching-hash-algo, PYTHONHASHSEED and the strata.namespace config",
            "; ".join(diffs))
    return ns


def fingerprint_differences(ours: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    """Fields that differ as 'field: ours vs theirs'. Namespaces that both construct are compared
    by Strata itself (seeds after their defaults); the rest field by field."""
    try:
        return make_namespace(ours).fingerprint_differences(make_namespace(theirs))
    except (ValueError, RuntimeError):
        return [f"{k}: {ours.get(k)!r} vs {theirs.get(k)!r}" for k in NAMESPACE_FIELDS
                if ours.get(k) != theirs.get(k)]
