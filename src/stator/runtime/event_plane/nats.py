"""The ``nats`` event plane: topics are NATS subjects ``{namespace}.{component}.{topic}``.

Publishers publish on the subject; subscribers subscribe to it, so every publisher of the topic
in the component reaches every subscriber, on any machine, with no discovery involved. Each
message carries the publisher's instance id (see ``nats_wire``). ``subscriber()`` returns once
NATS has registered the subscription (a PING/PONG round trip), so whatever is published after
that is delivered: no "slow joiner" window as with ZMQ.

Memory is bounded: a subscriber queues at most ``max_queued_messages`` messages for its consumer
and drops newer ones beyond that (best effort, like the zmq plane's high-water mark; the KV
indexer detects gaps by event id). Publishing never blocks on subscribers; while the NATS
connection is down, nats-py buffers up to 2 MiB and further messages are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from stator.runtime.event_plane.base import EventPlane, EventPublisher, EventSubscriber
from stator.runtime.event_plane.nats_wire import decode_event, encode_event, event_subject
from stator.runtime.nats_connect import DEFAULT_CONNECT_TIMEOUT_S, connect_nats

log = logging.getLogger(__name__)

DEFAULT_MAX_QUEUED_MESSAGES = 10_000
"""Messages a subscriber holds for a slow consumer before it drops (same as zmq's HWM)."""


class NatsEventPublisher(EventPublisher):
    """Publishes one topic as one instance id."""

    def __init__(
        self,
        nc: NatsClient,
        subject: str,
        instance_id: int,
        on_close: Callable[[NatsEventPublisher], None],
    ) -> None:
        self.subject = subject
        self.instance_id = instance_id
        self._nc = nc
        self._on_close = on_close
        self._closed = False

    async def publish(self, payload: bytes) -> None:
        """Send ``payload`` to current subscribers; dropped (logged) if NATS cannot take it now.

        Raises:
            RuntimeError: the publisher is closed.
        """
        if self._closed:
            raise RuntimeError(f"event publisher on {self.subject} is closed")
        try:
            await self._nc.publish(self.subject, encode_event(self.instance_id, payload))
        except nats.errors.Error as exc:  # reconnecting with a full buffer, or closed
            log.debug("dropping an event on %s: %s", self.subject, exc)

    async def close(self) -> None:
        """Stop publishing (idempotent)."""
        if not self._closed:
            self._closed = True
            self._on_close(self)


class NatsEventSubscriber(EventSubscriber):
    """A subscription to one topic; iterate it once (one consumer) until ``close()``."""

    def __init__(
        self,
        subject: str,
        max_queued_messages: int,
        on_close: Callable[[NatsEventSubscriber], None],
    ) -> None:
        self.subject = subject
        self.num_dropped = 0
        self._queue: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue(max_queued_messages)
        self._on_close = on_close
        self._sub: Any = None
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[tuple[int, bytes]]:
        """Yield ``(publisher_instance_id, payload)`` until ``close()``."""
        while not self._closed:
            item = await self._queue.get()
            if item is None:
                return
            yield item

    async def on_msg(self, msg: Msg) -> None:
        """NATS callback: queue the decoded message, or drop it (full queue, malformed)."""
        decoded = decode_event(msg.data)
        if decoded is None:
            log.debug("dropping a malformed event on %s", msg.subject)
        elif self._queue.full():
            self.num_dropped += 1
        else:
            self._queue.put_nowait(decoded)

    async def close(self) -> None:
        """Unsubscribe; a waiting iterator ends (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._on_close(self)
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
        while self._queue.full():  # make room for the end marker
            self._queue.get_nowait()
        self._queue.put_nowait(None)


class NatsEventPlane(EventPlane):
    """Event plane on NATS (``--event-plane nats``); connects on first use.

    Args:
        nats_url: the NATS server(s), e.g. ``nats://127.0.0.1:4222``.
        max_queued_messages: per-subscriber bound (messages) before dropping.
        connect_timeout_s: limit on the first connection (s).
    """

    def __init__(
        self,
        nats_url: str,
        *,
        max_queued_messages: int = DEFAULT_MAX_QUEUED_MESSAGES,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    ) -> None:
        if max_queued_messages < 1:
            raise ValueError(f"max_queued_messages must be >= 1, got {max_queued_messages}")
        self._url = nats_url
        self._max_queued = max_queued_messages
        self._connect_timeout_s = connect_timeout_s
        self._nc: NatsClient | None = None
        self._lock = asyncio.Lock()
        self._publishers: dict[tuple[str, int], NatsEventPublisher] = {}
        self._subscribers: set[NatsEventSubscriber] = set()
        self._closed = False

    async def publisher(
        self, namespace: str, component: str, topic: str, instance_id: int
    ) -> EventPublisher:
        """A publisher of ``topic`` as ``instance_id``.

        Raises:
            ValueError: this plane already has a publisher for the same topic and instance id.
            RuntimeError: the plane is closed.
            TransportError: NATS is unreachable (names the URL).
        """
        subject = event_subject(namespace, component, topic)
        if (subject, instance_id) in self._publishers:
            raise ValueError(f"a publisher for {subject} as {instance_id:x} already exists")
        nc = await self._connection()
        pub = NatsEventPublisher(nc, subject, instance_id, self._drop_publisher)
        self._publishers[(subject, instance_id)] = pub
        return pub

    async def subscriber(self, namespace: str, component: str, topic: str) -> EventSubscriber:
        """A subscriber to ``topic`` from every publisher in ``namespace/component``; messages
        published after this returns are delivered.

        Raises:
            RuntimeError: the plane is closed.
            TransportError: NATS is unreachable (names the URL).
        """
        nc = await self._connection()
        sub = NatsEventSubscriber(
            event_subject(namespace, component, topic), self._max_queued, self._subscribers.discard
        )
        sub._sub = await nc.subscribe(sub.subject, cb=sub.on_msg)
        await nc.flush()
        self._subscribers.add(sub)
        return sub

    async def close(self) -> None:
        """Close every publisher and subscriber, then the connection (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for pub in list(self._publishers.values()):
            await pub.close()
        for sub in list(self._subscribers):
            await sub.close()
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._nc.close(), 5.0)

    async def _connection(self) -> NatsClient:
        if self._closed:
            raise RuntimeError("the nats event plane is closed")
        async with self._lock:
            if self._nc is None:
                self._nc = await connect_nats(
                    self._url, name="stator-events", connect_timeout_s=self._connect_timeout_s
                )
        return self._nc

    def _drop_publisher(self, pub: NatsEventPublisher) -> None:
        self._publishers.pop((pub.subject, pub.instance_id), None)
