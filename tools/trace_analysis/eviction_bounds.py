#!/usr/bin/env python3
"""How far can an online eviction policy get on a trace?

`strata bench trace` compares the store's policy with LRU and Belady (the offline optimum). This
script asks the question behind the gap: which *information* does Belady's margin come from? It
replays the same model (a request hits the longest cached prefix of its chain, then all its blocks
are cached; eviction takes the lowest-ranked block, deeper blocks of a chain first) with rankings
that are given more and more knowledge of the future:

  lru            last use (no future knowledge)
  arc            ARC (Megiddo & Modha, FAST'03), adaptive recency/frequency with ghost lists
  fitted         the best ranking by features an online policy can observe (uses so far of the
                 chain's root, time since its last use, its last reuse gap, chain length), with
                 P(next use within H | features) fitted on this very trace in hindsight: an upper
                 bound for any policy that ranks by these features, however it learns them
  oracle_alive   LRU told which blocks are never used again (they go first)
  oracle_rate    the root's true future request rate (its remaining requests / remaining span)
  belady         next use, exactly

Usage: eviction_bounds.py [--trace FILE] [--fractions 0.05,0.10] [--json]
Takes about a minute per capacity on the Mooncake trace (numpy only). The figures are recorded
in docs/store.md ("How far online policies can get").
"""
import argparse
import bisect
import collections
import json
import os
import sys
from collections import OrderedDict

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_TRACE = os.path.join(HERE, "..", "..", "tests", "data", "mooncake_synthetic_trace.jsonl")


def read_chains(path):
    chains = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                ids = json.loads(line)["hash_ids"]
            except (ValueError, KeyError) as e:
                sys.exit(f"{path}:{n}: not a Mooncake trace line ({e})")
            if ids:
                chains.append(ids)
    return chains


def prefix_hits(chain, cached):
    k = 0
    for h in chain:
        if h not in cached:
            break
        k += 1
    return k


def replay_ranked(chains, cap, rank):
    """Replays `chains` (any iterable: a generator may update the state `rank` reads before it
    yields each request) with eviction by rank(block, request_index), lowest first; ties go
    deeper-first, so a chain loses its tail before its head. Returns the prefix-hit ratio."""
    cached = {}  # block -> depth
    hit = total = 0
    for i, chain in enumerate(chains):
        hit += prefix_hits(chain, cached)
        total += len(chain)
        for d, h in enumerate(chain):
            cached[h] = d
        over = len(cached) - cap
        if over > 0:
            keys = list(cached)
            score = np.fromiter((rank(h, i) for h in keys), dtype=float, count=len(keys))
            depth = np.fromiter((cached[h] for h in keys), dtype=float, count=len(keys))
            for j in np.lexsort((-depth, score))[:over]:
                del cached[keys[j]]
    return hit / total


class Future:
    """Per-block next use and per-root request times, for the oracles and the fitted table."""

    def __init__(self, chains):
        self.next_use = [None] * len(chains)
        nxt = {}
        for i in range(len(chains) - 1, -1, -1):
            self.next_use[i] = [nxt.get(h, 1 << 60) for h in chains[i]]
            for h in chains[i]:
                nxt[h] = i
        self.root_of = {}
        self.times = collections.defaultdict(list)
        for i, chain in enumerate(chains):
            self.times[chain[0]].append(i)
            for h in chain:
                self.root_of.setdefault(h, chain[0])


def belady(chains, cap, fut):
    cached = {}  # block -> (next use, depth)
    hit = total = 0
    for i, chain in enumerate(chains):
        hit += prefix_hits(chain, cached)
        total += len(chain)
        for d, h in enumerate(chain):
            cached[h] = (fut.next_use[i][d], d)
        if len(cached) > cap:
            worst = sorted(cached.items(), key=lambda kv: (-kv[1][0], -kv[1][1]))
            for h, _ in worst[: len(cached) - cap]:
                del cached[h]
    return hit / total


def lru(chains, cap):
    last = {}

    def touched():
        for i, chain in enumerate(chains):
            for h in chain:
                last[h] = i
            yield chain

    return replay_ranked(touched(), cap, lambda h, i: last[h])


def arc(chains, cap):
    """ARC on blocks. A request touches its chain leaf-first, so within each list a parent is
    always more recent than its children."""
    t1, t2, b1, b2 = OrderedDict(), OrderedDict(), OrderedDict(), OrderedDict()
    p = 0.0
    hit = total = 0

    def replace(in_b2):
        # REPLACE(x, p); when the list it names is empty, the other one gives the victim (the
        # paper's lists are never both empty here, but T2 can be while |T1| <= p: without this
        # the replay raised KeyError: 'dictionary is empty').
        if t1 and (not t2 or len(t1) > p or (in_b2 and len(t1) == p)):
            h, _ = t1.popitem(last=False)
            b1[h] = True
        else:
            h, _ = t2.popitem(last=False)
            b2[h] = True

    for chain in chains:
        hit += prefix_hits(chain, _Union(t1, t2))
        total += len(chain)
        for h in reversed(chain):
            if h in t1:
                del t1[h]
                t2[h] = True
            elif h in t2:
                t2.move_to_end(h)
            elif h in b1:
                p = min(cap, p + max(len(b2) / len(b1), 1))
                del b1[h]
                if len(t1) + len(t2) >= cap:
                    replace(False)
                t2[h] = True
            elif h in b2:
                p = max(0.0, p - max(len(b1) / len(b2), 1))
                del b2[h]
                if len(t1) + len(t2) >= cap:
                    replace(True)
                t2[h] = True
            else:
                if len(t1) + len(b1) >= cap:
                    if len(t1) < cap:
                        b1.popitem(last=False)
                    if len(t1) + len(t2) >= cap:
                        replace(False)
                else:
                    n = len(t1) + len(t2) + len(b1) + len(b2)
                    if n >= cap:
                        if n >= 2 * cap and b2:
                            b2.popitem(last=False)
                        if len(t1) + len(t2) >= cap:
                            replace(False)
                t1[h] = True
    return hit / total


