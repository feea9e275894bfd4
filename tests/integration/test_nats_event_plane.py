"""The nats event plane on a real nats-server: the backend-neutral tests of
``test_zmq_event_plane`` (re-run here with a nats ``procs`` fixture), then NATS specifics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from stator.errors import TransportError
from stator.runtime.discovery.mem import MemDiscovery, MemStore
from stator.runtime.event_plane.nats import NatsEventPlane, NatsEventSubscriber
from stator.testing.services import free_port
from tests.integration import test_zmq_event_plane as neutral
from tests.integration.test_zmq_event_plane import COMP, NS, TOPIC, Collector

# The backend-neutral tests, collected again in this module with the nats fixture below.
test_subscriber_receives_from_two_publishers_with_their_ids = (
    neutral.test_subscriber_receives_from_two_publishers_with_their_ids
)
test_publisher_started_after_subscriber_is_found = (
    neutral.test_publisher_started_after_subscriber_is_found
)
test_topics_and_components_are_isolated = neutral.test_topics_and_components_are_isolated
test_duplicate_publisher_is_rejected = neutral.test_duplicate_publisher_is_rejected
test_close_is_clean = neutral.test_close_is_clean


class Process:
    """One simulated process: its own discovery (for the instance id) and nats event plane."""

    def __init__(self, store: MemStore, nats_url: str) -> None:
        self.discovery = MemDiscovery(store)
        self.plane = NatsEventPlane(nats_url)

    @property
    def instance_id(self) -> int:
        return self.discovery.primary_lease.id

    async def close(self) -> None:
        await self.plane.close()
        await self.discovery.close()


@pytest.fixture
async def procs(nats_url: str) -> AsyncIterator[Callable[[], Process]]:
    store = MemStore()
    made: list[Process] = []

    def make() -> Process:
        proc = Process(store, nats_url)
        made.append(proc)
        return proc

    yield make
    for proc in made:
        await proc.close()


async def next_item(collector: Collector, timeout_s: float = 3.0) -> tuple[int, bytes]:
    return await asyncio.wait_for(collector.queue.get(), timeout_s)


async def test_no_message_published_after_subscribing_is_lost(nats_url: str) -> None:
    """Unlike ZMQ, the subscription is in place when ``subscriber()`` returns."""
    sub_plane, pub_plane = NatsEventPlane(nats_url), NatsEventPlane(nats_url)
    try:
        collector = Collector(await sub_plane.subscriber(NS, COMP, TOPIC))
        pub = await pub_plane.publisher(NS, COMP, TOPIC, 42)
        for i in range(100):
            await pub.publish(b"%d" % i)
        got = [await next_item(collector) for _ in range(100)]
        assert got == [(42, b"%d" % i) for i in range(100)]
    finally:
        await pub_plane.close()
        await sub_plane.close()


async def test_subjects_are_sanitised(nats_url: str) -> None:
    plane = NatsEventPlane(nats_url)
    try:
        sub = await plane.subscriber("ns.with.dots", "comp*", "kv events")
        assert isinstance(sub, NatsEventSubscriber)
        assert sub.subject == "ns_with_dots.comp_.kv_events"
        collector = Collector(sub)
        pub = await plane.publisher("ns.with.dots", "comp*", "kv events", 7)
        await pub.publish(b"x")
        assert await next_item(collector) == (7, b"x")
    finally:
        await plane.close()


async def test_slow_subscriber_is_bounded_and_drops(nats_url: str) -> None:
    plane = NatsEventPlane(nats_url, max_queued_messages=100)
    try:
        sub = await plane.subscriber(NS, COMP, TOPIC)
        assert isinstance(sub, NatsEventSubscriber)
        pub = await plane.publisher(NS, COMP, TOPIC, 1)
        num_sent = 2000
        for i in range(num_sent):
            await pub.publish(b"%d" % i)
        async with asyncio.timeout(5.0):
            while sub.num_dropped + sub._queue.qsize() < num_sent:
                await asyncio.sleep(0.01)
        assert sub._queue.qsize() == 100
        assert sub.num_dropped == num_sent - 100
        received = []
        async for item in sub:
            received.append(item)
            if len(received) == 100:
                break
        assert received == [(1, b"%d" % i) for i in range(100)]  # the oldest are kept
    finally:
        await plane.close()


async def test_unreachable_nats_is_a_transport_error() -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    plane = NatsEventPlane(url, connect_timeout_s=0.5)
    with pytest.raises(TransportError, match=url):
        await plane.subscriber(NS, COMP, TOPIC)
    await plane.close()
