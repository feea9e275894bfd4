"""The zmq event plane over loopback, publishers found through ``mem`` discovery.

ZMQ subscribers miss what is published before their connection is up ("slow joiner"), so the
tests publish in a loop until the expected messages arrive, within a bounded deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence

import pytest

from stator.runtime.discovery import keys
from stator.runtime.discovery.mem import MemDiscovery, MemStore
from stator.runtime.event_plane.base import EventPublisher, EventSubscriber
from stator.runtime.event_plane.zmq import ZmqEventPlane, ZmqEventSubscriber
from stator.runtime.event_plane.zmq_wire import decode_channel

NS, COMP, TOPIC = "dynamo", "backend", "kv-events"
DEADLINE_S = 5.0

Received = list[tuple[int, bytes]]


class Collector:
    """Drains a subscriber into a queue in the background (the test reads with timeouts)."""

    def __init__(self, sub: EventSubscriber) -> None:
        self.queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
        self.task = asyncio.create_task(self._run(sub))

    async def _run(self, sub: EventSubscriber) -> None:
        async for item in sub:
            self.queue.put_nowait(item)

    def drain(self) -> Received:
        items: Received = []
        while not self.queue.empty():
            items.append(self.queue.get_nowait())
        return items


async def publish_until(
    collector: Collector,
    sends: Sequence[tuple[EventPublisher, bytes]],
    done: Callable[[Received], bool],
) -> Received:
    """Publish every ``(publisher, payload)`` each 20 ms until ``done(received)``."""
    received: Received = []
    async with asyncio.timeout(DEADLINE_S):
        while not done(received):
            for pub, payload in sends:
                await pub.publish(payload)
            await asyncio.sleep(0.02)
            received += collector.drain()
    return received


async def wait_for(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(DEADLINE_S):
        while not predicate():
            await asyncio.sleep(0.01)


class Process:
    """One simulated process: its own discovery (primary lease) and event plane."""

    def __init__(self, store: MemStore) -> None:
        self.discovery = MemDiscovery(store)
        self.plane = ZmqEventPlane(self.discovery)

    @property
    def instance_id(self) -> int:
        return self.discovery.primary_lease.id

    async def close(self) -> None:
        await self.plane.close()
        await self.discovery.close()


@pytest.fixture
async def procs() -> AsyncIterator[Callable[[], Process]]:
    store = MemStore()
    made: list[Process] = []

    def make() -> Process:
        proc = Process(store)
        made.append(proc)
        return proc

    yield make
    for proc in made:
        await proc.close()


async def start(make: Callable[[], Process]) -> Process:
    proc = make()
    await proc.discovery.start()
    return proc


async def test_subscriber_receives_from_two_publishers_with_their_ids(
    procs: Callable[[], Process],
) -> None:
    a, b, sub_proc = await start(procs), await start(procs), await start(procs)
    pub_a = await a.plane.publisher(NS, COMP, TOPIC, a.instance_id)
    pub_b = await b.plane.publisher(NS, COMP, TOPIC, b.instance_id)
    collector = Collector(await sub_proc.plane.subscriber(NS, COMP, TOPIC))
    expected = {(a.instance_id, b"from-a"), (b.instance_id, b"from-b")}
    received = await publish_until(
        collector, [(pub_a, b"from-a"), (pub_b, b"from-b")], lambda r: expected <= set(r)
    )
    assert set(received) == expected


async def test_publisher_started_after_subscriber_is_found(procs: Callable[[], Process]) -> None:
    sub_proc, late = await start(procs), await start(procs)
    collector = Collector(await sub_proc.plane.subscriber(NS, COMP, TOPIC))
    await asyncio.sleep(0.05)
    pub = await late.plane.publisher(NS, COMP, TOPIC, late.instance_id)
    received = await publish_until(collector, [(pub, b"late")], bool)
    assert received[0] == (late.instance_id, b"late")


async def test_removed_publisher_is_disconnected(procs: Callable[[], Process]) -> None:
    a, b, sub_proc = await start(procs), await start(procs), await start(procs)
    pub_a = await a.plane.publisher(NS, COMP, TOPIC, a.instance_id)
    pub_b = await b.plane.publisher(NS, COMP, TOPIC, b.instance_id)
    sub = await sub_proc.plane.subscriber(NS, COMP, TOPIC)
    assert isinstance(sub, ZmqEventSubscriber)
    collector = Collector(sub)
    sends = [(pub_a, b"a"), (pub_b, b"b")]
    ids = {a.instance_id, b.instance_id}
    await publish_until(collector, sends, lambda r: ids <= {i for i, _ in r})

    # Remove only A's discovery key; its socket stays open and keeps publishing.
    await a.discovery.delete(keys.event_channel_key(NS, COMP, TOPIC, a.instance_id))
    await wait_for(lambda: len(sub.peer_addresses) == 1)
    await asyncio.sleep(0.1)
    collector.drain()  # messages already in flight before the disconnect
    received = await publish_until(
        collector, sends, lambda r: sum(i == b.instance_id for i, _ in r) >= 10
    )
    assert {i for i, _ in received} == {b.instance_id}


async def test_topics_and_components_are_isolated(procs: Callable[[], Process]) -> None:
    pub_proc, sub_proc = await start(procs), await start(procs)
    iid = pub_proc.instance_id
    wanted = await pub_proc.plane.publisher(NS, COMP, TOPIC, iid)
    others = [
        await pub_proc.plane.publisher(NS, COMP, "kv-metrics", iid),
        await pub_proc.plane.publisher(NS, COMP, TOPIC + "-x", iid),
        await pub_proc.plane.publisher(NS, "prefill", TOPIC, iid),
        await pub_proc.plane.publisher("other", COMP, TOPIC, iid),
    ]
    collector = Collector(await sub_proc.plane.subscriber(NS, COMP, TOPIC))
    sends = [(wanted, b"yes"), *((p, b"no") for p in others)]
    received = await publish_until(collector, sends, lambda r: len(r) >= 10)
    assert {payload for _, payload in received} == {b"yes"}


async def test_publisher_registers_its_address_under_the_primary_lease(
    procs: Callable[[], Process],
) -> None:
    pub_proc, sub_proc = await start(procs), await start(procs)
    sub = await sub_proc.plane.subscriber(NS, COMP, TOPIC)
    assert isinstance(sub, ZmqEventSubscriber)
    await pub_proc.plane.publisher(NS, COMP, TOPIC, pub_proc.instance_id)
    key = keys.event_channel_key(NS, COMP, TOPIC, pub_proc.instance_id)
    raw = await sub_proc.discovery.get(key)
    assert raw is not None
    address = decode_channel(raw).address
    assert address.startswith("tcp://127.0.0.1:")
    await wait_for(lambda: sub.peer_addresses == [address])
    await pub_proc.discovery.close()  # the process goes away: its lease and key go with it
    assert await sub_proc.discovery.get(key) is None
    await wait_for(lambda: sub.peer_addresses == [])


async def test_duplicate_publisher_is_rejected(procs: Callable[[], Process]) -> None:
    proc = await start(procs)
    await proc.plane.publisher(NS, COMP, TOPIC, proc.instance_id)
    with pytest.raises(ValueError, match="already exists"):
        await proc.plane.publisher(NS, COMP, TOPIC, proc.instance_id)


async def test_slow_subscriber_drops_beyond_the_hwm() -> None:
    store = MemStore()
    disc = MemDiscovery(store)
    await disc.start()
    plane = ZmqEventPlane(disc, hwm_messages=100)
    pub = await plane.publisher(NS, COMP, TOPIC, disc.primary_lease.id)
    sub = await plane.subscriber(NS, COMP, TOPIC)
    collector = Collector(sub)
    await publish_until(collector, [(pub, b"hello")], bool)
    collector.task.cancel()  # the consumer stops reading
    num_sent, payload = 20_000, b"x" * 4096
    for _ in range(num_sent):
        await pub.publish(payload)  # never blocks: the PUB socket drops instead
    num_received = 0
    async for _ in _until_quiet(sub):
        num_received += 1
    assert 0 < num_received < num_sent
    await plane.close()
    await disc.close()


async def _until_quiet(sub: EventSubscriber, quiet_s: float = 0.5) -> AsyncIterator[object]:
    iterator = aiter(sub)
    while True:
        try:
            item = await asyncio.wait_for(anext(iterator), quiet_s)
        except TimeoutError:
            return
        yield item


async def test_close_is_clean(procs: Callable[[], Process]) -> None:
    tasks_before = asyncio.all_tasks()
    pub_proc, sub_proc = await start(procs), await start(procs)
    pub = await pub_proc.plane.publisher(NS, COMP, TOPIC, pub_proc.instance_id)
    sub = await sub_proc.plane.subscriber(NS, COMP, TOPIC)
    collector = Collector(sub)
    await publish_until(collector, [(pub, b"m")], bool)

    await pub_proc.plane.close()
    prefix = keys.event_channels_prefix(NS, COMP, TOPIC)
    assert await sub_proc.discovery.get_prefix(prefix) == []
    with pytest.raises(RuntimeError, match="closed"):
        await pub.publish(b"late")

    await sub_proc.plane.close()
    await asyncio.wait_for(collector.task, DEADLINE_S)  # the iterator ended, no error
    await sub_proc.plane.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        await sub_proc.plane.subscriber(NS, COMP, TOPIC)
    await pub_proc.discovery.close()
    await sub_proc.discovery.close()
    await asyncio.sleep(0.05)
    leftover = asyncio.all_tasks() - tasks_before - {asyncio.current_task()}
    assert not [t for t in leftover if not t.done()]
