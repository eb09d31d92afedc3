"""`strata keys --key-scheme ... --json` against the engines' algorithms, computed here in Python.

The reference functions below restate docs/keys.md ("Key schemes") with the same libraries the
engines use: cbor2.dumps(obj, canonical=True) + hashlib.sha256 / xxhash.xxh3_128_digest for vLLM
(vllm/utils/hashing.py sha256_cbor, xxhash_cbor; vllm/v1/core/kv_cache_utils.py init_none_hash,
hash_block_tokens, generate_block_hash_extra_keys, _gen_mm_extra_hash_keys), and hashlib.sha256
over the previous digest and uint32 little-endian tokens for SGLang (hicache_storage.py
get_hash_str). Many token lists, block sizes, seeds, LoRA names, salts and multimodal items.

Run by ctest as tools.keys_engine_schemes_match_python with STRATA_CLI set to the binary.
"""
import hashlib
import json
import os
import random
import struct
import subprocess
import tempfile

import cbor2
import pytest
import xxhash

CLI = os.environ.get("STRATA_CLI", "build/bin/strata")


def sha256_cbor(obj):
    return hashlib.sha256(cbor2.dumps(obj, canonical=True)).digest()


def xxhash_cbor(obj):
    return xxhash.xxh3_128_digest(cbor2.dumps(obj, canonical=True))


def vllm_mm_keys(mm, start, end, idx):
    """vLLM's _gen_mm_extra_hash_keys: mm is [(identifier, offset, length)] sorted by offset."""
    keys = []
    if not mm or mm[-1][1] + mm[-1][2] <= start:
        return keys, idx
    while idx < len(mm):
        ident, offset, length = mm[idx]
        if end > offset:
            if start >= offset + length:
                idx += 1
                continue
            keys.append((ident, offset - start))
            if end >= offset + length:
                idx += 1
            else:
                break
        else:
            break
    return keys, idx


def vllm_hashes(fn, seed, tokens, block_size, lora=None, salt=None, mm=()):
    none_hash = fn(seed)
    parent, out, idx = None, [], 0
    for start in range(0, len(tokens) - block_size + 1, block_size):
        end = start + block_size
        mm_keys, idx = vllm_mm_keys(list(mm), start, end, idx)
        extra = ([lora] if lora else []) + mm_keys + ([salt] if start == 0 and salt else [])
        extra = tuple(extra) if extra else None
        parent = fn((parent or none_hash, tuple(tokens[start:end]), extra))
        out.append(parent)
    return none_hash, out


def sglang_hashes(tokens, block_size):
    prior, out = None, []
    for start in range(0, len(tokens) - block_size + 1, block_size):
        h = hashlib.sha256()
        if prior:
            h.update(bytes.fromhex(prior))
        for t in tokens[start:start + block_size]:
            h.update(t.to_bytes(4, byteorder="little", signed=False))
        prior = h.hexdigest()
        out.append(prior)
    return out


def strata_keys(tokens, block_size, scheme, seed=None, lora=None, salt=None, mm=()):
    with tempfile.NamedTemporaryFile("w", suffix=".tokens", delete=False) as f:
        f.write(" ".join(map(str, tokens)))
        path = f.name
    try:
        cmd = [CLI, "keys", "--tokens", path, "--block-size", str(block_size),
               "--key-scheme", scheme, "--json"]
        if seed is not None:
            cmd += ["--hash-seed", seed]
        if lora:
            cmd += ["--lora", lora]
        if salt:
            cmd += ["--salt", salt]
        for ident, offset, length in mm:
            cmd += ["--mm", f"{ident}:{offset}:{length}"]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)
    finally:
        os.unlink(path)


def xxh3_128(b):
    return xxhash.xxh3_128_digest(b)


def tagged(h, ns):
    """docs/keys.md "Namespace tag": the key's first 4 bytes are the namespace id's first 4."""
    return ns[:4] + h[4:]


def check_strata_keys(out, engine_hashes):
    """key[i] = tag(XXH3-128(ns_id || engine hash i))."""
    ns = bytes.fromhex(out["namespace"])
    assert out["keys"] == [tagged(xxh3_128(ns + h), ns).hex() for h in engine_hashes]


def token_lists():
    rng = random.Random(20240611)
    lists = [list(range(64)), [0] * 48, [4294967295] * 32, list(range(1, 10)),
             [128000, 128006, 9125, 128007, 271] * 13]
    for _ in range(12):
        n = rng.randrange(0, 300)
        hi = rng.choice([32000, 128256, 152064, 2**32 - 1])
        lists.append([rng.randrange(0, hi) for _ in range(n)])
    return lists


CASES = [(i, bs) for i in range(len(token_lists())) for bs in (1, 4, 16, 32)]


