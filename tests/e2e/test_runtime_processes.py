"""The runtime across OS processes (``file`` discovery in a tmp dir, tcp request plane).

Processes are ``tests/e2e/runtime_proc.py``; every one is killed by PID in a ``finally``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from stator.errors import InstanceLostError
from stator.runtime.address import EndpointAddress
from stator.runtime.config import RuntimeConfig
from stator.runtime.discovery import keys
from stator.runtime.runtime import DistributedRuntime

SCRIPT = Path(__file__).with_name("runtime_proc.py")
ENDPOINT = EndpointAddress.parse("dyn://e2e.worker.generate")
TTL_S = 2.0
Spawn = Callable[..., Awaitable["Proc"]]


class Proc:
    """A child process with line-wise stdout; stderr goes to a log file."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc = proc
        self.log = log

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def expect(self, prefix: str, timeout_s: float = 20.0) -> str:
        """The next stdout line starting with ``prefix`` (fails with the child's stderr)."""
        assert self.proc.stdout is not None
        try:
            async with asyncio.timeout(timeout_s):
                while line := (await self.proc.stdout.readline()).decode():
                    if line.startswith(prefix):
                        return line.strip()
        except TimeoutError:
            pass
        pytest.fail(f"no {prefix!r} line from pid {self.pid}; stderr:\n{self.log.read_text()}")

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)


@pytest.fixture
async def spawn(tmp_path: Path) -> AsyncIterator[Spawn]:
    procs: list[Proc] = []

    async def start(role: str, *extra: str, ttl_s: float = TTL_S) -> Proc:
        log = tmp_path / f"{role}-{len(procs)}.log"
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(SCRIPT),
            role,
            "--dir",
            str(tmp_path / "discovery"),
            "--ttl",
            str(ttl_s),
            "--marker-dir",
            str(tmp_path),
            *extra,
            stdout=asyncio.subprocess.PIPE,
            stderr=log.open("wb"),
        )
        procs.append(Proc(proc, log))
        return procs[-1]

    try:
        yield start
    finally:
        for p in procs:
            p.kill()
            await p.proc.wait()


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[DistributedRuntime]:
    """The test process's own runtime, on the same discovery directory."""
    config = RuntimeConfig(
        discovery_backend="file", discovery_dir=str(tmp_path / "discovery"), lease_ttl_s=TTL_S
    )
    rt = await DistributedRuntime.create(config)
    try:
        yield rt
    finally:
        await rt.shutdown(drain_timeout_s=1.0)


async def wait_for(cond: Callable[[], bool], timeout_s: float) -> float:
    """Poll ``cond`` every 20 ms; return the seconds it took (fails on timeout)."""
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout_s:
            pytest.fail(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def test_server_sigkilled_mid_stream(spawn: Spawn, runtime: DistributedRuntime) -> None:
    server = await spawn("server")
    instance_id = int((await server.expect("READY")).split()[1])
    client = await runtime.endpoint(ENDPOINT).client()
    assert await client.wait_for_instances(10.0) == [instance_id]
    stream = client.generate({"n": None})
    for i in range(3):
        assert await anext(stream) == {"i": i}

    server.kill()
    killed_at = time.monotonic()
    with pytest.raises(InstanceLostError):
        async with asyncio.timeout(5.0):
            async for _chunk in stream:
                pass
    assert time.monotonic() - killed_at < 1.0, "instance-lost error must come within 1 s"

    key = keys.instance_key(ENDPOINT, instance_id)
    assert await runtime.discovery.get(key) is not None  # the lease has not expired yet
    await wait_for(lambda: client.instance_ids() == [], TTL_S + 2.0)
    # within the TTL of the last heartbeat, plus one watch poll; generous slack for a busy box
    assert time.monotonic() - killed_at <= TTL_S + 1.0
    assert await runtime.discovery.get(key) is None


async def test_client_process_killed_cancels_the_handler(spawn: Spawn, tmp_path: Path) -> None:
    server = await spawn("server")
    await server.expect("READY")
    caller = await spawn("client", "--request-id", "killed-client")
    await caller.expect("STREAMING")
    caller.kill()
    marker = tmp_path / "cancelled-killed-client"
    await wait_for(marker.exists, 5.0)
    assert int(marker.read_text()) > 0  # it had been streaming


async def test_client_closing_its_stream_cancels_the_handler(
    spawn: Spawn, runtime: DistributedRuntime, tmp_path: Path
) -> None:
    server = await spawn("server")
    await server.expect("READY")
    client = await runtime.endpoint(ENDPOINT).client()
    await client.wait_for_instances(10.0)
    stream = client.generate({"n": None}, request_id="closed-stream")
    assert await anext(stream) == {"i": 0}
    await stream.aclose()  # type: ignore[attr-defined]
    await wait_for((tmp_path / "cancelled-closed-stream").exists, 5.0)
    # the server is fine: the next request is served normally
    assert [c async for c in client.generate({"n": 2})] == [{"i": 0}, {"i": 1}]


async def test_sigterm_deregisters_at_once(spawn: Spawn, runtime: DistributedRuntime) -> None:
    server = await spawn("server", ttl_s=30.0)  # a long TTL: removal must not be expiry
    instance_id = int((await server.expect("READY")).split()[1])
    client = await runtime.endpoint(ENDPOINT).client()
    assert await client.wait_for_instances(10.0) == [instance_id]
    os.kill(server.pid, signal.SIGTERM)
    await wait_for(lambda: client.instance_ids() == [], 5.0)
    assert await asyncio.wait_for(server.proc.wait(), 10.0) == 0
    assert await runtime.discovery.get(keys.instance_key(ENDPOINT, instance_id)) is None