class _Union:
    def __init__(self, a, b):
        self.a, self.b = a, b

    def __contains__(self, h):
        return h in self.a or h in self.b


def oracle_alive(chains, cap, fut):
    last = {}  # dead blocks rank -1: they go first

    def touched():
        for i, chain in enumerate(chains):
            for d, h in enumerate(chain):
                last[h] = i if fut.next_use[i][d] < (1 << 60) else -1
            yield chain

    return replay_ranked(touched(), cap, lambda h, i: last[h])


def oracle_rate(chains, cap, fut):
    def rank(h, i):
        v = fut.times[fut.root_of[h]]
        j = bisect.bisect_right(v, i)
        remaining = len(v) - j
        return remaining / (v[-1] - i + 1) if remaining else 0.0

    return replay_ranked(chains, cap, rank)


# Features an online policy can observe about a block's chain root at request index `now`.
RECENCY_EDGES = [0, 5, 10, 20, 40, 80, 160, 320, 640, 1280, 1 << 62]
GAP_EDGES = [0, 10, 30, 100, 300, 1000, 1 << 62]
LENGTH_EDGES = [0, 3, 8, 20, 50, 1 << 62]


def _bucket(edges, x):
    return bisect.bisect_right(edges, x) - 1


def _features(times, j, length, now):
    uses = min(j + 1, 8) - 1
    gap = _bucket(GAP_EDGES, times[j] - times[j - 1]) if j else len(GAP_EDGES) - 1
    return (uses, _bucket(RECENCY_EDGES, now - times[j]), gap, _bucket(LENGTH_EDGES, length))


def fitted(chains, cap, fut, horizons=(50, 150, 300)):
    n = len(chains)
    shape = (8, len(RECENCY_EDGES) - 1, len(GAP_EDGES), len(LENGTH_EDGES) - 1)
    length = {r: len(chains[v[0]]) for r, v in fut.times.items()}
    best = 0.0
    for horizon in horizons:
        seen = np.zeros(shape)
        positive = np.zeros(shape)
        for root, v in fut.times.items():
            for j, t in enumerate(v):
                end = v[j + 1] if j + 1 < len(v) else n
                for now in range(t, end, 5):
                    f = _features(v, j, length[root], now)
                    seen[f] += 1
                    if j + 1 < len(v) and v[j + 1] - now <= horizon:
                        positive[f] += 1
        p_next = (positive + 0.01) / (seen + 1)
        uses = collections.Counter()

        def rank(h, i):
            root = fut.root_of[h]
            v = fut.times[root]
            return p_next[_features(v, uses[root] - 1, length[root], i)]

        def counted():
            for chain in chains:
                uses[chain[0]] += 1
                yield chain

        best = max(best, replay_ranked(counted(), cap, rank))
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trace", default=DEFAULT_TRACE)
    ap.add_argument("--fractions", default="0.05,0.10",
                    help="capacities as fractions of the trace's unique blocks")
    ap.add_argument("--json", action="store_true", help="one JSON object per capacity")
    args = ap.parse_args()
    chains = read_chains(args.trace)
    if not chains:
        sys.exit(f"{args.trace}: no requests")
    unique = len({h for c in chains for h in c})
    fut = Future(chains)
    for frac in (float(x) for x in args.fractions.split(",")):
        cap = max(1, int(unique * frac))
        row = {"trace": os.path.basename(args.trace), "capacity_blocks": cap,
               "capacity_fraction": frac}
        row["lru"] = lru(chains, cap)
        row["arc"] = arc(chains, cap)
        row["fitted"] = fitted(chains, cap, fut)
        row["oracle_alive"] = oracle_alive(chains, cap, fut)
        row["oracle_rate"] = oracle_rate(chains, cap, fut)
        row["belady"] = belady(chains, cap, fut)
        if args.json:
            print(json.dumps(row), flush=True)
        else:
            b = row["belady"]
            print(f"capacity {cap} ({frac:.0%}):", flush=True)
            for k in ("lru", "arc", "fitted", "oracle_alive", "oracle_rate", "belady"):
                print(f"  {k:13s} {row[k]:.3f}  ({row[k] / b:.2f} of Belady)", flush=True)


if __name__ == "__main__":
    main()
