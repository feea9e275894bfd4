"""Frontend and mocker workers as separate processes that find each other only through etcd
and talk only through NATS (requests and KV events), checked through HTTP and the openai SDK.

Every child is killed by PID at the end; output goes under ``tmp_path``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from stator.testing.services import EtcdServer, NatsServer

BLOCK = 16
TTL_S = 2.0
READY_TIMEOUT_S = 60.0

pytestmark = pytest.mark.slow


class Child:
    """``python -m MODULE ...`` with stdout/stderr in files."""

    def __init__(self, name: str, root: Path, argv: list[str]) -> None:
        self.out, self.err = root / f"{name}.out", root / f"{name}.err"
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", *argv], stdout=out, stderr=err)

    async def line(self, prefix: str) -> str:
        """The first stdout line starting with ``prefix`` (fails with stderr if it exits)."""
        async with asyncio.timeout(READY_TIMEOUT_S):
            while True:
                for line in self.out.read_text().splitlines():
                    if line.startswith(prefix):
                        return line
                if self.proc.poll() is not None:
                    pytest.fail(f"{self.proc.args} exited:\n{self.err.read_text()[-3000:]}")
                await asyncio.sleep(0.05)

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def start(tmp_path: Path, restartable_etcd: EtcdServer, nats_server: NatsServer) -> Iterator[Any]:
    """``start(name, module, *flags)``: a child on etcd discovery (an etcd of this test only)
    and the nats planes."""
    children: list[Child] = []
    runtime = ["--discovery-backend", "etcd", "--etcd-endpoints", restartable_etcd.url,
               "--request-plane", "nats", "--event-plane", "nats",
               "--nats-server", nats_server.url, "--lease-ttl", str(TTL_S),
               "--namespace", f"scaleout{os.getpid()}"]  # fmt: skip

    def run(name: str, module: str, *flags: str) -> Child:
        children.append(Child(name, tmp_path, [module, *flags, *runtime]))
        return children[-1]

    try:
        yield run
    finally:
        for child in children:
            child.kill()


async def mocker(
    start: Callable[..., Child], name: str, model_dir: Path
) -> tuple[Child, list[int]]:
    """A mocker process with one worker, and its instance ids."""
    child = start(name, "stator.mocker", "--model-path", str(model_dir), "--model-name", "tiny",
                  "--block-size", str(BLOCK), "--speedup-ratio", "20")  # fmt: skip
    line = await child.line("mocker ready:")
    return child, [int(x) for x in line.split(" instances ", 1)[1].split()]


def prompt(num_blocks: int, salt: int, tail: int = 5) -> list[int]:
    """Token ids: ``num_blocks`` full blocks, distinct per ``salt``, and a partial tail."""
    return [(i * 7 + salt * 1009 + 3) % 4000 + 50 for i in range(num_blocks * BLOCK + tail)]


async def served_by(client: httpx.AsyncClient, tokens: list[int]) -> int:
    """Send a completion of ``tokens``; the worker that served it (``nvext.worker_id``)."""
    body = {"model": "tiny", "prompt": tokens, "max_tokens": 2, "ignore_eos": True,
            "nvext": {"extra_fields": ["worker_id"]}}  # fmt: skip
    response = await client.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    return int(response.json()["nvext"]["worker_id"]["decode_worker_id"])


async def kv_blocks(client: httpx.AsyncClient, worker_id: int) -> float:
    """The frontend router's indexed block count of ``worker_id`` (from ``/metrics``)."""
    for line in (await client.get("/metrics")).text.splitlines():
        if line.startswith("stator_frontend_router_kv_blocks{") and f'"{worker_id}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def until(check: Callable[[], Any], timeout_s: float = 20.0) -> float:
    start = time.monotonic()
    while not await check():
        assert time.monotonic() - start < timeout_s, "condition not reached in time"
        await asyncio.sleep(0.1)
    return time.monotonic() - start


