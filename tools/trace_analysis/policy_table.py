#!/usr/bin/env python3
"""Each replayed policy as a fraction of the best classic policy, row by row, and the summary
issue 17 judges a change by.

Reads the JSON lines of `strata bench trace --json` (any mix of traces, capacities and
policies; the classic policies must be among them) and prints, for every (trace, capacity) row,
each non-classic policy's hit ratio divided by the best of LRU, ARC, S3-FIFO, W-TinyLFU and GDSF
on that row (named where the policy is below it), then per group of rows (the shared trace and
its `--variants`; the `--held-out` generator seeds) and per policy: rows at or above the best
(strictly, and at three decimals, as docs/store.md's tables round), the mean and the worst.

Usage:
  strata bench trace --json --variants --held-out \\
      --policy learned,lru,arc,s3fifo,wtinylfu,gdsf > rows.jsonl
  tools/trace_analysis/policy_table.py rows.jsonl [more.jsonl ...]   (or on stdin)
A second run with `--policy learned --learned-leader arc` can be appended: its rows name the
policy `learned/arc` and are compared with the same classic baselines.

  tools/trace_analysis/policy_table.py --below learned rows.jsonl forced.jsonl
also lists, after the summary, every row where `learned` is below the best classic policy (strictly
or at three decimals): the winner and its hit ratio, the runner-up as a fraction of the winner,
`learned`'s fraction, and each expert forced to lead (`learned/<expert>` rows from runs with
`--learned-leader`) as a fraction of the winner, best first: which classic policy wins where the
default trails, and whether any of its experts reaches it (issue 17's twelfth pass).
"""
import collections
import json
import sys

CLASSIC = ("lru", "arc", "s3fifo", "wtinylfu", "gdsf")
HELD_OUT = ("synthetic_conversation_7", "synthetic_conversation_11", "synthetic_agent_5",
            "synthetic_coding_9", "synthetic_coding_13")


def read_rows(files):
    rows = collections.OrderedDict()  # (trace, capacity) -> {policy: hit ratio}
    for f in files:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            j = json.loads(line)
            if "capacity_blocks" not in j or "policy" not in j:
                continue  # a two-tier line, or another bench
            rows.setdefault((j["trace"], j["capacity_blocks"]), {})[j["policy"]] = j["hit_ratio"]
    return rows


def print_below(rows, policy):
    print(f"\nrows where {policy} is below the best classic policy:")
    for (trace, capacity), got in rows.items():
        if policy not in got:
            continue
        ranked = sorted(CLASSIC, key=lambda p: -got[p])
        best = got[ranked[0]]
        if best <= 0:
            continue
        q = got[policy] / best
        if q >= 1 and round(q, 3) >= 1:
            continue
        forced = {p.split("/", 1)[1]: got[p] / best for p in got if p.startswith(policy + "/")}
        experts = ", ".join(f"{e} {f:.3f}" for e, f in sorted(forced.items(), key=lambda x: -x[1]))
        print(f"{trace:28s} {capacity:>6}  {ranked[0]} {best:.4f} ({ranked[1]} "
              f"{got[ranked[1]] / best:.3f})  {policy} {q:.3f}" +
              (f"  forced: {experts}" if experts else ""))


def main():
    args = sys.argv[1:]
    below = None
    if len(args) >= 2 and args[0] == "--below":
        below, args = args[1], args[2:]
    files = [open(p) for p in args] or [sys.stdin]
    rows = read_rows(files)
    groups = collections.OrderedDict()  # (group, policy) -> [fraction]
    for (trace, capacity), got in rows.items():
        classic = {p: got[p] for p in CLASSIC if p in got}
        if len(classic) < len(CLASSIC):
            sys.exit(f"{trace} at {capacity} blocks: the classic policies "
                     f"{', '.join(p for p in CLASSIC if p not in got)} are missing")
        best = max(classic, key=classic.get)
        cells = []
        for policy, hit in got.items():
            if policy in CLASSIC or policy in ("belady", "infinite"):
                continue
            q = hit / classic[best] if classic[best] > 0 else 1.0
            group = "held-out" if trace in HELD_OUT else "variants"
            groups.setdefault((group, policy), []).append((q, f"{trace} {capacity}"))
            cells.append(f"{policy} {q:.3f}" + ("" if round(q, 3) >= 1 else f" ({best})"))
        print(f"{trace:28s} {capacity:>6}  " + "  ".join(cells))
    print()
    for (group, policy), qs in groups.items():
        at = sum(q >= 1 for q, _ in qs)
        at3 = sum(round(q, 3) >= 1 for q, _ in qs)
        worst = min(qs)
        print(f"{group:9s} {policy:18s} at/above {at} ({at3} at 3 dp) of {len(qs)}, "
              f"mean {sum(q for q, _ in qs) / len(qs):.4f}, worst {worst[0]:.3f} ({worst[1]})")
    if below:
        print_below(rows, below)


if __name__ == "__main__":
    main()
