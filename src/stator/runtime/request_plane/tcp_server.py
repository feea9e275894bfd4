"""``TcpRequestPlaneServer``: serves async-generator handlers over framed tcp connections.

Each accepted connection is a ``_ServerConnection``; each ``Request`` frame starts one task that
runs the handler and sends its chunks as ``Data`` frames, spending one unit of the stream's
credit per chunk and suspending the handler when the credit is spent (see ``framing``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from stator.runtime.request_plane.base import RawHandler, RequestContext, RequestPlaneServer
from stator.runtime.request_plane.connection import FramedProtocol
from stator.runtime.request_plane.framing import (
    DEFAULT_MAX_FRAME_BYTES,
    ERR_NO_ENDPOINT,
    ERR_PROTOCOL,
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
from stator.runtime.request_plane.served_stream import ServedStream, error_frame
from stator.runtime.request_plane.tcp_address import format_tcp_address

logger = logging.getLogger(__name__)

_CANCEL_GRACE_S = 5.0
"""After cancelling handlers at the end of a drain, how long to wait for them to unwind (s)."""


_ServerStream = ServedStream[int]
"""A tcp stream is keyed by its stream id on the connection."""


class _ServerConnection(FramedProtocol):
    """One client connection: routes frames to streams and runs their handlers."""

    def __init__(self, server: TcpRequestPlaneServer, max_frame_bytes: int) -> None:
        super().__init__(max_frame_bytes)
        self._server = server
        self.streams: dict[int, _ServerStream] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Register with the server (which closes us at stop)."""
        super().connection_made(transport)
        self._server._connections.add(self)

    def frame_received(self, frame: Frame) -> None:
        """Dispatch ``Request``, ``Credit`` and ``Cancel``; anything else breaks the protocol."""
        kind = type(frame)
        if kind is Credit:
            stream = self.streams.get(frame.stream_id)
            if stream is not None:
                stream.add_credit(frame.n)  # type: ignore[union-attr]
        elif kind is Request:
            self._open(frame)  # type: ignore[arg-type]
        elif kind is Cancel:
            stream = self.streams.get(frame.stream_id)
            if stream is not None:
                stream.cancel("cancelled by client", notify_client=False)
        else:
            self.abort(FrameError(f"unexpected {kind.__name__} frame from client"))

    def connection_closed(self, exc: Exception | None) -> None:
        """The client went away: cancel all of its handlers."""
        self._server._connections.discard(self)
        for stream in list(self.streams.values()):
            stream.cancel("client disconnected", notify_client=False)

    def _open(self, request: Request) -> None:
        sid = request.stream_id
        if sid in self.streams:
            self.send(Error(sid, ERR_PROTOCOL, f"stream id {sid} is already open"))
            return
        if self._server.is_stopping:
            self.send(Error(sid, ERR_STOPPING, "server is shutting down"))
            return
        handler = self._server.handler_for(request.endpoint)
        if handler is None:
            self.send(Error(sid, ERR_NO_ENDPOINT, f"no endpoint {request.endpoint!r} here"))
            return
        stream = _ServerStream(sid, RequestContext(request.request_id), max(1, request.window))
        self.streams[sid] = stream
        stream.task = self._loop.create_task(self._serve(stream, handler, request.payload))
        stream.task.add_done_callback(lambda _: self._stream_done(stream))
        self._server._inflight.add(stream)

    def _stream_done(self, stream: _ServerStream) -> None:
        """Forget a finished stream; a task cancelled before it ran still tells the client."""
        self.streams.pop(stream.key, None)
        self._server._inflight.discard(stream)
        if not stream.replied and stream.notify_client:
            self.send(Cancel(stream.key, stream.cancel_reason or "cancelled by server"))

    async def _serve(self, stream: _ServerStream, handler: RawHandler, payload: bytes) -> None:
        chunks: AsyncIterator[bytes] | None = None
        sid = stream.key
        try:
            chunks = handler(payload, stream.ctx)
            async for chunk in chunks:
                if type(chunk) is not bytes:
                    chunk = _as_bytes(chunk)
                if stream.credit <= 0:
                    await stream.wait_credit()
                stream.credit -= 1
                self.send(Data(sid, chunk))
                if self.write_paused:
                    await self.wait_writable()
            self._reply(stream, End(sid))
        except asyncio.CancelledError:
            if stream.notify_client:
                self._reply(stream, Cancel(sid, stream.cancel_reason or "cancelled by server"))
        except Exception as exc:
            self._reply(stream, error_frame(sid, exc))
        finally:
            await _close_iterator(chunks)

    def _reply(self, stream: _ServerStream, frame: Frame) -> None:
        """Send the stream's last frame (``End``, ``Error`` or ``Cancel``)."""
        stream.replied = True
        self.send(frame)