@pytest.mark.parametrize("case,block_size", CASES)
@pytest.mark.parametrize("scheme,fn", [("vllm-sha256-cbor", sha256_cbor),
                                       ("vllm-xxhash-cbor", xxhash_cbor)])
def test_vllm_plain(case, block_size, scheme, fn):
    tokens = token_lists()[case]
    seed = "vllm-none-hash" if scheme == "vllm-sha256-cbor" else str(case)
    out = strata_keys(tokens, block_size, scheme,
                      seed=None if scheme == "vllm-sha256-cbor" else seed)
    root, hashes = vllm_hashes(fn, seed, tokens, block_size)
    assert out["hash_seed"] == seed
    assert out["engine_root"] == root.hex()
    assert out["engine_hashes"] == [h.hex() for h in hashes]
    assert out["unkeyed_tail_tokens"] == len(tokens) % block_size
    check_strata_keys(out, hashes)


EXTRA_CASES = [
    dict(seed="0", lora="sql-adapter"),
    dict(seed="12345", salt="tenant-a"),
    dict(seed="vllm-none-hash", lora="lora/ü", salt="s" * 30),
    dict(seed="", lora="x"),  # PYTHONHASHSEED="" is a seed too (cbor text of length 0)
    dict(seed="7", mm=[("img-a", 0, 5)]),
    dict(seed="7", mm=[("img-a", 3, 40), ("img-b", 43, 2), ("img-c", 45, 0), ("aud", 60, 100)]),
    dict(seed="42", lora="l", salt="s", mm=[("0123abcd" * 8, 10, 16), ("f" * 64, 26, 6)]),
    dict(seed="1", mm=[("a", 16, 16), ("b", 32, 1), ("c", 31, 1)]),
]


@pytest.mark.parametrize("extra", EXTRA_CASES)
@pytest.mark.parametrize("block_size", [4, 16])
@pytest.mark.parametrize("scheme,fn", [("vllm-sha256-cbor", sha256_cbor),
                                       ("vllm-xxhash-cbor", xxhash_cbor)])
def test_vllm_extra_keys(extra, block_size, scheme, fn):
    tokens = token_lists()[5][:200] + list(range(200))
    mm = sorted(extra.get("mm", []), key=lambda m: m[1])
    if scheme == "vllm-xxhash-cbor" and extra["seed"] == "":
        pytest.skip("vllm-xxhash-cbor refuses an empty seed (tested below)")
    out = strata_keys(tokens, block_size, scheme, seed=extra["seed"], lora=extra.get("lora"),
                      salt=extra.get("salt"), mm=mm)
    seed = extra["seed"] or ("vllm-none-hash" if scheme == "vllm-sha256-cbor" else "")
    _, hashes = vllm_hashes(fn, seed, tokens, block_size, lora=extra.get("lora"),
                            salt=extra.get("salt"), mm=mm)
    assert out["engine_hashes"] == [h.hex() for h in hashes]
    check_strata_keys(out, hashes)


@pytest.mark.parametrize("case,block_size", CASES)
def test_sglang(case, block_size):
    tokens = token_lists()[case]
    out = strata_keys(tokens, block_size, "sglang")
    hashes = sglang_hashes(tokens, block_size)
    assert out["engine_root"] is None
    assert out["engine_hashes"] == hashes
    check_strata_keys(out, [bytes.fromhex(h) for h in hashes])


def test_strata_scheme_unchanged_by_engine_flags():
    """--key-scheme strata is the XXH3-128 chain of docs/keys.md, hashes == keys."""
    tokens = list(range(32))
    out = strata_keys(tokens, 16, "strata")
    assert "engine_hashes" not in out
    prev = bytes.fromhex(out["namespace"])
    for i, key in enumerate(out["keys"]):
        prev = tagged(xxh3_128(prev + struct.pack("<16I", *tokens[16 * i:16 * (i + 1)])), prev)
        assert key == prev.hex()


def test_refused_combinations_name_the_problem():
    with tempfile.NamedTemporaryFile("w", suffix=".tokens") as f:
        f.write("1 2 3 4")
        f.flush()
        for args, says in [(["--key-scheme", "vllm-xxhash-cbor"], "PYTHONHASHSEED"),
                           (["--key-scheme", "sglang", "--hash-seed", "1"], "no seed"),
                           (["--key-scheme", "strata", "--hash-seed", "1"], "no seed"),
                           (["--key-scheme", "sha256_cbor"], "unknown key scheme"),
                           (["--key-scheme", "sglang", "--mm", "a:0:1"], "vLLM key scheme"),
                           (["--key-scheme", "vllm-sha256-cbor", "--mm", "a:x:1"], "OFFSET")]:
            res = subprocess.run([CLI, "keys", "--tokens", f.name, "--block-size", "4"] + args,
                                 capture_output=True, text=True, timeout=60)
            assert res.returncode == 2, (args, res.stdout, res.stderr)
            assert says in res.stderr, (args, res.stderr)
