"""Workers as real processes on etcd discovery and the nats request plane.

Workers are ``tests/e2e/scaleout_proc.py`` started with the standard runtime flags; the test
process is the caller (its own runtime on the same etcd and NATS). Every child is killed by PID
in a ``finally``; logs go under ``tmp_path``.
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
from stator.testing.services import EtcdServer, NatsServer
from tests.service_fixtures import ETCD_MISSING, require_binary

SCRIPT = Path(__file__).with_name("scaleout_proc.py")
ENDPOINT = EndpointAddress.parse("dyn://e2e.worker.generate")
TTL_S = 2.0


class Worker:
    """A worker child process; stdout is read line by line, stderr goes to a log file."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc = proc
        self.log = log

    async def ready(self, timeout_s: float = 20.0) -> int:
        """The instance id from the ``READY`` line (fails with the child's stderr)."""
        assert self.proc.stdout is not None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while line := (await self.proc.stdout.readline()).decode():
                    if line.startswith("READY"):
                        return int(line.split()[1])
        pytest.fail(f"worker {self.proc.pid} not ready; stderr:\n{self.log.read_text()}")

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGKILL)


Spawn = Callable[..., Awaitable[Worker]]


def runtime_flags(etcd: EtcdServer, nats: NatsServer | None) -> list[str]:
    flags = ["--discovery-backend", "etcd", "--etcd-endpoints", etcd.url]
    flags += ["--lease-ttl", str(TTL_S), "--namespace", "e2e"]
    if nats is not None:
        flags += ["--request-plane", "nats", "--event-plane", "nats", "--nats-server", nats.url]
    return flags


@pytest.fixture
async def spawn(tmp_path: Path) -> AsyncIterator[Spawn]:
    workers: list[Worker] = []

    async def start(*flags: str) -> Worker:
        log = tmp_path / f"worker-{len(workers)}.log"
        with log.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(SCRIPT), *flags, stdout=asyncio.subprocess.PIPE, stderr=err
            )
        workers.append(Worker(proc, log))
        return workers[-1]

    try:
        yield start
    finally:
        for worker in workers:
            worker.kill()
            await worker.proc.wait()


async def caller(etcd: EtcdServer, nats: NatsServer | None) -> DistributedRuntime:
    """The test process's runtime on the same backends."""
    config = RuntimeConfig(
        discovery_backend="etcd",
        etcd_endpoints=(etcd.url,),
        request_plane="nats" if nats else "tcp",
        event_plane="nats" if nats else "zmq",
        nats_server=nats.url if nats else "",
        lease_ttl_s=TTL_S,
    )
    return await DistributedRuntime.create(config)


