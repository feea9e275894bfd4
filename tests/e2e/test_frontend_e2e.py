"""``python -m stator.frontend`` and engine processes over ``file`` discovery, checked only
through HTTP. Every process is killed by PID in a ``finally``; logs go under ``tmp_path``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from tests.frontend_fakes import REPLY

REPO_ROOT = Path(__file__).resolve().parents[2]
MESSAGES = [{"role": "user", "content": "hello"}]


class Proc:
    """A child process with line-wise stdout; stderr goes to a log file."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc = proc
        self.log = log

    async def expect(self, prefix: str, timeout_s: float = 30.0) -> str:
        """The next stdout line starting with ``prefix`` (fails with the child's stderr)."""
        assert self.proc.stdout is not None
        try:
            async with asyncio.timeout(timeout_s):
                while line := (await self.proc.stdout.readline()).decode():
                    if line.startswith(prefix):
                        return line.strip()
        except TimeoutError:
            pass
        pytest.fail(f"no {prefix!r} line from {self.proc.pid}:\n{self.log.read_text()}")

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, sig)


Spawn = Callable[..., Awaitable[Proc]]


@pytest.fixture
async def spawn(tmp_path: Path) -> AsyncIterator[Spawn]:
    procs: list[Proc] = []
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}

    async def start(name: str, *args: str) -> Proc:
        log = tmp_path / f"{name}-{len(procs)}.log"
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *args,
            cwd=REPO_ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=log.open("wb"),
        )
        procs.append(Proc(proc, log))
        return procs[-1]

    try:
        yield start
    finally:
        for p in procs:
            p.signal(signal.SIGKILL)
            await p.proc.wait()


async def start_engine(spawn: Spawn, discovery: Path, model_dir: Path, name: str) -> Proc:
    engine = await spawn(
        f"engine-{name}",
        "-m",
        "tests.e2e.frontend_engine",
        "--discovery-dir",
        str(discovery),
        "--model-dir",
        str(model_dir),
        "--name",
        name,
        "--ttl",
        "2",
    )
    await engine.expect("READY")
    return engine


async def until(check: Callable[[], Awaitable[bool]], timeout_s: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


async def test_frontend_and_engines_as_processes(
    spawn: Spawn, tmp_path: Path, tiny_model_dir: Path
) -> None:
    discovery = tmp_path / "discovery"
    frontend = await spawn(
        "frontend",
        "-m",
        "stator.frontend",
        "--http-host",
        "127.0.0.1",
        "--http-port",
        "0",
        "--discovery-backend",
        "file",
        "--discovery-dir",
        str(discovery),
        "--log-level",
        "warning",
    )
    url = (await frontend.expect("stator frontend listening on")).rsplit(" ", 1)[-1]
    engine_a = await start_engine(spawn, discovery, tiny_model_dir, "tiny")
    await start_engine(spawn, discovery, tiny_model_dir, "other")

    async with httpx.AsyncClient(base_url=url, timeout=10.0) as client:

        async def models() -> list[str]:
            return sorted(m["id"] for m in (await client.get("/v1/models")).json()["data"])

        async def both_served() -> bool:
            return await models() == ["other", "tiny"]

        await until(both_served)
        body = {"model": "tiny", "messages": MESSAGES}
        response = await client.post("/v1/chat/completions", json=body)
        assert response.json()["choices"][0]["message"]["content"] == REPLY
        stream = await client.post(
            "/v1/completions",
            json={"model": "other", "prompt": "x", "stream": True, "max_tokens": 4},
        )
        events = [e for e in stream.text.split("\n\n") if e]
        assert events[-1] == "data: [DONE]"
        assert json.loads(events[-2][6:])["choices"][0]["finish_reason"] == "length"
        bad = await client.post("/v1/chat/completions", content=b"{oops")
        assert bad.status_code == 400 and "error" in bad.json()
        health = (await client.get("/health")).json()
        assert set(health["models"]) == {"tiny", "other"}
        metrics = (await client.get("/metrics")).text
        assert 'stator_frontend_requests_total{endpoint="chat_completions"' in metrics

        engine_a.signal(signal.SIGKILL)  # its registrations expire with its lease

        async def tiny_gone() -> bool:
            return await models() == ["other"]

        await until(tiny_gone)
        gone = await client.post("/v1/chat/completions", json=body)
        assert gone.status_code == 404

    frontend.signal(signal.SIGTERM)
    assert await asyncio.wait_for(frontend.proc.wait(), 15) == 0
