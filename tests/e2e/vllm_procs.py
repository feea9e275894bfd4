"""Processes for the vLLM end-to-end tests: ``stator.vllm`` workers on the real CPU engine
(``.venv-vllm``, built by ``scripts/bootstrap-vllm.sh``) and ``stator.frontend``.

Each process runs in its own session with stdout and stderr in a log file under the test's tmp
dir; ``stop()`` sends SIGTERM, waits, then SIGKILLs the process group by its id. vLLM runs with
one thread (``OMP_NUM_THREADS=1``, no core pinning) and its engine core in one child process
(``VLLM_ENABLE_V1_MULTIPROCESSING=0`` + ``--distributed-executor-backend uni``), to be light on
a small CI machine.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
VLLM_PYTHON = REPO_ROOT / ".venv-vllm" / "bin" / "python"
READY_TIMEOUT_S = 600.0
"""A cold vLLM start on a loaded 2-core machine takes minutes (imports dominate)."""

ENGINE_FLAGS = (
    "--dtype",
    "float32",
    "--enforce-eager",
    "--max-model-len",
    "1024",
    "--block-size",
    "32",
    "--enable-prefix-caching",
    "--distributed-executor-backend",
    "uni",
)
"""vLLM's own flags, passed through by ``stator.vllm`` (the CPU backend needs block size % 32)."""

requires_vllm = pytest.mark.skipif(
    not VLLM_PYTHON.exists() and os.environ.get("STATOR_REQUIRE_VLLM") != "1",
    reason=".venv-vllm is missing: run scripts/bootstrap-vllm.sh (or scripts/bootstrap.sh "
    "--with-vllm) to install the vLLM CPU engine",
)


def vllm_env() -> dict[str, str]:
    """The environment of a CPU vLLM worker: small, single-threaded, unpinned."""
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1",
        VLLM_CPU_OMP_THREADS_BIND="nobind",
        VLLM_CPU_KVCACHE_SPACE="1",
        VLLM_ENABLE_V1_MULTIPROCESSING="0",
        VLLM_LOGGING_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    return env


class Proc:
    """A child process whose output goes to ``log``."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        with log.open("wb") as out:
            self.popen = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def wait_for(self, pattern: str, timeout_s: float) -> re.Match[str]:
        """The first match of ``pattern`` in the log; fails the test on timeout or exit."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            match = regex.search(self.log.read_text(errors="replace"))
            if match:
                return match
            if self.popen.poll() is not None:
                break
            time.sleep(0.5)
        tail = self.log.read_text(errors="replace")[-4000:]
        pytest.fail(f"pid {self.pid}: no {pattern!r} (exit {self.popen.poll()}); log tail:\n{tail}")

    def stop(self, grace_s: float = 30.0) -> None:
        """SIGTERM, then SIGKILL the process group (vLLM's engine core too) by its id."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(grace_s)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)


@dataclass
class Worker:
    """A running ``stator.vllm`` worker."""

    proc: Proc
    instance_id: int
    endpoint: str
    metrics_url: str


def start_worker(
    log_dir: Path, discovery_dir: Path, model_dir: Path, name: str, *extra: str
) -> Worker:
    """Start a worker for ``model_dir`` served as ``name``; wait until it serves."""
    argv = [
        str(VLLM_PYTHON),
        "-m",
        "stator.vllm",
        "--model",
        str(model_dir),
        "--served-model-name",
        name,
        "--discovery-dir",
        str(discovery_dir),
        "--metrics-port",
        "0",
        "--canary-wait-time",
        "2",
        *ENGINE_FLAGS,
        *extra,
    ]
    proc = Proc(argv, log_dir / f"worker-{name}-{time.monotonic_ns()}.log", vllm_env())
    ready = proc.wait_for(
        r"stator\.vllm ready in [\d.]+ s: instance (\d+) serving (\S+)", READY_TIMEOUT_S
    )
    metrics = proc.wait_for(r"stator\.vllm metrics: (http://\S+)/metrics", 10.0)
    return Worker(proc, int(ready.group(1)), ready.group(2), metrics.group(1))


def start_frontend(log_dir: Path, discovery_dir: Path, *extra: str) -> tuple[Proc, str]:
    """Start ``stator.frontend`` on a free port; return it and its base URL."""
    argv = [
        sys.executable,
        "-m",
        "stator.frontend",
        "--http-host",
        "127.0.0.1",
        "--http-port",
        "0",
        "--discovery-dir",
        str(discovery_dir),
        *extra,
    ]
    proc = Proc(argv, log_dir / "frontend.log")
    match = proc.wait_for(r"stator frontend listening on (http://\S+)", 60.0)
    return proc, match.group(1)


def metric_value(text: str, name: str, **labels: str) -> float:
    """The value of the Prometheus sample ``name`` whose labels include ``labels`` (sum)."""
    total, found = 0.0, False
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
            found = True
    if not found:
        raise KeyError(f"no sample {name} {labels}")
    return total
