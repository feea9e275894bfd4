"""KV-aware routing end to end: ``python -m stator.frontend`` (one per router mode),
``python -m stator.router`` and ``python -m stator.mocker`` as real processes over ``file``
discovery in a tmp dir. Assertions go through HTTP only: response fields (``nvext.worker_id``),
``/health``, ``/metrics`` and ``/debug/router``. Every child is killed by PID at the end; its
output goes under the tmp dir.

Two deployments, each started once per module:

- "shared": one mocker process with two workers, one frontend per router mode (kv,
  round-robin, random, power-of-two, least-loaded, direct) and one frontend that sends through a
  standalone router process. The prefix test runs first, on still-empty caches.
- "saturated": one worker with 64 KV blocks behind a frontend whose busy threshold is half of
  them, so it answers 503 while saturated.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

BLOCK = 16
READY_TIMEOUT_S = 60.0
MODES = ("kv", "round-robin", "random", "power-of-two", "least-loaded", "direct")
REMOTE = "remote"
NUM_CONCURRENT = 100

pytestmark = pytest.mark.slow


# -- processes --------------------------------------------------------------------------------


@dataclass
class Deployment:
    """Child processes and where their output goes; frontends' URLs by name."""

    root: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    urls: dict[str, str] = field(default_factory=dict)

    def start(self, name: str, *argv: str) -> Path:
        """Start ``python -m ...argv``; returns the file its stdout goes to."""
        out, err = self.root / f"{name}.out", self.root / f"{name}.err"
        with out.open("wb") as out_f, err.open("wb") as err_f:
            proc = subprocess.Popen([sys.executable, "-m", *argv], stdout=out_f, stderr=err_f)
        self.procs.append(proc)
        return out

    def wait_line(self, out: Path, prefix: str) -> str:
        """The first stdout line starting with ``prefix`` (fails with every child's stderr
        when a child exits or the line does not come)."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            for line in out.read_text().splitlines():
                if line.startswith(prefix):
                    return line
            if any(p.poll() is not None for p in self.procs):
                break
            time.sleep(0.05)
        logs = "\n".join(f"{p.name}:\n{p.read_text()}" for p in sorted(self.root.glob("*.err")))
        pytest.fail(f"no {prefix!r} line in {out.name}:\n{logs}")

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait()


def common_flags(discovery: Path) -> list[str]:
    return ["--discovery-backend", "file", "--discovery-dir", str(discovery), "--lease-ttl", "2"]


def start_mocker(d: Deployment, discovery: Path, model_dir: Path, *flags: str) -> list[int]:
    out = d.start(
        "mocker", "stator.mocker", "--model-path", str(model_dir), "--model-name", "tiny",
        "--block-size", str(BLOCK), *common_flags(discovery), *flags,
    )  # fmt: skip
    line = d.wait_line(out, "mocker ready:")
    return [int(x) for x in line.split(" instances ", 1)[1].split()]


def start_frontend(d: Deployment, name: str, discovery: Path, *flags: str) -> Path:
    """Start a frontend; its stdout file (see ``frontend_url``)."""
    return d.start(
        f"frontend-{name}", "stator.frontend", "--http-host", "127.0.0.1", "--http-port", "0",
        "--log-level", "warning", *common_flags(discovery), *flags,
    )  # fmt: skip


def frontend_url(d: Deployment, out: Path) -> str:
    return d.wait_line(out, "stator frontend listening on").rsplit(" ", 1)[-1]


@pytest.fixture(scope="module")
def shared(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path
) -> Iterator[tuple[Deployment, list[int]]]:
    root = tmp_path_factory.mktemp("kv-shared")
    discovery = root / "discovery"
    d = Deployment(root)
    try:
        workers = start_mocker(
            d, discovery, tiny_model_dir, "--num-workers", "2", "--speedup-ratio", "20",
            "--num-gpu-blocks-override", "2048",
        )  # fmt: skip
        outs = {mode: start_frontend(d, mode, discovery, "--router-mode", mode) for mode in MODES}
        router_out = d.start(
            "router", "stator.router", "--model-name", "tiny", "--namespace", "dynamo",
            "--router-mode", "kv", *common_flags(discovery),
        )  # fmt: skip
        outs[REMOTE] = start_frontend(
            d, REMOTE, discovery, "--router-endpoint", "dyn://dynamo.router.generate"
        )
        d.urls = {name: frontend_url(d, out) for name, out in outs.items()}
        d.wait_line(router_out, "stator router ready:")
        yield d, workers
    finally:
        d.kill()


@pytest.fixture(scope="module")
def saturated(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path
) -> Iterator[tuple[Deployment, list[int]]]:
    root = tmp_path_factory.mktemp("kv-saturated")
    discovery = root / "discovery"
    d = Deployment(root)
    try:
        workers = start_mocker(
            d, discovery, tiny_model_dir, "--num-gpu-blocks-override", "64",
            "--speedup-ratio", "2",
        )  # fmt: skip
        out = start_frontend(
            d, "busy", discovery, "--router-mode", "kv", "--active-decode-blocks-threshold", "0.5"
        )
        d.urls["busy"] = frontend_url(d, out)
        yield d, workers
    finally:
        d.kill()


# -- HTTP helpers -----------------------------------------------------------------------------


async def until(check: Callable[[], Awaitable[bool]], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def wait_served(client: httpx.AsyncClient, workers: list[int]) -> None:
    """Until the frontend serves ``tiny`` from every worker."""

    async def ready() -> bool:
        health = (await client.get("/health")).json()
        return sorted(health.get("models", {}).get("tiny", {}).get("instances", [])) == sorted(
            workers
        )

    await until(ready, READY_TIMEOUT_S)


def metric(text: str, name: str, worker_id: int) -> float:
    """Value of ``name{...worker_id="<id>"...}`` in Prometheus text (0 if absent)."""
    for line in text.splitlines():
        if line.startswith(name + "{") and f'worker_id="{worker_id}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def router_metric(client: httpx.AsyncClient, name: str, worker_id: int) -> float:
    return metric((await client.get("/metrics")).text, f"stator_frontend_router_{name}", worker_id)


def tokens(num_blocks: int, salt: int, tail: int = 5) -> list[int]:
    """A prompt of ``num_blocks`` full blocks (distinct per ``salt``) and a partial tail."""
    return [(i * 7 + salt * 1009 + 3) % 4000 + 50 for i in range(num_blocks * BLOCK + tail)]


def body(prompt: list[int], max_tokens: int = 2, **extra: Any) -> dict[str, Any]:
    nvext = {"extra_fields": ["worker_id"], **extra.pop("nvext", {})}
    return {
        "model": "tiny",
        "prompt": prompt,
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "nvext": nvext,
        **extra,
    }


async def complete(client: httpx.AsyncClient, prompt: list[int], **nvext: Any) -> int:
    """Send a completion; the worker that served it (``nvext.worker_id``)."""
    response = await client.post("/v1/completions", json=body(prompt, nvext=nvext))
    assert response.status_code == 200, response.text
    worker = response.json()["nvext"]["worker_id"]
    assert worker["prefill_worker_id"] == worker["decode_worker_id"]
    return int(worker["decode_worker_id"])


async def holds(client: httpx.AsyncClient, worker_id: int, num_blocks: int) -> None:
    """Until the frontend's router has indexed at least ``num_blocks`` of ``worker_id``."""

    async def indexed() -> bool:
        return await router_metric(client, "kv_blocks", worker_id) >= num_blocks

    await until(indexed)


