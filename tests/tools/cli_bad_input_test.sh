#!/usr/bin/env bash
# The `strata` CLI on bad input: every case exits with the expected code (2: usage, 1: a command
# failed) and a message naming the source, and none ends in std::terminate (exit 134, SIGABRT) or
# any other signal. Usage: cli_bad_input_test.sh STRATA_BINARY
set -u
cli="$1"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0

# expect CODE PATTERN -- ARGS...: runs the CLI, checks its exit code and that stderr matches.
expect() {
  local want="$1" pattern="$2"
  shift 3
  local err="$work/stderr"
  "$cli" "$@" >/dev/null 2>"$err" </dev/null
  local got=$?
  if [ "$got" -ne "$want" ] || ! grep -qE -- "$pattern" "$err"; then
    echo "FAIL: strata $* -> exit $got (want $want), stderr:"
    sed 's/^/    /' "$err"
    failures=$((failures + 1))
  else
    echo "ok:   strata $* -> exit $got"
  fi
}

mkdir -p "$work/dir"
printf '{a: 1}: x\n' > "$work/mapkey.yaml"
printf '1 2 x 4\n' > "$work/bad_tokens.txt"

expect 2 "is a directory"          -- keys --tokens "$work/dir"
expect 2 "--tokens '.*missing.txt'" -- keys --tokens "$work/missing.txt"
expect 1 "line 1 column 5"         -- keys --tokens "$work/bad_tokens.txt"
expect 2 "is a directory"          -- serve --config "$work/dir" --socket "$work/s/s.sock"
expect 2 "config '"                -- serve --config "$work/missing.yaml" --socket "$work/s/s.sock"
expect 2 "config '.*mapkey.yaml"   -- serve --config "$work/mapkey.yaml" --socket "$work/s/s.sock"
expect 2 "host_pool|--host-pool"   -- serve --host-pool 1000T --no-disk --socket "$work/s/s.sock"
expect 2 "--max-clients-per-uid"   -- serve --max-clients-per-uid 0 --no-disk --socket "$work/s/s.sock"
expect 2 "--idle-timeout-ms"       -- serve --idle-timeout-ms -5 --no-disk --socket "$work/s/s.sock"
expect 2 "--allow-uid"             -- serve --allow-uid nobody-here --no-disk --socket "$work/s/s.sock"
expect 1 "node_id: .\.\./\.\./x"   -- serve --membership static --static-dir "$work/st" --node-id ../../x --no-disk --socket "$work/s/s.sock"
expect 2 "--max-pin-ms"            -- serve --max-pin-ms 0 --no-disk --socket "$work/s/s.sock"
expect 2 "--requests must be a positive" -- demo --requests -1
expect 2 "--requests must be a positive" -- demo --requests 0
expect 2 "subcommand is required|not-a-command" -- not-a-command
expect 2 "no-such-flag"            -- keys --tokens - --no-such-flag
expect 2 "--block-size"            -- keys --tokens - --block-size notanumber

if [ "$failures" -ne 0 ]; then
  echo "$failures case(s) failed"
  exit 1
fi
echo "all cases passed"
