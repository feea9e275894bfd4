"""``stator serve`` as a user runs it: one command, real child processes, HTTP only.

Each test starts ``python -m stator.cli serve`` with its logs under ``tmp_path``, waits for the
``[serve] ready:`` line, talks to it with the ``openai`` SDK, and stops it with SIGINT (Ctrl-C)
or kills it by PID in a ``finally``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow
READY_TIMEOUT_S = 90.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Serve:
    """A running ``stator serve``; ``log`` holds its merged output."""

    def __init__(self, argv: list[str], log: Path, cache_dir: Path) -> None:
        self.log = log
        env = {**os.environ, "STATOR_CACHE_DIR": str(cache_dir)}
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "stator.cli", "serve", *argv],
                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT,
            )  # fmt: skip

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self) -> str:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            match = re.search(r"\[serve\] ready: (\S+)", self.text())
            if match:
                return match.group(1)
            if self.proc.poll() is not None:
                pytest.fail(f"serve exited {self.proc.returncode}:\n{self.text()[-3000:]}")
            time.sleep(0.1)
        pytest.fail(f"serve not ready in {READY_TIMEOUT_S} s:\n{self.text()[-3000:]}")

    def child_pids(self) -> list[int]:
        return [int(p) for p in re.findall(r"\[serve\] started \S+ \(pid (\d+)\)", self.text())]

    def kill(self) -> None:
        for pid in [self.proc.pid, *self.child_pids()]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        self.proc.wait()


@pytest.fixture
def serve(tmp_path: Path, tiny_model_dir: Path) -> Iterator[type]:
    started: list[Serve] = []
    cache_dir = tiny_model_dir.parent

    class Factory:
        @staticmethod
        def start(*argv: str) -> Serve:
            s = Serve(list(argv), tmp_path / f"serve-{len(started)}.log", cache_dir)
            started.append(s)
            return s

    yield Factory
    for s in started:
        s.kill()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_serve_defaults_answer_openai_sdk_and_ctrl_c_leaves_nothing(
    serve: type, tmp_path: Path
) -> None:
    port = _free_port()
    s = serve.start("--http-port", str(port), "--discovery-dir", str(tmp_path / "disc"))
    url = s.wait_ready()
    assert url == f"http://127.0.0.1:{port}/v1"
    client = openai.OpenAI(base_url=url, api_key="none")
    model = client.models.list().data[0].id
    assert model == "stator-tiny-llama"
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Hello"}], max_tokens=8
    )
    assert reply.choices[0].message.role == "assistant"
    assert reply.usage is not None and reply.usage.completion_tokens >= 1
    children = s.child_pids()
    assert len(children) == 2  # one mocker process (2 workers) + the frontend
    s.proc.send_signal(signal.SIGINT)
    assert s.proc.wait(timeout=30) == 0
    assert "[serve] stopped" in s.text()
    for pid in children:
        assert not _alive(pid), f"child {pid} survived Ctrl-C"
    leftovers = [p for p in (tmp_path / "disc").rglob("*") if "instances" in str(p) and p.is_file()]
    assert leftovers == []


def test_graph_file_with_two_models_serves_both(
    serve: type, tmp_path: Path, tiny_model_dir: Path, tiny_model_dir_b: Path
) -> None:
    graph = tmp_path / "graph.yaml"
    graph.write_text(
        "components:\n"
        "  - {name: frontend, kind: frontend, args: {router-mode: kv}}\n"
        f"  - {{name: alpha, kind: mocker, args: {{model-path: '{tiny_model_dir}',"
        " model-name: alpha, num-workers: 1, speedup-ratio: 100}}\n"
        f"  - {{name: beta, kind: mocker, args: {{model-path: '{tiny_model_dir_b}',"
        " model-name: beta, num-workers: 1, speedup-ratio: 100}}\n"
    )
    port = _free_port()
    s = serve.start("-f", str(graph), "--http-port", str(port))
    client = openai.OpenAI(base_url=s.wait_ready(), api_key="none")
    assert sorted(m.id for m in client.models.list().data) == ["alpha", "beta"]
    for model in ("alpha", "beta"):
        out = client.completions.create(model=model, prompt="x", max_tokens=3)
        assert out.model == model and out.choices[0].finish_reason in ("length", "stop")
    assert "[alpha]" in s.text() and "[beta]" in s.text()


def test_bad_flag_and_bad_graph_fail_at_start(serve: type, tmp_path: Path) -> None:
    s = serve.start("--num-workers", "0")
    assert s.proc.wait(timeout=30) == 2
    assert "--num-workers" in s.text()
    bad = tmp_path / "bad.yaml"
    bad.write_text("components:\n  - {kind: mocker}\n")
    s = serve.start("-f", str(bad))
    assert s.proc.wait(timeout=30) == 2
    assert "exactly one frontend" in s.text()


def test_bad_engine_flag_fails_before_anything_starts(serve: type) -> None:
    s = serve.start("--http-port", str(_free_port()), "--block-size", "-3")
    assert s.proc.wait(timeout=60) == 2
    assert "--block-size" in s.text()
    assert "[serve] started" not in s.text()


def test_dead_component_is_reported_and_everything_stops(serve: type) -> None:
    s = serve.start("--http-port", str(_free_port()), "--num-workers", "1")
    s.wait_ready()
    mocker_pid = int(re.findall(r"\[serve\] started mocker \(pid (\d+)\)", s.text())[0])
    os.kill(mocker_pid, signal.SIGKILL)
    assert s.proc.wait(timeout=60) == 1
    assert "component mocker exited with code -9" in s.text()
    for pid in s.child_pids():
        assert not _alive(pid)