async def test_etcd_and_nats_deployment_serves_the_openai_sdk_with_kv_routing(
    start: Callable[..., Child], tiny_model_dir: Path
) -> None:
    openai = pytest.importorskip("openai")
    workers = (await mocker(start, "mocker-a", tiny_model_dir))[1]
    workers += (await mocker(start, "mocker-b", tiny_model_dir))[1]
    frontend = start("frontend", "stator.frontend", "--http-host", "127.0.0.1", "--http-port",
                     "0", "--router-mode", "kv", "--log-level", "warning")  # fmt: skip
    url = (await frontend.line("stator frontend listening on")).rsplit(" ", 1)[-1]
    sdk = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    async with httpx.AsyncClient(base_url=url, timeout=30.0) as http:

        async def listed() -> bool:
            return [m.id async for m in sdk.models.list()] == ["tiny"]

        await until(listed)
        chat = await sdk.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "hello"}],
            max_tokens=6,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
        reasons, usage = [], None
        async for chunk in chat:
            reasons += [c.finish_reason for c in chunk.choices if c.finish_reason]
            usage = chunk.usage or usage
        assert reasons == ["length"]
        assert usage is not None and usage.completion_tokens == 6

        # KV routing over the NATS event plane: the worker's KV events reach the router ...
        first = await served_by(http, prompt(8, salt=1))
        assert first in workers
        await until(lambda: _at_least(kv_blocks(http, first), 8))
        # ... so requests sharing that prefix go to the same worker
        for tail_salt in range(3):
            tokens = prompt(8, salt=1, tail=0) + [7 + tail_salt] * 9
            assert await served_by(http, tokens) == first


async def test_sigkilled_worker_leaves_routing_within_the_lease_ttl(
    start: Callable[..., Child], tiny_model_dir: Path
) -> None:
    _, [survivor] = await mocker(start, "mocker-a", tiny_model_dir)
    victim_child, [victim] = await mocker(start, "mocker-b", tiny_model_dir)
    frontend = start("frontend", "stator.frontend", "--http-host", "127.0.0.1", "--http-port",
                     "0", "--router-mode", "kv", "--log-level", "warning")  # fmt: skip
    url = (await frontend.line("stator frontend listening on")).rsplit(" ", 1)[-1]
    async with httpx.AsyncClient(base_url=url, timeout=30.0) as http:

        async def routed_workers() -> set[int]:
            with contextlib.suppress(httpx.HTTPError, KeyError):
                state = (await http.get("/debug/router")).json()["models"]["tiny"]
                return {int(w["worker_id"]) for w in state["workers"]}
            return set()

        await until(lambda: _equals(routed_workers(), {survivor, victim}))
        victim_child.kill()
        killed_at = time.monotonic()
        await until(lambda: _equals(routed_workers(), {survivor}), TTL_S + 5.0)
        # etcd expires the lease TTL s after the last refresh (checked every 0.5 s); slack for
        # the watch and a busy machine
        assert time.monotonic() - killed_at <= TTL_S + 1.5
        for i in range(4):  # nothing is routed to the dead worker any more
            assert await served_by(http, prompt(1, salt=100 + i)) == survivor


async def test_frontend_keeps_serving_known_workers_while_etcd_is_down(
    start: Callable[..., Child], tiny_model_dir: Path, restartable_etcd: EtcdServer
) -> None:
    _, [worker] = await mocker(start, "mocker", tiny_model_dir)
    frontend = start("frontend", "stator.frontend", "--http-host", "127.0.0.1", "--http-port",
                     "0", "--router-mode", "kv", "--log-level", "warning")  # fmt: skip
    url = (await frontend.line("stator frontend listening on")).rsplit(" ", 1)[-1]
    async with httpx.AsyncClient(base_url=url, timeout=30.0) as http:

        async def serves() -> bool:
            with contextlib.suppress(AssertionError, httpx.HTTPError):
                return await served_by(http, prompt(1, salt=0)) == worker
            return False

        await until(serves)
        await asyncio.to_thread(restartable_etcd.stop)
        for i in range(3):
            assert await served_by(http, prompt(2, salt=i)) == worker
        await asyncio.sleep(TTL_S + 1.0)  # longer than a lease: nothing expires without etcd
        for i in range(3):
            assert await served_by(http, prompt(2, salt=10 + i)) == worker
        await asyncio.to_thread(restartable_etcd.start)
        await asyncio.sleep(2 * TTL_S)  # the worker's lease is refreshed again, or it would go
        assert await served_by(http, prompt(2, salt=20)) == worker
        assert (await http.get("/v1/models")).json()["data"][0]["id"] == "tiny"


async def _at_least(value: Any, threshold: float) -> bool:
    return bool(await value >= threshold)


async def _equals(value: Any, expected: object) -> bool:
    return bool(await value == expected)