# -- shared deployment ------------------------------------------------------------------------


async def test_kv_routes_to_the_longest_prefix_and_ties_go_to_fewer_cached_blocks(
    shared: tuple[Deployment, list[int]],
) -> None:
    d, workers = shared
    async with httpx.AsyncClient(base_url=d.urls["kv"], timeout=30.0) as client:
        await wait_served(client, workers)

        async def hears_both() -> bool:
            counts = [await router_metric(client, "load_metrics_total", w) for w in workers]
            return all(c > 0 for c in counts)

        await until(hears_both)  # both event subscriptions are connected
        a = tokens(8, salt=1)
        x = await complete(client, a)
        assert x in workers
        await holds(client, x, 8)
        y = next(w for w in workers if w != x)
        # Tie on overlap (0 on both): the worker with fewer cached blocks (y, empty) wins.
        b = tokens(8, salt=2)
        assert await complete(client, b) == y
        await holds(client, y, 8)
        # Prefixes return to their holders (each adds its new blocks there).
        assert await complete(client, a[: 8 * BLOCK] + tokens(2, salt=3)) == x
        await holds(client, x, 8 + 2)
        assert await complete(client, b[: 6 * BLOCK] + tokens(3, salt=4)) == y
        await holds(client, y, 8 + 3)
        # Both hold part of the prompt: y its first 2 blocks (pinned there), x all 8: x wins.
        pinned = a[: 2 * BLOCK] + tokens(1, salt=5)
        assert await complete(client, pinned, backend_instance_id=y) == y
        await holds(client, y, 8 + 3 + 3)
        assert await complete(client, a[: 8 * BLOCK] + tokens(1, salt=6)) == x
        state = (await client.get("/debug/router")).json()["models"]["tiny"]
        by_id = {w["worker_id"]: w for w in state["workers"]}
        assert by_id[x]["events"]["blocks_stored"] >= 8
        assert by_id[y]["events"]["blocks_stored"] >= 10


