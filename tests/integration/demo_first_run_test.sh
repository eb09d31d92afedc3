#!/usr/bin/env bash
# The README's first line, as a new operator runs it: `strata demo` with no flags, from a fresh
# directory, on its first run. Its output is piped (so it must stream whole lines as it goes), it
# must serve prefix hits from the cache (a non-zero hit ratio, every byte verified), print LRU and
# Belady beside it, say where blocks were served from, report a total time within 10% of the wall
# time measured here, and remove the ./strata-data it created.
# Usage: demo_first_run_test.sh STRATA_CLI
set -euo pipefail
cli=$1
work=$(mktemp -d "${TMPDIR:-/tmp}/strata-demo-first-run.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"
out="$work/out.txt"
start=$(date +%s.%N)
# Each line is stamped with the second it arrived, to check that output streams.
"$cli" demo | while IFS= read -r line; do printf '%s %s\n' "$(date +%s.%N)" "$line"; done > "$out"
rc=${PIPESTATUS[0]}
end=$(date +%s.%N)
cut -d' ' -f2- "$out"
[[ $rc -eq 0 ]] || { echo "FAIL: strata demo exited $rc"; exit 1; }
[[ ! -e "$work/strata-data" ]] || { echo "FAIL: ./strata-data left behind"; exit 1; }
/usr/bin/python3 - "$out" "$start" "$end" <<'PY'
import re, sys
path, start, end = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
stamps, lines = [], []
for l in open(path):
    t, _, text = l.rstrip("\n").partition(" ")
    stamps.append(float(t))
    lines.append(text)
text = "\n".join(lines)
def grab(pattern):
    m = re.search(pattern, text)
    assert m, f"output lacks {pattern!r}"
    return m
wall = end - start
hit = float(grab(r"prefix hit ratio ([0-9.]+): (\d+) blocks loaded").group(1))
mism = int(grab(r"every byte verified \((\d+) mismatches\)").group(1))
lru, belady = (float(x) for x in grab(r"LRU ([0-9.]+), offline optimum \(Belady\) ([0-9.]+)").groups())
total = float(grab(r"time: ([0-9.]+) s in all since process start").group(1))
grab(r"served from \(daemon Stats\): .*host \d+ blocks")
grab(r"est\. time to first token saved [0-9.]+ s .* at \d+k tokens/s prefill")
progress = [i for i, l in enumerate(lines) if re.search(r"\d+/\d+ requests, prefix hit ratio", l)]
print(f"first run: hit ratio {hit:.3f} (LRU {lru:.3f}, Belady {belady:.3f}); summary {total:.2f} s, "
      f"wall {wall:.2f} s; {len(progress)} progress lines")
assert hit > 0, "no prefix hits on the first run"
assert mism == 0, "loaded bytes differ from what was stored"
assert 0 < belady <= 1 and belady >= lru, "Belady must bound LRU"
assert abs(total - wall) <= 0.10 * wall, f"summary says {total:.2f} s, wall clock {wall:.2f} s"
# Piped output streams: several progress lines, arriving over the run, not all at the end.
assert len(progress) >= 5, "progress lines missing when piped"
first, last = stamps[progress[0]], stamps[progress[-1]]
assert last - first >= 0.5 * (stamps[-1] - stamps[0]), "progress lines arrived in a burst"
# No silent gap longer than 10 s between lines.
gaps = [b - a for a, b in zip([start] + stamps, stamps + [end])]
assert max(gaps) < 10, f"a {max(gaps):.1f} s silence in the output"
PY
echo "PASS"
