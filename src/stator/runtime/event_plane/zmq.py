"""The ``zmq`` event plane: ZMQ PUB/SUB on one machine, publishers found through discovery.

A publisher binds a PUB socket on an ephemeral port of ``advertise_host`` and registers its
address at ``v1/event_channels/{ns}/{comp}/{topic}/{instance_id}`` under the discovery's primary
lease (so it vanishes with the process). A subscriber watches that prefix and connects its SUB
socket to every publisher present and future, disconnecting from removed ones.

Memory is bounded by ZMQ high-water marks (``HWM_MESSAGES`` messages per peer queue, both sides):
PUB sockets never block; when a subscriber falls behind, messages to it beyond the HWM are
dropped. Delivery is best effort, and a new subscriber misses what is published before its
connection and subscription reach the publisher (ZMQ's "slow joiner"); consumers that need
completeness detect gaps (KV event ids).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import msgspec
import zmq
import zmq.asyncio

from stator.errors import ConfigError
from stator.runtime.discovery import keys
from stator.runtime.discovery.base import Discovery, WatchEvent, WatchEventKind
from stator.runtime.event_plane.base import EventPlane, EventPublisher, EventSubscriber
from stator.runtime.event_plane.zmq_wire import (
    ZmqChannel,
    decode_channel,
    decode_frames,
    encode_channel,
    encode_frames,
)

log = logging.getLogger(__name__)

HWM_MESSAGES = 10_000
"""ZMQ SNDHWM/RCVHWM (messages): per-peer queue bound; beyond it a slow subscriber drops."""


class ZmqEventPublisher(EventPublisher):
    """A PUB socket for one topic, registered in discovery (see module doc)."""

    def __init__(
        self,
        sock: zmq.asyncio.Socket,
        discovery: Discovery,
        key: str,
        topic: str,
        instance_id: int,
        on_close: Callable[[ZmqEventPublisher], None],
    ) -> None:
        self.key = key
        self._sock = sock
        self._discovery = discovery
        self._topic = topic.encode()
        self._instance_id = instance_id
        self._on_close = on_close
        self._closed = False

    async def publish(self, payload: bytes) -> None:
        """Send ``payload`` to connected subscribers; never blocks (drops beyond the HWM).

        Raises:
            RuntimeError: the publisher is closed.
        """
        if self._closed:
            raise RuntimeError(f"event publisher {self.key} is closed")
        await self._sock.send_multipart(encode_frames(self._topic, self._instance_id, payload))

    async def close(self) -> None:
        """Remove the discovery key (subscribers disconnect), then close the socket."""
        if self._closed:
            return
        self._closed = True
        self._on_close(self)
        try:
            await self._discovery.delete(self.key)
        finally:
            self._sock.close(linger=0)


class ZmqEventSubscriber(EventSubscriber):
    """A SUB socket for one topic that follows the publishers registered under ``prefix``.

    Iterate it once (one consumer); iteration ends when ``close()`` is called.
    """

    def __init__(
        self,
        sock: zmq.asyncio.Socket,
        discovery: Discovery,
        prefix: str,
        topic: str,
        on_close: Callable[[ZmqEventSubscriber], None],
    ) -> None:
        self._sock = sock
        self._topic = topic.encode()
        self._on_close = on_close
        self._peers: dict[str, str] = {}
        self._closed = False
        self._watch = discovery.watch_prefix(prefix)
        self._follower = asyncio.create_task(self._follow(), name=f"zmq-sub-watch {prefix}")

    @property
    def peer_addresses(self) -> list[str]:
        """Addresses of the publishers currently connected (sorted)."""
        return sorted(self._peers.values())

    async def __aiter__(self) -> AsyncIterator[tuple[int, bytes]]:
        """Yield ``(publisher_instance_id, payload)`` until ``close()``."""
        while not self._closed:
            frames = await self._recv()
            if frames is None:
                return
            decoded = decode_frames(frames, self._topic)
            if decoded is None:
                log.debug("dropping malformed event-plane message (%d frames)", len(frames))
                continue
            yield decoded

    async def _recv(self) -> list[bytes] | None:
        """The next message, or ``None`` once closed (closing cancels a pending receive)."""
        try:
            return await self._sock.recv_multipart()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._closed and (task is None or task.cancelling() == 0):
                return None
            raise
        except zmq.ZMQError:
            if self._closed:
                return None
            raise

    async def close(self) -> None:
        """Stop following discovery and close the socket (a waiting iterator ends)."""
        if self._closed:
            return
        self._closed = True
        self._on_close(self)
        self._follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._follower
        aclose = getattr(self._watch, "aclose", None)
        if aclose is not None:
            await aclose()
        self._sock.close(linger=0)

    async def _follow(self) -> None:
        try:
            async for event in self._watch:
                self._apply(event)
        except Exception:
            log.exception("event-plane discovery watch failed; no longer following publishers")

    def _apply(self, event: WatchEvent) -> None:
        if event.kind is WatchEventKind.DELETE or event.value is None:
            self._disconnect(event.key)
            return
        try:
            channel = decode_channel(event.value)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.warning("ignoring bad event channel record at %s: %s", event.key, exc)
            return
        if self._peers.get(event.key) != channel.address:
            self._disconnect(event.key)
            self._sock.connect(channel.address)
            self._peers[event.key] = channel.address

    def _disconnect(self, key: str) -> None:
        address = self._peers.pop(key, None)
        if address is not None:
            with contextlib.suppress(zmq.ZMQError):  # ENOENT: already gone
                self._sock.disconnect(address)


class ZmqEventPlane(EventPlane):
    """Event plane over ZMQ PUB/SUB; publisher addresses live in ``discovery``.

    Args:
        discovery: a started discovery; publishers register under its primary lease.
        advertise_host: IP (or interface) publishers bind to and advertise
            (``--advertise-host``).
        hwm_messages: ZMQ send/receive high-water mark per peer (messages).
    """

    def __init__(
        self,
        discovery: Discovery,
        advertise_host: str = "127.0.0.1",
        *,
        hwm_messages: int = HWM_MESSAGES,
    ) -> None:
        if hwm_messages < 1:
            raise ValueError(f"hwm_messages must be >= 1, got {hwm_messages}")
        self._discovery = discovery
        self._host = advertise_host
        self._hwm = hwm_messages
        self._closed = False
        self._ctx = zmq.asyncio.Context()
        self._publishers: dict[str, ZmqEventPublisher] = {}
        self._subscribers: set[ZmqEventSubscriber] = set()

    async def publisher(
        self, namespace: str, component: str, topic: str, instance_id: int
    ) -> EventPublisher:
        """Bind a PUB socket and register it.

        Raises:
            ValueError: this plane already has a publisher for the same topic and instance id.
            RuntimeError: the plane is closed.
            ConfigError: ``advertise_host`` cannot be bound (names ``--advertise-host``).
        """
        key = keys.event_channel_key(namespace, component, topic, instance_id)
        if key in self._publishers:
            raise ValueError(f"a publisher for {key} already exists in this process")
        sock = self._socket(zmq.PUB, zmq.SNDHWM)
        try:
            port = sock.bind_to_random_port(f"tcp://{self._host}")
            address = f"tcp://{self._host}:{port}"
            await self._discovery.put(key, encode_channel(ZmqChannel(address)))
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            raise ConfigError("--advertise-host", f"cannot bind {self._host!r}: {exc}") from exc
        except BaseException:
            sock.close(linger=0)
            raise
        pub = ZmqEventPublisher(sock, self._discovery, key, topic, instance_id, self._drop_pub)
        self._publishers[key] = pub
        return pub

    async def subscriber(self, namespace: str, component: str, topic: str) -> EventSubscriber:
        """A SUB socket following every publisher of ``topic`` in ``namespace/component``.

        Connections are made in the background as discovery reports publishers.
        """
        sock = self._socket(zmq.SUB, zmq.RCVHWM)
        sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
        prefix = keys.event_channels_prefix(namespace, component, topic)
        sub = ZmqEventSubscriber(sock, self._discovery, prefix, topic, self._subscribers.discard)
        self._subscribers.add(sub)
        return sub

    async def close(self) -> None:
        """Close every publisher and subscriber of this plane, then the ZMQ context (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for pub in list(self._publishers.values()):
            await pub.close()
        for sub in list(self._subscribers):
            await sub.close()
        self._ctx.destroy(linger=0)

    def _socket(self, kind: int, hwm_option: int) -> zmq.asyncio.Socket:
        if self._closed:
            raise RuntimeError("the zmq event plane is closed")
        sock = self._ctx.socket(kind)
        sock.setsockopt(hwm_option, self._hwm)
        sock.setsockopt(zmq.LINGER, 0)
        return sock

    def _drop_pub(self, pub: ZmqEventPublisher) -> None:
        self._publishers.pop(pub.key, None)