async def stream(client: httpx.AsyncClient, payload: dict[str, Any]) -> tuple[int, int, str]:
    """(HTTP status, completion tokens from the usage chunk, last finish reason)."""
    async with client.stream("POST", "/v1/completions", json=payload) as response:
        status = response.status_code
        text = (await response.aread()).decode()
    if status != 200:
        return status, 0, text
    events = [e[6:] for e in text.split("\n\n") if e.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    usage = next(c["usage"] for c in reversed(chunks) if c.get("usage"))
    reasons = [ch["finish_reason"] for c in chunks for ch in c["choices"] if ch["finish_reason"]]
    return status, usage["completion_tokens"], reasons[-1]


@pytest.mark.parametrize("mode", [*MODES, REMOTE])
async def test_100_concurrent_streams_succeed(
    shared: tuple[Deployment, list[int]], mode: str
) -> None:
    d, workers = shared
    limits = httpx.Limits(max_connections=NUM_CONCURRENT + 10)
    async with httpx.AsyncClient(base_url=d.urls[mode], timeout=60.0, limits=limits) as client:
        await wait_served(client, workers)
        payloads = []
        for i in range(NUM_CONCURRENT):
            extra: dict[str, Any] = {"stream": True, "stream_options": {"include_usage": True}}
            if mode == "direct":
                extra["nvext"] = {"backend_instance_id": workers[i % 2]}
            payloads.append(body(tokens(3, salt=100 + i % 10), max_tokens=6, **extra))
        results = await asyncio.gather(*(stream(client, p) for p in payloads))
    assert [r for r in results if r != (200, 6, "length")] == []


# -- saturated deployment ---------------------------------------------------------------------


async def test_saturated_worker_answers_503_then_serves_again(
    saturated: tuple[Deployment, list[int]],
) -> None:
    d, workers = saturated
    (worker,) = workers
    async with httpx.AsyncClient(base_url=d.urls["busy"], timeout=60.0) as client:
        await wait_served(client, workers)

        async def capacity_known() -> bool:
            models = (await client.get("/debug/router")).json()["models"]
            return any(
                w["total_kv_blocks"] == 64 for w in models.get("tiny", {}).get("workers", [])
            )

        await until(capacity_known)
        long_body = {"stream": True, "stream_options": {"include_usage": True}}
        # Two requests of 20 blocks each: 40 booked blocks > 0.5 * 64, so the worker is busy.
        running = []
        for salt in (1, 2):
            request = client.build_request(
                "POST", "/v1/completions", json=body(tokens(20, salt), max_tokens=150, **long_body)
            )
            response = await client.send(request, stream=True)
            assert response.status_code == 200
            running.append(response)
        assert await router_metric(client, "active_decode_blocks", worker) >= 40
        rejected = await client.post("/v1/completions", json=body(tokens(1, salt=3)))
        assert rejected.status_code == 503
        assert int(rejected.headers["Retry-After"]) >= 1
        error = rejected.json()["error"]
        assert error["message"] and error["type"]
        for response in running:  # the two finish normally: the load drains
            text = (await response.aread()).decode()
            await response.aclose()
            assert text.rstrip().endswith("data: [DONE]")

        async def drained() -> bool:
            return await router_metric(client, "active_requests", worker) == 0

        await until(drained)
        assert await complete(client, tokens(1, salt=4)) == worker
