#!/usr/bin/env bash
# Live trace replay against `stator serve` (issue 6): once per router mode, plus the offline
# `stator replay` of the same settings for comparison.
# Usage: scripts/bench-live-replay.sh OUT_DIR [MAX_REQUESTS] [MODES...]
# Env: TRACE (default ../shared/traces/mooncake_conversation_trace.jsonl), PORT (8400),
#      WORKERS (4), SPEEDUP (10), BLOCK (64).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/bench-live-replay.sh OUT_DIR [MAX_REQUESTS] [MODES...]}
max=${2:-1000}
shift $(( $# > 1 ? 2 : 1 ))
modes=("${@:-kv round-robin}")
read -r -a modes <<<"${modes[*]}"
trace=${TRACE:-../shared/traces/mooncake_conversation_trace.jsonl}
port=${PORT:-8400} workers=${WORKERS:-4} speedup=${SPEEDUP:-10} block=${BLOCK:-64}
mkdir -p "$out"
for mode in "${modes[@]}"; do
  .venv/bin/stator serve --num-workers "$workers" --http-port "$port" --router-mode "$mode" \
    --speedup-ratio "$speedup" --block-size "$block" >"$out/serve-$mode.log" 2>&1 &
  serve_pid=$!
  trap 'kill -INT $serve_pid 2>/dev/null; wait $serve_pid' EXIT
  until grep -q "\[serve\] ready" "$out/serve-$mode.log"; do
    kill -0 $serve_pid 2>/dev/null || { cat "$out/serve-$mode.log"; exit 1; }
    sleep 0.5
  done
  .venv/bin/stator bench replay --url "http://127.0.0.1:$port" --trace "$trace" \
    --trace-block-size "$block" --max-requests "$max" --arrival-speedup-ratio "$speedup" \
    --no-progress --report-json "$out/live-$mode.json" | tee "$out/live-$mode.txt"
  kill -INT $serve_pid; wait $serve_pid || true
  trap - EXIT
  .venv/bin/stator replay --trace "$trace" --num-workers "$workers" --router-mode "$mode" \
    --trace-block-size "$block" --max-requests "$max" --arrival-speedup-ratio "$speedup" \
    --speedup-ratio "$speedup" --block-size "$block" --report-json "$out/offline-$mode.json" \
    >/dev/null
  .venv/bin/stator bench replay --compare "$out/offline-$mode.json" "$out/live-$mode.json"
done