async def wait_for(cond: Callable[[], bool], timeout_s: float) -> float:
    """Poll ``cond`` every 20 ms; the seconds it took (fails on timeout)."""
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout_s:
            pytest.fail(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def test_sigkilled_worker_leaves_within_the_lease_ttl(
    spawn: Spawn, restartable_etcd: EtcdServer, nats_server: NatsServer
) -> None:
    """etcd + nats: the stream fails fast with ``InstanceLostError``; the instance key goes
    when the etcd lease expires."""
    worker = await spawn(*runtime_flags(restartable_etcd, nats_server))
    instance_id = await worker.ready()
    rt = await caller(restartable_etcd, nats_server)
    try:
        client = await rt.endpoint(ENDPOINT).client()
        assert await client.wait_for_instances(10.0) == [instance_id]
        stream = client.generate({"n": None})
        assert [await anext(stream) for _ in range(3)] == [{"i": 0}, {"i": 1}, {"i": 2}]
        worker.kill()
        killed_at = time.monotonic()
        with pytest.raises(InstanceLostError):
            async with asyncio.timeout(5.0):
                async for _ in stream:
                    pass
        assert time.monotonic() - killed_at < 2.0  # generous: liveness probes every 0.5 s
        await wait_for(lambda: client.instance_ids() == [], TTL_S + 3.0)
        # etcd expires the lease TTL s after the last refresh (checked every 0.5 s)
        assert time.monotonic() - killed_at <= TTL_S + 1.5
        assert await rt.discovery.get(keys.instance_key(ENDPOINT, instance_id)) is None
    finally:
        await rt.shutdown(drain_timeout_s=1.0)


async def test_worker_keeps_serving_and_stays_registered_across_an_etcd_restart(
    spawn: Spawn, restartable_etcd: EtcdServer
) -> None:
    """etcd + tcp: while etcd is down, calls to known workers go on; after the restart the
    worker refreshes its lease again (its key outlives several TTLs)."""
    worker = await spawn(*runtime_flags(restartable_etcd, None))
    instance_id = await worker.ready()
    rt = await caller(restartable_etcd, None)
    try:
        client = await rt.endpoint(ENDPOINT).client()
        assert await client.wait_for_instances(10.0) == [instance_id]
        await asyncio.to_thread(restartable_etcd.stop)
        assert [c async for c in client.generate({"n": 2})] == [{"i": 0}, {"i": 1}]
        await asyncio.sleep(TTL_S + 1.0)  # down for longer than the TTL
        assert client.instance_ids() == [instance_id]
        assert [c async for c in client.generate({"n": 2})] == [{"i": 0}, {"i": 1}]
        await asyncio.to_thread(restartable_etcd.start)
        await asyncio.sleep(2 * TTL_S + 0.5)  # the lease would have expired without refreshes
        key = keys.instance_key(ENDPOINT, instance_id)
        assert await rt.discovery.get(key) is not None
        assert client.instance_ids() == [instance_id]
        assert [c async for c in client.generate({"n": 1})] == [{"i": 0}]
    finally:
        await rt.shutdown(drain_timeout_s=1.0)


async def test_worker_re_registers_when_etcd_comes_back_empty(spawn: Spawn, tmp_path: Path) -> None:
    """etcd restarted without its data (same URL): the worker grants its lease again with the
    same id and re-puts its keys, and the caller's watch sees it come back."""
    require_binary("etcd", ETCD_MISSING)
    first = EtcdServer(tmp_path / "etcd-a")
    first.start()
    second = EtcdServer(tmp_path / "etcd-b", ports=(first.client_port, first.peer_port))
    try:
        worker = await spawn(*runtime_flags(first, None))
        instance_id = await worker.ready()
        rt = await caller(first, None)
        try:
            client = await rt.endpoint(ENDPOINT).client()
            assert await client.wait_for_instances(10.0) == [instance_id]
            await asyncio.to_thread(first.stop)
            await asyncio.to_thread(second.start)
            key = keys.instance_key(ENDPOINT, instance_id)

            async def registered() -> bool:
                with contextlib.suppress(Exception):
                    return await rt.discovery.get(key) is not None
                return False

            async with asyncio.timeout(10.0):
                while not await registered():
                    await asyncio.sleep(0.1)
            await wait_for(lambda: client.instance_ids() == [instance_id], 5.0)
            assert [c async for c in client.generate({"n": 2})] == [{"i": 0}, {"i": 1}]
        finally:
            await rt.shutdown(drain_timeout_s=1.0)
    finally:
        first.stop()
        second.stop()


async def test_sigterm_deregisters_at_once(
    spawn: Spawn, restartable_etcd: EtcdServer, nats_server: NatsServer
) -> None:
    worker = await spawn(*runtime_flags(restartable_etcd, nats_server))
    instance_id = await worker.ready()
    rt = await caller(restartable_etcd, nats_server)
    try:
        client = await rt.endpoint(ENDPOINT).client()
        assert await client.wait_for_instances(10.0) == [instance_id]
        os.kill(worker.proc.pid, signal.SIGTERM)
        await wait_for(lambda: client.instance_ids() == [], TTL_S / 2)  # revoked, not expired
        assert await asyncio.wait_for(worker.proc.wait(), 10.0) == 0
    finally:
        await rt.shutdown(drain_timeout_s=1.0)
