"""Discovery backends (mem and file) behind the one ``Discovery`` interface.

Each test plays several "processes" (one ``Discovery`` each) over the same store: a shared
``MemStore`` or a shared directory.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from stator.errors import TransportError
from stator.runtime.discovery.base import Discovery, KeyValue, WatchEvent, WatchEventKind
from stator.runtime.discovery.file import FileDiscovery
from stator.runtime.discovery.mem import MemDiscovery, MemStore

MakeDiscovery = Callable[..., Awaitable[Discovery]]
PUT, DELETE = WatchEventKind.PUT, WatchEventKind.DELETE


@pytest.fixture(params=["mem", "file"])
async def make_discovery(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[MakeDiscovery]:
    """A factory of started discoveries sharing one store; all closed at the end."""
    store = MemStore()
    made: list[Discovery] = []

    async def make(lease_ttl_s: float = 10.0) -> Discovery:
        d: Discovery
        if request.param == "mem":
            d = MemDiscovery(store, lease_ttl_s)
        else:
            d = FileDiscovery(str(tmp_path / "disc"), lease_ttl_s, poll_interval_s=0.05)
        await d.start()
        made.append(d)
        return d

    yield make
    for d in made:
        await d.close()


async def next_event(watch: AsyncIterator[WatchEvent], timeout_s: float = 3.0) -> WatchEvent:
    return await asyncio.wait_for(anext(watch), timeout_s)


async def wait_until(cond: Callable[[], Awaitable[bool]], timeout_s: float) -> float:
    """Poll ``cond`` until true; return the seconds it took (fails the test on timeout)."""
    start = time.monotonic()
    while not await cond():
        if time.monotonic() - start > timeout_s:
            pytest.fail(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def test_put_get_delete(make_discovery: MakeDiscovery) -> None:
    a, b = await make_discovery(), await make_discovery()
    await a.put("v1/instances/ns/c/e/1", b"one")
    assert await b.get("v1/instances/ns/c/e/1") == b"one"
    await a.put("v1/instances/ns/c/e/1", b"uno")
    assert await b.get("v1/instances/ns/c/e/1") == b"uno"
    await b.delete("v1/instances/ns/c/e/1")
    assert await a.get("v1/instances/ns/c/e/1") is None
    await a.delete("v1/instances/ns/c/e/1")  # absent: no error
    assert await a.get("never/written") is None


async def test_get_prefix_filters_and_sorts(make_discovery: MakeDiscovery) -> None:
    a, b = await make_discovery(), await make_discovery()
    await a.put("p/x/2", b"2")
    await b.put("p/x/1", b"1")
    await a.put("p/y/1", b"y")
    await a.put("px/1", b"not under p/x/")
    assert await b.get_prefix("p/x/") == [KeyValue("p/x/1", b"1"), KeyValue("p/x/2", b"2")]
    assert [kv.key for kv in await a.get_prefix("p/")] == ["p/x/1", "p/x/2", "p/y/1"]
    assert await a.get_prefix("nothing/") == []


async def test_watch_sees_snapshot_puts_and_deletes(make_discovery: MakeDiscovery) -> None:
    a, b = await make_discovery(), await make_discovery()
    await a.put("w/old", b"0")
    await a.put("other/k", b"-")
    watch = b.watch_prefix("w/")
    assert await next_event(watch) == WatchEvent(PUT, "w/old", b"0")
    await a.put("w/new", b"1")
    assert await next_event(watch) == WatchEvent(PUT, "w/new", b"1")
    await a.put("w/new", b"2")
    assert await next_event(watch) == WatchEvent(PUT, "w/new", b"2")
    await a.delete("w/old")
    assert await next_event(watch) == WatchEvent(DELETE, "w/old", None)
    await watch.aclose()  # type: ignore[attr-defined]


async def test_revoke_removes_only_that_leases_keys(make_discovery: MakeDiscovery) -> None:
    a, b = await make_discovery(), await make_discovery()
    extra = await a.create_lease(ttl_s=5.0)
    await a.put("r/primary", b"p")
    await a.put("r/extra", b"e", lease=extra)
    watch = b.watch_prefix("r/")
    assert {(await next_event(watch)).key for _ in range(2)} == {"r/primary", "r/extra"}
    await extra.revoke()
    assert await next_event(watch) == WatchEvent(DELETE, "r/extra", None)
    assert await b.get("r/extra") is None
    assert await b.get("r/primary") == b"p"
    with pytest.raises(TransportError):
        await a.put("r/again", b"x", lease=extra)


async def test_close_revokes_primary_lease(make_discovery: MakeDiscovery) -> None:
    a, b = await make_discovery(), await make_discovery()
    await a.put("c/k", b"v")
    watch = b.watch_prefix("c/")
    assert (await next_event(watch)).kind is PUT
    await a.close()
    assert await next_event(watch) == WatchEvent(DELETE, "c/k", None)
    assert await b.get_prefix("c/") == []


async def test_close_ends_watches(make_discovery: MakeDiscovery) -> None:
    a = await make_discovery()
    watch = a.watch_prefix("x/")
    await a.close()
    with pytest.raises(StopAsyncIteration):
        await next_event(watch)


async def test_stale_lease_keys_vanish_within_ttl(make_discovery: MakeDiscovery) -> None:
    ttl_s = 1.0
    dying, observer = await make_discovery(ttl_s), await make_discovery(ttl_s)
    await dying.put("s/k", b"v")
    await observer.put("s/mine", b"stays")
    watch = observer.watch_prefix("s/")
    assert {(await next_event(watch)).key for _ in range(2)} == {"s/k", "s/mine"}
    await dying.simulate_crash()  # type: ignore[attr-defined]
    crashed_at = time.monotonic()
    assert await next_event(watch, timeout_s=ttl_s + 2.0) == WatchEvent(DELETE, "s/k", None)
    # generous bound: TTL since the last heartbeat plus one poll
    assert time.monotonic() - crashed_at <= ttl_s + 1.0
    assert await observer.get("s/k") is None
    await asyncio.sleep(ttl_s)  # the observer's own lease is heartbeated and stays
    assert await observer.get("s/mine") == b"stays"