def _as_bytes(chunk: object) -> bytes:
    """Accept bytes-like chunks; anything else is a handler bug (``TypeError``)."""
    if isinstance(chunk, bytes | bytearray | memoryview):
        return bytes(chunk)
    raise TypeError(f"handler yielded {type(chunk).__name__}, expected bytes")


async def _close_iterator(chunks: AsyncIterator[bytes] | None) -> None:
    """Run the handler's ``finally`` blocks (async generators need ``aclose``)."""
    aclose = getattr(chunks, "aclose", None)
    if aclose is None:
        return
    try:
        await aclose()
    except Exception:  # the handler's cleanup failed; the stream is over anyway
        logger.exception("request-plane handler raised while closing")


class TcpRequestPlaneServer(RequestPlaneServer):
    """Request-plane server on one tcp port.

    ``host``/``port``: where to listen (port 0: an ephemeral port). ``advertise_host``: the host
    put in ``transport_address`` (default: ``host``; set it when listening on ``0.0.0.0``).
    ``max_frame_bytes``: largest accepted frame (requests included).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        advertise_host: str | None = None,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    ) -> None:
        self._host = host
        self._port = port
        self._advertise_host = advertise_host or host
        self._max_frame_bytes = max_frame_bytes
        self._handlers: dict[str, RawHandler] = {}
        self._server: asyncio.Server | None = None
        self._connections: set[_ServerConnection] = set()
        self._inflight: set[_ServerStream] = set()
        self._stopping = False

    async def start(self) -> None:
        """Bind and listen. Raises ``OSError`` if the port cannot be bound."""
        if self._server is not None:
            raise RuntimeError("server already started")
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _ServerConnection(self, self._max_frame_bytes), self._host, self._port
        )
        self._port = self._server.sockets[0].getsockname()[1]

    @property
    def transport_address(self) -> str:
        """``tcp://advertise_host:port``. Raises ``RuntimeError`` before ``start``."""
        if self._server is None:
            raise RuntimeError("transport_address is known only after start()")
        return format_tcp_address(self._advertise_host, self._port)

    @property
    def is_stopping(self) -> bool:
        """True once ``stop`` began: new streams are refused."""
        return self._stopping

    @property
    def num_inflight(self) -> int:
        """Streams whose handler is still running."""
        return len(self._inflight)

    @property
    def num_connections(self) -> int:
        """Open client connections."""
        return len(self._connections)

    def register(self, endpoint_path: str, handler: RawHandler) -> None:
        """Serve ``handler`` at ``endpoint_path``. Raises ``ValueError`` if already registered."""
        if endpoint_path in self._handlers:
            raise ValueError(f"endpoint {endpoint_path!r} is already registered")
        self._handlers[endpoint_path] = handler

    def unregister(self, endpoint_path: str) -> None:
        """Refuse new requests for ``endpoint_path`` (unknown paths are ignored)."""
        self._handlers.pop(endpoint_path, None)

    def handler_for(self, endpoint_path: str) -> RawHandler | None:
        """The handler registered at ``endpoint_path``, if any."""
        return self._handlers.get(endpoint_path)

    async def stop(self, drain_timeout_s: float = 30.0) -> None:
        """Stop listening and refuse new streams; wait up to ``drain_timeout_s`` (s) for
        in-flight streams, then cancel the rest (clients get ``StreamCancelledError``) and close
        every connection."""
        if self._stopping:
            return
        self._stopping = True
        if self._server is not None:
            self._server.close()
        await self._drain(drain_timeout_s)
        for conn in list(self._connections):
            conn.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), _CANCEL_GRACE_S)

    async def _drain(self, drain_timeout_s: float) -> None:
        tasks = [s.task for s in self._inflight if s.task is not None]
        if tasks and drain_timeout_s > 0:
            await asyncio.wait(tasks, timeout=drain_timeout_s)
        remaining = list(self._inflight)
        for stream in remaining:
            stream.cancel("server stopping", notify_client=True)
        tasks = [s.task for s in remaining if s.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=_CANCEL_GRACE_S)
