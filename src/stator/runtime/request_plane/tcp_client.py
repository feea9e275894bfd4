"""``TcpRequestPlaneClient``: response streams over pooled, multiplexed tcp connections.

One connection per server address carries every stream to it. Received chunks wait in a
per-stream queue that the server fills only as far as the credit the client granted (``window``
chunks), so a slow consumer holds at most ``window`` chunks in memory and slows its own producer
without stalling other streams on the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncGenerator, Callable

from stator.errors import (
    InstanceLostError,
    NoInstanceError,
    RemoteHandlerError,
    RequestTimeoutError,
    StatorError,
    StreamCancelledError,
)
from stator.runtime.request_plane.base import RequestPlaneClient
from stator.runtime.request_plane.connection import FramedProtocol
from stator.runtime.request_plane.framing import (
    DEFAULT_MAX_FRAME_BYTES,
    ERR_HANDLER,
    ERR_NO_ENDPOINT,
    ERR_STOPPING,
    Cancel,
    Credit,
    Data,
    End,
    Error,
    Frame,
    FrameError,
    Request,
)
from stator.runtime.request_plane.tcp_address import parse_tcp_address

DEFAULT_WINDOW = 256
"""Default per-stream credit window (chunks the server may send ahead of the consumer)."""

DEFAULT_CONNECT_TIMEOUT_S = 5.0
"""How long to wait for a tcp connect before ``NoInstanceError`` (s)."""


class _ClientStream:
    """Client side of one stream: received chunks, how it ended, and credit bookkeeping."""

    __slots__ = ("chunks", "error", "finished", "grant_every", "num_unacked", "stream_id", "waiter")

    def __init__(self, stream_id: int, window: int) -> None:
        self.stream_id = stream_id
        self.chunks: deque[bytes] = deque()
        self.finished = False
        self.error: StatorError | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.num_unacked = 0
        self.grant_every = max(1, window // 2)

    def wake(self) -> None:
        """Resume the consumer if it waits for a chunk."""
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def finish(self, error: StatorError | None) -> None:
        """The stream ended (``error``: how it failed, ``None``: normally)."""
        self.finished = True
        self.error = error
        self.wake()


class _ClientConnection(FramedProtocol):
    """One connection to one server: opens streams and routes frames back to them."""

    def __init__(
        self, address: str, on_closed: Callable[[_ClientConnection], None], max_frame_bytes: int
    ) -> None:
        super().__init__(max_frame_bytes)
        self.address = address
        self._on_closed = on_closed
        self._streams: dict[int, _ClientStream] = {}
        self._next_stream_id = 1

    @property
    def num_streams(self) -> int:
        """Streams open on this connection."""
        return len(self._streams)

    def open_stream(
        self, endpoint_path: str, payload: bytes, request_id: str, window: int
    ) -> _ClientStream:
        """Register a new stream and send its ``Request`` frame."""
        sid = self._next_stream_id
        self._next_stream_id += 1
        stream = _ClientStream(sid, window)
        self._streams[sid] = stream
        self.send(Request(sid, endpoint_path, request_id, window, payload))
        return stream

    def consumed(self, stream: _ClientStream) -> None:
        """The consumer took one chunk: grant credit back in batches of ``window/2``."""
        stream.num_unacked += 1
        if stream.num_unacked >= stream.grant_every and not stream.finished:
            self.send(Credit(stream.stream_id, stream.num_unacked))
            stream.num_unacked = 0

    def close_stream(self, stream: _ClientStream) -> None:
        """The consumer is done with ``stream``; cancel it on the server if it is still open."""
        if self._streams.pop(stream.stream_id, None) is not None and not stream.finished:
            self.send(Cancel(stream.stream_id, "cancelled by client"))

    def frame_received(self, frame: Frame) -> None:
        """Route a server frame to its stream (frames of forgotten streams are dropped)."""
        stream = self._streams.get(frame.stream_id)
        if stream is None:
            return
        kind = type(frame)
        if kind is Data:
            stream.chunks.append(frame.payload)  # type: ignore[union-attr]
            stream.wake()
            return
        if kind is End:
            error = None
        elif kind is Error:
            error = self._map_error(frame)  # type: ignore[arg-type]
        elif kind is Cancel:
            error = StreamCancelledError(
                f"{self.address} stopped the stream: {frame.reason}"  # type: ignore[union-attr]
            )
        else:
            self.abort(FrameError(f"unexpected {kind.__name__} frame from server"))
            return
        del self._streams[frame.stream_id]
        stream.finish(error)

    def _map_error(self, frame: Error) -> StatorError:
        where = f"{self.address}: {frame.message}"
        if frame.code in (ERR_NO_ENDPOINT, ERR_STOPPING):
            return NoInstanceError(where)
        if frame.code == ERR_HANDLER:
            return RemoteHandlerError(
                where, remote_type=frame.remote_type or "Exception", status_code=frame.status_code
            )
        return FrameError(f"{where} ({frame.code})")

    def connection_closed(self, exc: Exception | None) -> None:
        """Every open stream fails with ``InstanceLostError``."""
        reason = f": {exc}" if exc is not None else ""
        self.fail_all(InstanceLostError(f"connection to {self.address} lost{reason}"))
        self._on_closed(self)

    def fail_all(self, error: StatorError) -> None:
        """End every open stream with ``error``."""
        streams, self._streams = self._streams, {}
        for stream in streams.values():
            stream.finish(error)


class TcpRequestPlaneClient(RequestPlaneClient):
    """Request-plane client: one pooled connection per server address, shared by all streams.

    ``window``: per-stream credit (chunks buffered ahead of the consumer, >= 1).
    ``connect_timeout_s``: tcp connect limit (s). Must be used from one event loop.
    """

    def __init__(
        self,
        *,
        window: int = DEFAULT_WINDOW,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1 chunk, got {window}")
        self._window = window
        self._connect_timeout_s = connect_timeout_s
        self._max_frame_bytes = max_frame_bytes
        self._connections: dict[str, _ClientConnection] = {}
        self._connecting: dict[str, asyncio.Task[_ClientConnection]] = {}
        self._closed = False

    @property
    def num_connections(self) -> int:
        """Open connections (one per server address in use)."""
        return len(self._connections)

    async def stream(
        self,
        transport_address: str,
        endpoint_path: str,
        payload: bytes,
        *,
        request_id: str,
        timeout_s: float | None = None,
    ) -> AsyncGenerator[bytes, None]:
        """Call ``endpoint_path`` at ``transport_address`` and yield its response chunks.

        Raises ``NoInstanceError`` (cannot connect, no such endpoint, server stopping),
        ``InstanceLostError`` (connection dropped), ``RequestTimeoutError`` (no chunk within
        ``timeout_s`` seconds), ``StreamCancelledError`` (the server stopped the stream) or
        ``RemoteHandlerError`` (the handler raised). Leaving early (``aclose()``, ``break`` or
        task cancellation) cancels the handler on the server.
        """
        conn = self._connections.get(transport_address)
        if conn is None or not conn.is_open:
            conn = await self._connection(transport_address)
        stream = conn.open_stream(endpoint_path, payload, request_id, self._window)
        chunks = stream.chunks
        try:
            while True:
                if chunks:
                    chunk = chunks.popleft()
                    conn.consumed(stream)
                    yield chunk
                elif stream.finished:
                    if stream.error is not None:
                        raise stream.error
                    return
                else:
                    await self._wait(stream, timeout_s)
        finally:
            conn.close_stream(stream)

    async def _wait(self, stream: _ClientStream, timeout_s: float | None) -> None:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        stream.waiter = waiter
        if timeout_s is None:
            await waiter
            return
        timer = loop.call_later(timeout_s, _expire, waiter, timeout_s)
        try:
            await waiter
        finally:
            timer.cancel()

    async def _connection(self, address: str) -> _ClientConnection:
        if self._closed:
            raise NoInstanceError(f"request-plane client is closed (connecting to {address})")
        conn = self._connections.get(address)
        if conn is not None and conn.is_open:
            return conn
        pending = self._connecting.get(address)
        if pending is None:
            pending = asyncio.get_running_loop().create_task(self._connect(address))
            self._connecting[address] = pending
            pending.add_done_callback(lambda _: self._connecting.pop(address, None))
        return await asyncio.shield(pending)

    async def _connect(self, address: str) -> _ClientConnection:
        host, port = parse_tcp_address(address)
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _ClientConnection(address, self._forget, self._max_frame_bytes),
                    host,
                    port,
                ),
                self._connect_timeout_s,
            )
        except (OSError, TimeoutError) as exc:
            raise NoInstanceError(f"cannot connect to {address}: {exc or 'timed out'}") from exc
        self._connections[address] = conn
        return conn

    def _forget(self, conn: _ClientConnection) -> None:
        if self._connections.get(conn.address) is conn:
            del self._connections[conn.address]

    async def close(self) -> None:
        """Close every connection; open streams raise ``InstanceLostError``."""
        self._closed = True
        for task in list(self._connecting.values()):
            task.cancel()
        for conn in list(self._connections.values()):
            conn.fail_all(InstanceLostError(f"request-plane client closed ({conn.address})"))
            conn.close()
        self._connections.clear()
        with contextlib.suppress(Exception):
            await asyncio.sleep(0)


def _expire(waiter: asyncio.Future[None], timeout_s: float) -> None:
    if not waiter.done():
        waiter.set_exception(RequestTimeoutError(f"no response chunk within {timeout_s} s"))
