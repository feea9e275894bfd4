"""The ``mem`` discovery backend: entries, leases (revoke, keep-alive, expiry) and watches."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from stator.errors import TransportError
from stator.runtime.discovery.base import KeyValue, WatchEvent, WatchEventKind
from stator.runtime.discovery.mem import MAX_LEASE_ID, MemDiscovery, MemStore

PUT, DELETE = WatchEventKind.PUT, WatchEventKind.DELETE


class FakeClock:
    """A manually advanced monotonic clock (s)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def started(store: MemStore, ttl_s: float = 10.0) -> MemDiscovery:
    disc = MemDiscovery(store, lease_ttl_s=ttl_s)
    await disc.start()
    return disc


async def next_event(watch: AsyncIterator[WatchEvent], timeout_s: float = 2.0) -> WatchEvent:
    return await asyncio.wait_for(anext(watch), timeout_s)


async def take(watch: AsyncIterator[WatchEvent], n: int) -> list[WatchEvent]:
    return [await anext(watch) for _ in range(n)]


async def test_put_get_prefix_delete() -> None:
    disc = await started(MemStore())
    await disc.put("a/2", b"two")
    await disc.put("a/1", b"one")
    await disc.put("b/1", b"other")
    assert await disc.get("a/1") == b"one"
    assert await disc.get("missing") is None
    assert await disc.get_prefix("a/") == [KeyValue("a/1", b"one"), KeyValue("a/2", b"two")]
    await disc.delete("a/1")
    await disc.delete("a/1")  # absent: no error
    assert await disc.get_prefix("a/") == [KeyValue("a/2", b"two")]
    await disc.close()


async def test_store_is_shared_between_discoveries() -> None:
    store = MemStore()
    d1, d2 = await started(store), await started(store)
    await d1.put("k", b"v")
    assert await d2.get("k") == b"v"
    assert d1.primary_lease.id != d2.primary_lease.id
    await d1.close()
    await d2.close()


async def test_lease_ids_are_positive_and_json_safe() -> None:
    store = MemStore()
    ids = {store.grant(10.0) for _ in range(200)}
    assert len(ids) == 200
    assert all(0 < i <= MAX_LEASE_ID < 2**53 for i in ids)


async def test_watch_yields_snapshot_then_changes_under_prefix_only() -> None:
    store = MemStore()
    writer, watcher = await started(store), await started(store)
    await writer.put("p/a", b"1")
    await writer.put("q/a", b"x")
    watch = watcher.watch_prefix("p/")
    assert await next_event(watch) == WatchEvent(PUT, "p/a", b"1")
    await writer.put("q/b", b"ignored")
    await writer.put("p/b", b"2")
    await writer.delete("p/a")
    assert await next_event(watch) == WatchEvent(PUT, "p/b", b"2")
    assert await next_event(watch) == WatchEvent(DELETE, "p/a", None)
    await watch.aclose()  # type: ignore[attr-defined]
    with pytest.raises(StopAsyncIteration):
        await next_event(watch)
    await writer.close()
    await watcher.close()


async def test_revoke_deletes_bound_keys_and_notifies_watchers() -> None:
    store = MemStore()
    owner, watcher = await started(store), await started(store)
    extra = await owner.create_lease(5.0)
    await owner.put("k/extra", b"e", lease=extra)
    await owner.put("k/primary", b"p")
    watch = watcher.watch_prefix("k/")
    assert {(await next_event(watch)).key for _ in range(2)} == {"k/extra", "k/primary"}
    await extra.revoke()
    assert await next_event(watch) == WatchEvent(DELETE, "k/extra", None)
    assert await owner.get("k/extra") is None
    assert await owner.get("k/primary") == b"p"
    with pytest.raises(TransportError, match="not found"):
        await owner.put("k/again", b"x", lease=extra)
    await owner.close()
    assert await next_event(watch) == WatchEvent(DELETE, "k/primary", None)
    await watcher.close()


async def test_close_ends_own_watches_and_forbids_puts() -> None:
    disc = await started(MemStore())
    watch = disc.watch_prefix("")
    waiter = asyncio.ensure_future(anext(watch))
    await asyncio.sleep(0)
    await disc.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiter, 2.0)
    with pytest.raises(RuntimeError, match="closed"):
        await disc.put("k", b"v")
    with pytest.raises(StopAsyncIteration):
        await next_event(disc.watch_prefix(""))
    await disc.close()  # idempotent


async def test_rebinding_a_key_moves_it_to_the_new_lease() -> None:
    disc = await started(MemStore())
    old, new = await disc.create_lease(5.0), await disc.create_lease(5.0)
    await disc.put("k", b"1", lease=old)
    await disc.put("k", b"2", lease=new)
    await old.revoke()
    assert await disc.get("k") == b"2"
    await new.revoke()
    assert await disc.get("k") is None
    await disc.close()


def test_unrefreshed_lease_expires_after_ttl() -> None:
    clock = FakeClock()
    store = MemStore(clock=clock)
    lease = store.grant(3.0)
    store.put("k", b"v", lease)
    watch = store.watch("k")
    clock.now += 2.0
    assert store.keep_alive(lease)
    clock.now += 2.9
    assert store.get("k") == b"v"
    clock.now += 0.2
    assert store.get("k") is None
    assert not store.has_lease(lease)
    assert not store.keep_alive(lease)
    events = asyncio.run(asyncio.wait_for(take(watch, 2), 2.0))
    assert events == [WatchEvent(PUT, "k", b"v"), WatchEvent(DELETE, "k", None)]


def test_bad_ttl_is_rejected() -> None:
    with pytest.raises(ValueError, match="ttl"):
        MemStore().grant(0.0)


async def test_primary_lease_before_start_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="start"):
        _ = MemDiscovery(MemStore()).primary_lease


async def test_keep_alive_holds_keys_past_the_ttl() -> None:
    tasks_before = asyncio.all_tasks()
    disc = await started(MemStore(), ttl_s=0.2)
    await disc.put("k", b"v")
    await asyncio.sleep(0.7)
    assert await disc.get("k") == b"v"
    await disc.close()
    assert await disc.get("k") is None
    await asyncio.sleep(0.01)  # the store's expiry timer ends once no lease is left
    assert not [t for t in asyncio.all_tasks() - tasks_before if not t.done()]


async def test_crashed_process_keys_vanish_within_ttl_without_any_access() -> None:
    store = MemStore()
    victim, watcher = await started(store, ttl_s=0.3), await started(store)
    await victim.put("inst/1", b"addr")
    watch = watcher.watch_prefix("inst/")
    assert (await next_event(watch)).kind is PUT
    await victim.simulate_crash()
    # Expiry is driven by the store's timer: the DELETE arrives with nobody touching the store.
    assert await next_event(watch, timeout_s=3.0) == WatchEvent(DELETE, "inst/1", None)
    await watcher.close()
