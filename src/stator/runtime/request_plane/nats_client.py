"""``NatsRequestPlaneClient``: response streams over NATS (see ``nats_subjects`` for subjects).

One NATS connection and one inbox subscription ``I.*`` carry every stream of the client.
Received chunks wait in a per-stream queue that the server fills only as far as the credit the
client granted (``window`` chunks), as on the tcp plane. Failure detection:

- no subscriber for the request subject → NATS's 503 on the reply subject → ``NoInstanceError``;
- a server silent for ``probe_interval_s`` while streams to it are open is probed
  (``nats_liveness``); no responders (its process is gone) or no answer within
  ``probe_timeout_s`` → ``InstanceLostError`` for its streams (a SIGKILLed server is noticed
  within about ``2 * probe_interval_s``);
- the NATS connection drops → ``InstanceLostError`` for every open stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncGenerator

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from stator.errors import (
    InstanceLostError,
    InvalidRequestError,
    NoInstanceError,
    RemoteHandlerError,
    RequestTimeoutError,
    StatorError,
    StreamCancelledError,
)
from stator.runtime.nats_connect import DEFAULT_CONNECT_TIMEOUT_S, connect_nats
from stator.runtime.request_plane.base import RequestPlaneClient
from stator.runtime.request_plane.framing import (
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
    encode_frame,
)
from stator.runtime.request_plane.nats_liveness import Liveness
from stator.runtime.request_plane.nats_outbox import Outbox
from stator.runtime.request_plane.nats_subjects import (
    CONTROL_TOKEN,
    FRAMES_TOKEN,
    NO_RESPONDERS_STATUS,
    PING_TOKEN,
    decode_batch,
    frame_decoder,
    parse_nats_address,
    request_subject,
)

log = logging.getLogger(__name__)

DEFAULT_WINDOW = 256
"""Default per-stream credit window (chunks the server may send ahead of the consumer)."""
DEFAULT_PROBE_INTERVAL_S = 0.5
"""A server silent for this long (s) while streams to it are open is probed."""
DEFAULT_PROBE_TIMEOUT_S = 3.0
"""A probe unanswered for this long (s) counts the server as lost."""


class _Stream:
    """Client side of one stream: received chunks, how it ended, credit bookkeeping."""

    __slots__ = (
        "address",
        "chunks",
        "error",
        "finished",
        "grant_every",
        "num_unacked",
        "prefix",
        "stream_id",
        "waiter",
    )

    def __init__(self, stream_id: int, address: str, prefix: str, window: int) -> None:
        self.stream_id = stream_id
        self.address = address
        self.prefix = prefix
        self.chunks: deque[bytes] = deque()
        self.finished = False
        self.error: StatorError | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.num_unacked = 0
        self.grant_every = max(1, window // 2)

    def wake(self) -> None:
        """Resume the consumer if it waits."""
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def finish(self, error: StatorError | None) -> None:
        """The stream ended (``error``: how it failed, ``None``: normally)."""
        if not self.finished:
            self.finished = True
            self.error = error
            self.wake()


class NatsRequestPlaneClient(RequestPlaneClient):
    """Request-plane client on NATS (``--request-plane nats``); connects on first use.

    Args:
        nats_url: the NATS server(s), e.g. ``nats://127.0.0.1:4222``.
        window: per-stream credit (chunks buffered ahead of the consumer, >= 1).
        connect_timeout_s: limit on the first connection (s).
        probe_interval_s / probe_timeout_s: server liveness probing (s, see module doc).
    """

    def __init__(
        self,
        nats_url: str,
        *,
        window: int = DEFAULT_WINDOW,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        probe_interval_s: float = DEFAULT_PROBE_INTERVAL_S,
        probe_timeout_s: float = DEFAULT_PROBE_TIMEOUT_S,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1 chunk, got {window}")
        self._url = nats_url
        self._window = window
        self._connect_timeout_s = connect_timeout_s
        self._probe_interval_s = probe_interval_s
        self._probe_timeout_s = probe_timeout_s
        self._nc: NatsClient | None = None
        self._inbox = ""
        self._outbox: Outbox | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._streams: dict[int, _Stream] = {}
        self._next_stream_id = 1
        self._liveness: Liveness | None = None
        self._decoder = frame_decoder()
        self._closed = False

    @property
    def num_streams(self) -> int:
        """Streams open now."""
        return len(self._streams)

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

        Raises ``NoInstanceError`` (no such instance or endpoint, server stopping, NATS
        unreachable), ``InstanceLostError`` (server gone mid-stream, NATS connection lost),
        ``RequestTimeoutError`` (no chunk within ``timeout_s`` s), ``StreamCancelledError``
        (the server stopped the stream), ``RemoteHandlerError`` (the handler raised) or
        ``InvalidRequestError`` (the request does not fit in a NATS message). Leaving early
        cancels the handler on the server.
        """
        prefix = parse_nats_address(transport_address)
        subject = request_subject(prefix, endpoint_path)
        nc = await self._connection()
        stream = self._open(transport_address, prefix)
        request = Request(stream.stream_id, endpoint_path, request_id, self._window, payload)
        try:
            await self._publish_request(nc, subject, encode_frame(request), stream)
            while True:
                if stream.chunks:
                    chunk = stream.chunks.popleft()
                    self._consumed(stream)
                    yield chunk
                elif stream.finished:
                    if stream.error is not None:
                        raise stream.error
                    return
                else:
                    await self._wait(stream, timeout_s)
        finally:
            self._close_stream(stream)

    async def close(self) -> None:
        """Fail open streams with ``InstanceLostError``; close the connection (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._fail(list(self._streams.values()), InstanceLostError("request-plane client closed"))
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
            with contextlib.suppress(BaseException):
                await self._connecting
        if self._liveness is not None:
            await self._liveness.close()
        if self._outbox is not None:
            await self._outbox.close()
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._nc.close(), 5.0)

    # -- connection ---------------------------------------------------------------------------

    async def _connection(self) -> NatsClient:
        if self._closed:
            raise NoInstanceError("request-plane client is closed")
        if self._nc is None:
            if self._connecting is None:
                self._connecting = asyncio.create_task(self._connect())
            try:
                await asyncio.shield(self._connecting)
            except StatorError as exc:
                self._connecting = None
                raise NoInstanceError(str(exc)) from exc
        if self._nc is None:  # the connecting task failed without an error (cannot happen)
            raise NoInstanceError(f"not connected to NATS at {self._url}")
        return self._nc

    async def _connect(self) -> None:
        nc = await connect_nats(
            self._url,
            name="stator-client",
            connect_timeout_s=self._connect_timeout_s,
            on_disconnect=self._on_disconnect,
        )
        self._inbox = nc.new_inbox()
        self._outbox = Outbox(lambda s, b, r: nc.publish(s, b, reply=r))
        await nc.subscribe(f"{self._inbox}.*", cb=self._on_msg)
        self._nc = nc
        self._liveness = Liveness(
            self._ping,
            lambda: {s.prefix for s in self._streams.values()},
            self._lose,
            interval_s=self._probe_interval_s,
            timeout_s=self._probe_timeout_s,
        )

    async def _publish_request(
        self, nc: NatsClient, subject: str, body: bytes, stream: _Stream
    ) -> None:
        reply = f"{self._inbox}.{stream.stream_id}"
        try:
            await nc.publish(subject, body, reply=reply)
        except nats.errors.MaxPayloadError:
            raise InvalidRequestError(
                f"request of {len(body)} bytes exceeds the NATS max_payload ({nc.max_payload})"
            ) from None
        except nats.errors.Error as exc:
            raise NoInstanceError(f"cannot send to {stream.address}: {exc}") from exc

    # -- streams ------------------------------------------------------------------------------

    def _open(self, address: str, prefix: str) -> _Stream:
        sid = self._next_stream_id
        self._next_stream_id += 1
        stream = _Stream(sid, address, prefix, self._window)
        self._streams[sid] = stream
        return stream

    def _consumed(self, stream: _Stream) -> None:
        """The consumer took one chunk: grant credit back in batches of ``window/2``."""
        stream.num_unacked += 1
        if stream.num_unacked >= stream.grant_every and not stream.finished:
            self._control(stream, Credit(stream.stream_id, stream.num_unacked))
            stream.num_unacked = 0

    def _close_stream(self, stream: _Stream) -> None:
        """The consumer is done; cancel the handler if the stream is still open."""
        if self._streams.pop(stream.stream_id, None) is not None and not stream.finished:
            self._control(stream, Cancel(stream.stream_id, "cancelled by client"))

    def _control(self, stream: _Stream, frame: Frame) -> None:
        if self._outbox is not None and not self._closed:
            self._outbox.send(f"{stream.prefix}.{CONTROL_TOKEN}", frame, reply=self._inbox)

    async def _wait(self, stream: _Stream, timeout_s: float | None) -> None:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        stream.waiter = waiter
        timer = (
            None if timeout_s is None else loop.call_later(timeout_s, _expire, waiter, timeout_s)
        )
        try:
            await waiter
        finally:
            if timer is not None:
                timer.cancel()

    def _fail(self, streams: list[_Stream], error: StatorError) -> None:
        for stream in streams:
            self._streams.pop(stream.stream_id, None)
            stream.finish(error)

    # -- incoming messages --------------------------------------------------------------------

    async def _on_msg(self, msg: Msg) -> None:
        token = msg.subject[len(self._inbox) + 1 :]
        if token == FRAMES_TOKEN:
            try:
                frames = decode_batch(self._decoder, msg.data)
            except FrameError as exc:
                log.warning("dropping a bad request-plane message: %s", exc)
                return
            for frame in frames:
                self._frame(frame)
        elif token == PING_TOKEN:
            if msg.reply:
                await msg.respond(b"")
        elif token.isdigit() and (msg.headers or {}).get("Status") == NO_RESPONDERS_STATUS:
            stream = self._streams.pop(int(token), None)
            if stream is not None:
                stream.finish(NoInstanceError(f"no instance at {stream.address} (no responders)"))

    def _frame(self, frame: Frame) -> None:
        stream = self._streams.get(frame.stream_id)
        if stream is None:
            return
        if self._liveness is not None:
            self._liveness.heard(stream.prefix)
        kind = type(frame)
        if kind is Data:
            stream.chunks.append(frame.payload)  # type: ignore[union-attr]
            stream.wake()
            return
        error: StatorError | None = None
        if kind is Error:
            error = _map_error(stream.address, frame)  # type: ignore[arg-type]
        elif kind is Cancel:
            reason = frame.reason  # type: ignore[union-attr]
            error = StreamCancelledError(f"{stream.address} stopped the stream: {reason}")
        elif kind is not End:
            error = FrameError(f"unexpected {kind.__name__} frame from {stream.address}")
        del self._streams[frame.stream_id]
        stream.finish(error)

    # -- liveness -----------------------------------------------------------------------------

    async def _ping(self, prefix: str, timeout_s: float) -> object:
        if self._nc is None:
            raise RuntimeError("not connected")
        return await self._nc.request(f"{prefix}.{PING_TOKEN}", b"", timeout=timeout_s)

    def _lose(self, prefix: str, why: str) -> None:
        streams = [s for s in self._streams.values() if s.prefix == prefix]
        for stream in streams:  # best effort: if the server still lives, stop its handlers
            self._control(stream, Cancel(stream.stream_id, "instance considered lost"))
            self._fail([stream], InstanceLostError(f"instance {stream.address} lost: {why}"))

    async def _on_disconnect(self) -> None:
        if not self._closed:
            error = InstanceLostError(f"connection to NATS at {self._url} lost")
            self._fail(list(self._streams.values()), error)


def _map_error(address: str, frame: Error) -> StatorError:
    where = f"{address}: {frame.message}"
    if frame.code in (ERR_NO_ENDPOINT, ERR_STOPPING):
        return NoInstanceError(where)
    if frame.code == ERR_HANDLER:
        return RemoteHandlerError(
            where, remote_type=frame.remote_type or "Exception", status_code=frame.status_code
        )
    return FrameError(f"{where} ({frame.code})")


def _expire(waiter: asyncio.Future[None], timeout_s: float) -> None:
    if not waiter.done():
        waiter.set_exception(RequestTimeoutError(f"no response chunk within {timeout_s} s"))
