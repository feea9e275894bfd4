#!/usr/bin/env bash
# The same live replay as scripts/bench-live-replay.sh, against NVIDIA Dynamo 1.6.1's own frontend
# and mocker (../shared/anchors/README.md), for side-by-side numbers.
# Usage: scripts/bench-dynamo-live.sh OUT_DIR [MAX_REQUESTS] [MODES...]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/bench-dynamo-live.sh OUT_DIR [MAX_REQUESTS] [MODES...]}
max=${2:-1000}
shift $(( $# > 1 ? 2 : 1 ))
modes=("${@:-kv round-robin}")
read -r -a modes <<<"${modes[*]}"
trace=${TRACE:-../shared/traces/mooncake_conversation_trace.jsonl}
port=${PORT:-8500} workers=${WORKERS:-4} speedup=${SPEEDUP:-10} block=${BLOCK:-64}
venv=$(../shared/anchors/dynamo-venv.sh)
model=$(.venv/bin/python -c 'from stator.testing.tiny_model import ensure_tiny_model; print(ensure_tiny_model())')
mkdir -p "$out"
for mode in "${modes[@]}"; do
  DYN_FILE_KV=$(mktemp -d)
  export DYN_FILE_KV HF_HUB_OFFLINE=1 DYN_LOG=warn DYN_EVENT_PLANE_HOST=127.0.0.1 \
    DYN_TCP_RPC_HOST=127.0.0.1 DYN_TCP_RESPONSE_STREAM_HOST=127.0.0.1 DYN_SYSTEM_HOST=127.0.0.1
  "$venv/bin/python" -m dynamo.mocker --model-path "$model" --model-name stator-tiny-llama \
    --num-workers "$workers" --block-size "$block" --speedup-ratio "$speedup" \
    --discovery-backend file --request-plane tcp >"$out/dynamo-mocker-$mode.log" 2>&1 &
  mocker=$!
  "$venv/bin/python" -m dynamo.frontend --http-host 127.0.0.1 --http-port "$port" \
    --router-mode "$mode" --kv-cache-block-size "$block" --discovery-backend file \
    --request-plane tcp >"$out/dynamo-frontend-$mode.log" 2>&1 &
  frontend=$!
  trap 'kill $mocker $frontend 2>/dev/null; wait' EXIT
  until curl -sf "http://127.0.0.1:$port/v1/models" | grep -q stator-tiny-llama; do sleep 0.5; done
  curl -sf "http://127.0.0.1:$port/v1/completions" -H 'content-type: application/json' \
    -d '{"model":"stator-tiny-llama","prompt":"hi","max_tokens":1}' >/dev/null
  .venv/bin/stator bench replay --url "http://127.0.0.1:$port" --model stator-tiny-llama \
    --trace "$trace" --trace-block-size "$block" --max-requests "$max" \
    --arrival-speedup-ratio "$speedup" --no-progress --report-json "$out/dynamo-$mode.json" \
    | tee "$out/dynamo-$mode.txt"
  kill $mocker $frontend; wait || true
  trap - EXIT
  rm -rf "$DYN_FILE_KV"
done
