"""``FramedProtocol``: an asyncio Protocol that speaks frames, shared by the tcp client and server.

Writes are coalesced: ``send`` appends the encoded frame to a buffer and, once per event-loop
tick, ``_flush`` hands the whole buffer to the transport in one ``write`` call. Reads decode every
complete frame of a read and hand them to ``frame_received`` one by one.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from abc import ABC, abstractmethod
from typing import cast

from stator.runtime.request_plane.framing import (
    DEFAULT_MAX_FRAME_BYTES,
    Frame,
    FrameDecoder,
    FrameError,
    encode_frame_into,
)

FLUSH_BYTES = 256 * 1024
"""Coalesced frames are written at the end of the event-loop tick, or as soon as this many
bytes are queued (so one tick's output is bounded and the transport can push back)."""

KEEPALIVE_IDLE_S = 10
"""Idle seconds before TCP keepalive probes start: a peer whose host vanished without a FIN or
RST (power loss, partition) is detected after about idle + interval * count seconds."""
KEEPALIVE_INTERVAL_S = 5
KEEPALIVE_COUNT = 3


def _enable_keepalive(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_COUNT)


class FramedProtocol(asyncio.Protocol, ABC):
    """Frame I/O over one stream transport. Subclasses implement ``frame_received`` and
    ``connection_closed`` (called once, with the reason, when the connection is gone)."""

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self._loop = asyncio.get_running_loop()
        self._decoder = FrameDecoder(max_frame_bytes)
        self._transport: asyncio.Transport | None = None
        self._wbuf = bytearray()
        self._flush_scheduled = False
        self._closed = False
        self._abort_reason: Exception | None = None
        self.write_paused = False
        self._writable_waiters: list[asyncio.Future[None]] = []

    @property
    def is_open(self) -> bool:
        """True while frames can still be sent."""
        return self._transport is not None and not self._closed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport and disable Nagle (frames are small and latency-bound)."""
        self._transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # not a TCP socket (e.g. a unix socket), or an OS without these options: skip
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                _enable_keepalive(sock)

    def data_received(self, data: bytes) -> None:
        """Decode the frames in ``data``; a protocol error closes the connection."""
        try:
            frames = self._decoder.feed(data)
        except FrameError as exc:
            self.abort(exc)
            return
        handle = self.frame_received
        for frame in frames:
            handle(frame)

    def eof_received(self) -> bool:
        """The peer closed its side: close ours too (``connection_lost`` follows)."""
        return False

    def pause_writing(self) -> None:
        """The transport's buffer is above its high-water mark: producers should wait."""
        self.write_paused = True

    def resume_writing(self) -> None:
        """The transport's buffer drained: wake producers waiting in ``wait_writable``."""
        self.write_paused = False
        waiters, self._writable_waiters = self._writable_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait_writable(self) -> None:
        """Wait until the transport accepts more data (returns at once if it does, or if the
        connection is closed). Bounds the bytes queued in the kernel and transport buffers."""
        while self.write_paused and not self._closed:
            waiter = self._loop.create_future()
            self._writable_waiters.append(waiter)
            await waiter

    def connection_lost(self, exc: Exception | None) -> None:
        """Mark closed, release writers, and tell the subclass."""
        self._closed = True
        self._wbuf.clear()
        self.resume_writing()
        self.connection_closed(exc or self._abort_reason)

    def send(self, frame: Frame) -> None:
        """Queue ``frame``; it is written with the others of this event-loop tick."""
        if self._closed:
            return
        encode_frame_into(frame, self._wbuf)
        if len(self._wbuf) >= FLUSH_BYTES:
            self._flush()  # may call pause_writing at once
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._closed or not self._wbuf or self._transport is None:
            return
        data, self._wbuf = self._wbuf, bytearray()
        self._transport.write(data)

    def close(self) -> None:
        """Write what is queued, then close gracefully."""
        if self._transport is None or self._closed:
            return
        self._flush()
        self._closed = True
        self._transport.close()

    def abort(self, exc: Exception | None = None) -> None:
        """Drop the connection now, without flushing; ``connection_closed`` gets ``exc``."""
        if self._transport is None:
            return
        self._closed = True
        self._abort_reason = exc
        self._transport.abort()

    @abstractmethod
    def frame_received(self, frame: Frame) -> None:
        """Handle one decoded frame."""

    @abstractmethod
    def connection_closed(self, exc: Exception | None) -> None:
        """The connection is gone (``exc``: why, or ``None`` for a clean close)."""
