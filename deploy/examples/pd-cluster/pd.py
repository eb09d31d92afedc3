#!/usr/bin/env python3
"""Disaggregated prefill -> decode by hand, over two `strata serve` cluster nodes.

The prefill engine stores the KV of a 4K-token prompt through node A; the decode engine, a client
of node B, looks the prompt up (it is remote), loads it through B (B pulls it from A into its host
pool) and checks the bytes. Prints the time from lookup to loaded.

usage: pd.py PREFILL_SOCKET DECODE_SOCKET
"""
import random
import sys
import time

import strata


def main():
    prefill_sock, decode_sock = sys.argv[1], sys.argv[2]
    ns = strata.Namespace("example/llama-like", num_layers=2, num_kv_heads=2, head_dim=64,
                          block_size=16, kv_dtype="fp16")
    rng = random.Random(5)
    tokens = [rng.randrange(128000) for _ in range(4096)]
    keys = ns.keys(tokens)  # 256 blocks
    block_bytes = ns.block_bytes
    blocks = [rng.randbytes(block_bytes) for _ in keys]

    prefill = strata.Client.connect(prefill_sock)
    stored = prefill.store(ns, keys, blocks)
    print(f"prefill: stored {stored} blocks of {block_bytes} bytes through node A")

    decode = strata.Client.connect(decode_sock)
    deadline = time.time() + 10
    while True:  # announces reach the directory in batches (every ~50 ms)
        matched, tiers = decode.lookup(keys)
        if matched == len(keys) or time.time() > deadline:
            break
        time.sleep(0.05)
    t0 = time.perf_counter()
    matched, tiers = decode.lookup(keys)
    out = [bytearray(block_bytes) for _ in keys]
    loaded = decode.load(keys, out)
    t1 = time.perf_counter()
    exact = sum(int(a == b) for a, b in zip(out, blocks))
    print(f"decode: lookup saw {matched} blocks, first tier {tiers[0] if tiers else 'none'}")
    print(f"decode: loaded {loaded} blocks through node B, {exact} bit-exact")
    print(f"lookup -> loaded: {(t1 - t0) * 1e3:.2f} ms for {loaded * block_bytes / 2**20:.1f} MiB")
    return 0 if loaded == len(keys) and exact == len(keys) else 1


if __name__ == "__main__":
    sys.exit(main())
