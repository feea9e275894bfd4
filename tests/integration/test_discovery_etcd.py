"""Discovery on a real etcd: every backend-neutral test of ``test_discovery`` (re-run here with
an etcd ``make_discovery``), then what only etcd does (reconnection, errors, lease ids)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from stator.errors import ConfigError, TransportError
from stator.runtime.discovery.base import Discovery, WatchEvent, WatchEventKind
from stator.runtime.discovery.etcd import EtcdDiscovery
from stator.runtime.discovery.mem_store import MAX_LEASE_ID
from stator.testing.services import EtcdServer, free_port
from tests.integration import test_discovery as neutral
from tests.integration.test_discovery import MakeDiscovery, next_event, wait_until
from tests.service_fixtures import ETCD_MISSING, require_binary

PUT, DELETE = WatchEventKind.PUT, WatchEventKind.DELETE

# The backend-neutral tests, collected again in this module with the etcd fixture below.
test_put_get_delete = neutral.test_put_get_delete
test_get_prefix_filters_and_sorts = neutral.test_get_prefix_filters_and_sorts
test_watch_sees_snapshot_puts_and_deletes = neutral.test_watch_sees_snapshot_puts_and_deletes
test_revoke_removes_only_that_leases_keys = neutral.test_revoke_removes_only_that_leases_keys
test_close_revokes_primary_lease = neutral.test_close_revokes_primary_lease
test_close_ends_watches = neutral.test_close_ends_watches
test_stale_lease_keys_vanish_within_ttl = neutral.test_stale_lease_keys_vanish_within_ttl


@pytest.fixture
async def make_discovery(etcd_url: str) -> AsyncIterator[MakeDiscovery]:
    """A factory of started etcd discoveries on the session etcd (emptied first)."""
    made: list[Discovery] = []

    async def make(lease_ttl_s: float = 10.0) -> Discovery:
        d = EtcdDiscovery([etcd_url], lease_ttl_s, retry_interval_s=0.1)
        await d.start()
        made.append(d)
        return d

    yield make
    for d in made:
        await d.close()


async def test_lease_ids_are_json_safe_and_distinct(make_discovery: MakeDiscovery) -> None:
    a, b = await make_discovery(), await make_discovery()
    extra = await a.create_lease(5.0)
    ids = {a.primary_lease.id, b.primary_lease.id, extra.id}
    assert len(ids) == 3
    assert all(0 < i <= MAX_LEASE_ID for i in ids)


async def test_unreachable_etcd_is_a_clear_transport_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    d = EtcdDiscovery([url], rpc_timeout_s=1.0)
    start = time.monotonic()
    with pytest.raises(TransportError, match="etcd is unreachable") as info:
        await d.start()
    assert url in str(info.value)
    assert time.monotonic() - start < 5.0


def test_bad_endpoints_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="TLS") as info:
        EtcdDiscovery(["https://etcd:2379"])
    assert info.value.flag == "--etcd-endpoints"
    with pytest.raises(ConfigError, match="no etcd endpoint"):
        EtcdDiscovery([])


async def test_second_endpoint_is_used_when_the_first_is_down(etcd_url: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    d = EtcdDiscovery([dead, etcd_url], rpc_timeout_s=1.0)
    await d.start()
    try:
        await d.put("fo/k", b"v")
        assert await d.get("fo/k") == b"v"
    finally:
        await d.close()


async def restart(server: EtcdServer, down_s: float) -> None:
    """Stop etcd (SIGTERM), wait ``down_s``, start it again on the same port and data dir."""
    await asyncio.to_thread(server.stop)
    await asyncio.sleep(down_s)
    await asyncio.to_thread(server.start)


async def test_keys_and_watches_survive_an_etcd_restart(restartable_etcd: EtcdServer) -> None:
    url = restartable_etcd.url
    worker = EtcdDiscovery([url], 2.0, retry_interval_s=0.1)
    observer = EtcdDiscovery([url], 2.0, retry_interval_s=0.1)
    await worker.start()
    await observer.start()
    try:
        await worker.put("rs/worker", b"w")
        watch = observer.watch_prefix("rs/")
        assert await next_event(watch) == WatchEvent(PUT, "rs/worker", b"w")
        await restart(restartable_etcd, down_s=0.5)
        await worker.put("rs/after", b"a")  # writes work again
        assert await next_event(watch, 5.0) == WatchEvent(PUT, "rs/after", b"a")
        assert await observer.get("rs/worker") == b"w"
        await worker.delete("rs/worker")
        assert await next_event(watch, 5.0) == WatchEvent(DELETE, "rs/worker", None)
    finally:
        await worker.close()
        await observer.close()


async def test_keys_come_back_after_etcd_loses_its_data(tmp_path: Path) -> None:
    """etcd restarted empty (a new data dir, same port): the worker grants its lease again with
    the same id and re-puts its keys; watchers get DELETEs then PUTs back."""
    require_binary("etcd", ETCD_MISSING)
    first = EtcdServer(tmp_path / "a")
    first.start()
    worker = EtcdDiscovery([first.url], 2.0, retry_interval_s=0.1)
    observer = EtcdDiscovery([first.url], 2.0, retry_interval_s=0.1)
    second: EtcdServer | None = None
    try:
        await worker.start()
        await observer.start()
        lease_id = worker.primary_lease.id
        await worker.put("lost/k", b"v")
        watch = observer.watch_prefix("lost/")
        assert await next_event(watch) == WatchEvent(PUT, "lost/k", b"v")
        await asyncio.to_thread(first.stop)
        second = EtcdServer(tmp_path / "b", ports=(first.client_port, first.peer_port))
        await asyncio.to_thread(second.start)

        async def back() -> bool:
            try:
                return await observer.get("lost/k") == b"v"
            except TransportError:
                return False

        await wait_until(back, timeout_s=10.0)
        assert worker.primary_lease.id == lease_id
        events = [await next_event(watch, 5.0)]
        if events[0].kind is DELETE:  # the observer may have seen the empty etcd in between
            events.append(await next_event(watch, 5.0))
        assert events[-1] == WatchEvent(PUT, "lost/k", b"v")
    finally:
        await worker.close()
        await observer.close()
        first.stop()
        if second is not None:
            second.stop()


async def test_close_while_etcd_is_down_does_not_hang(restartable_etcd: EtcdServer) -> None:
    d = EtcdDiscovery([restartable_etcd.url], 2.0, rpc_timeout_s=1.0, retry_interval_s=0.1)
    await d.start()
    await d.put("down/k", b"v")
    await asyncio.to_thread(restartable_etcd.stop)
    with pytest.raises(TransportError, match="etcd"):
        await d.get("down/k")
    await asyncio.wait_for(d.close(), 5.0)
