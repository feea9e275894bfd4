"""``NatsRequestPlaneServer``: serves async-generator handlers over NATS subjects.

One subscription ``P.>`` (``P``: this server's prefix, see ``nats_subjects``) carries requests,
control frames and pings in arrival order. Each ``Request`` starts a handler task whose chunks go
back as ``Data`` frames to the client's ``I.f``, one credit each (the flow control of
``framing``). A client that stops answering liveness probes (``nats_liveness``: its process is
gone) has its streams cancelled, so a dead client never leaves handlers suspended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from stator.errors import TransportError
from stator.runtime.nats_connect import DEFAULT_CONNECT_TIMEOUT_S, connect_nats
from stator.runtime.request_plane.base import RawHandler, RequestContext, RequestPlaneServer
from stator.runtime.request_plane.framing import (
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
from stator.runtime.request_plane.nats_liveness import Liveness
from stator.runtime.request_plane.nats_outbox import Outbox
from stator.runtime.request_plane.nats_subjects import (
    CONTROL_TOKEN,
    FRAMES_TOKEN,
    PING_TOKEN,
    decode_batch,
    format_nats_address,
    frame_decoder,
    new_server_prefix,
    split_reply,
)
from stator.runtime.request_plane.served_stream import ServedStream, error_frame

log = logging.getLogger(__name__)

DEFAULT_PROBE_INTERVAL_S = 1.0
"""A client silent for this long (s) while it has open streams here is probed."""
DEFAULT_PROBE_TIMEOUT_S = 3.0
"""A probe unanswered for this long (s) counts the client as gone."""
_CANCEL_GRACE_S = 5.0
"""After cancelling handlers at the end of a drain, how long to wait for them to unwind (s)."""
_FRAME_OVERHEAD_BYTES = 64
"""Room for a ``Data`` frame's header within NATS's ``max_payload``."""

StreamKey = tuple[str, int]
"""``(client inbox, stream id)``."""


_Stream = ServedStream[StreamKey]


class NatsRequestPlaneServer(RequestPlaneServer):
    """Request-plane server on NATS (``--request-plane nats``).

    Args:
        nats_url: the NATS server(s), e.g. ``nats://127.0.0.1:4222``.
        connect_timeout_s: limit on the first connection (s).
        probe_interval_s / probe_timeout_s: client liveness probing (s, see module doc).
    """

    def __init__(
        self,
        nats_url: str,
        *,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        probe_interval_s: float = DEFAULT_PROBE_INTERVAL_S,
        probe_timeout_s: float = DEFAULT_PROBE_TIMEOUT_S,
    ) -> None:
        self._url = nats_url
        self._connect_timeout_s = connect_timeout_s
        self._probe_interval_s = probe_interval_s
        self._probe_timeout_s = probe_timeout_s
        self._prefix = new_server_prefix()
        self._handlers: dict[str, RawHandler] = {}
        self._streams: dict[StreamKey, _Stream] = {}
        self._liveness: Liveness | None = None
        self._decoder = frame_decoder()
        self._nc: NatsClient | None = None
        self._sub: Any = None
        self._outbox: Outbox | None = None
        self._max_chunk_bytes = 0
        self._stopping = False

    async def start(self) -> None:
        """Connect and subscribe to this server's prefix.

        Raises:
            TransportError: NATS is unreachable (names the URL).
        """
        if self._nc is not None:
            raise RuntimeError("server already started")
        nc = await connect_nats(
            self._url,
            name=f"stator-server {self._prefix}",
            connect_timeout_s=self._connect_timeout_s,
            on_disconnect=self._on_disconnect,
        )
        self._nc = nc
        self._max_chunk_bytes = nc.max_payload - _FRAME_OVERHEAD_BYTES
        self._outbox = Outbox(lambda s, b, r: nc.publish(s, b, reply=r))
        self._sub = await nc.subscribe(f"{self._prefix}.>", cb=self._on_msg)
        await nc.flush()  # the subscription is live before anyone learns our address
        self._liveness = Liveness(
            self._ping,
            lambda: {inbox for inbox, _ in self._streams},
            self._client_lost,
            interval_s=self._probe_interval_s,
            timeout_s=self._probe_timeout_s,
        )

    @property
    def transport_address(self) -> str:
        """``nats://host:port#stator.rp.<id>``. Raises ``RuntimeError`` before ``start``."""
        if self._nc is None:
            raise RuntimeError("transport_address is known only after start()")
        return format_nats_address(self._url.split(",")[0].strip(), self._prefix)

    @property
    def num_inflight(self) -> int:
        """Streams whose handler is still running."""
        return len(self._streams)

    def register(self, endpoint_path: str, handler: RawHandler) -> None:
        """Serve ``handler`` at ``endpoint_path``. Raises ``ValueError`` if already registered."""
        if endpoint_path in self._handlers:
            raise ValueError(f"endpoint {endpoint_path!r} is already registered")
        self._handlers[endpoint_path] = handler

    def unregister(self, endpoint_path: str) -> None:
        """Refuse new requests for ``endpoint_path`` (unknown paths are ignored)."""
        self._handlers.pop(endpoint_path, None)

    async def stop(self, drain_timeout_s: float = 30.0) -> None:
        """Refuse new streams; wait up to ``drain_timeout_s`` (s) for in-flight ones, cancel the
        rest (clients get ``StreamCancelledError``), unsubscribe (later requests see no
        responders: ``NoInstanceError``) and close the connection. Idempotent."""
        if self._stopping:
            return
        self._stopping = True
        await self._drain(drain_timeout_s)
        if self._liveness is not None:
            await self._liveness.close()
        if self._outbox is not None:
            await self._outbox.close()
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._unsubscribe_and_close(self._nc), _CANCEL_GRACE_S)

    async def _unsubscribe_and_close(self, nc: NatsClient) -> None:
        """Unsubscribe and wait until NATS has processed it (a PING/PONG round trip), so that
        requests sent from now on get "no responders" at once; then close."""
        if self._sub is not None:
            await self._sub.unsubscribe()
            await nc.flush()
        await nc.close()

    # -- incoming messages --------------------------------------------------------------------

    async def _on_msg(self, msg: Msg) -> None:
        token = msg.subject[len(self._prefix) + 1 :]
        if token == PING_TOKEN:
            if msg.reply:
                await msg.respond(b"")
            return
        try:
            frames = decode_batch(self._decoder, msg.data)
        except FrameError as exc:
            log.warning("dropping a bad request-plane message on %s: %s", msg.subject, exc)
            return
        if token == CONTROL_TOKEN:
            self._heard(msg.reply)
            for frame in frames:
                self._control(msg.reply, frame)
        elif len(frames) == 1 and type(frames[0]) is Request:
            self._open(msg.reply, frames[0])

    def _control(self, inbox: str, frame: Frame) -> None:
        stream = self._streams.get((inbox, frame.stream_id))
        if stream is None:
            return
        if type(frame) is Credit:
            stream.add_credit(frame.n)
        elif type(frame) is Cancel:
            stream.cancel("cancelled by client", notify_client=False)

    def _open(self, reply: str, request: Request) -> None:
        parsed = split_reply(reply)
        if parsed is None or parsed[1] != request.stream_id:
            log.warning("dropping a request with a bad reply subject %r", reply)
            return
        inbox, sid = parsed
        to = f"{inbox}.{FRAMES_TOKEN}"
        if (inbox, sid) in self._streams:
            self._send(to, Error(sid, ERR_PROTOCOL, f"stream id {sid} is already open"))
            return
        if self._stopping:
            self._send(to, Error(sid, ERR_STOPPING, "server is shutting down"))
            return
        handler = self._handlers.get(request.endpoint)
        if handler is None:
            self._send(to, Error(sid, ERR_NO_ENDPOINT, f"no endpoint {request.endpoint!r} here"))
            return
        self._heard(inbox)
        stream = _Stream((inbox, sid), RequestContext(request.request_id), max(1, request.window))
        self._streams[stream.key] = stream
        stream.task = asyncio.create_task(self._serve(stream, handler, request.payload, to))
        stream.task.add_done_callback(lambda _: self._stream_done(stream, to))

    # -- serving ------------------------------------------------------------------------------

    def _heard(self, inbox: str) -> None:
        if self._liveness is not None:
            self._liveness.heard(inbox)

    def _send(self, subject: str, frame: Frame) -> None:
        if self._outbox is not None:
            self._outbox.send(subject, frame)

    def _stream_done(self, stream: _Stream, to: str) -> None:
        """Forget a finished stream; a task cancelled before it ran still tells the client."""
        self._streams.pop(stream.key, None)
        if not stream.replied and stream.notify_client:
            reason = stream.cancel_reason or "cancelled by server"
            self._send(to, Cancel(stream.key[1], reason))

    async def _serve(self, stream: _Stream, handler: RawHandler, payload: bytes, to: str) -> None:
        chunks: AsyncIterator[bytes] | None = None
        sid = stream.key[1]
        try:
            chunks = handler(payload, stream.ctx)
            async for chunk in chunks:
                chunk = _checked_chunk(chunk, self._max_chunk_bytes)
                if stream.credit <= 0:
                    await stream.wait_credit()
                stream.credit -= 1
                self._send(to, Data(sid, chunk))
            self._reply(stream, to, End(sid))
        except asyncio.CancelledError:
            if stream.notify_client:
                reason = stream.cancel_reason or "cancelled by server"
                self._reply(stream, to, Cancel(sid, reason))
        except Exception as exc:
            self._reply(stream, to, error_frame(sid, exc))
        finally:
            await _close_iterator(chunks)

    def _reply(self, stream: _Stream, to: str, frame: Frame) -> None:
        stream.replied = True
        self._send(to, frame)

    async def _drain(self, drain_timeout_s: float) -> None:
        tasks = [s.task for s in self._streams.values() if s.task is not None]
        if tasks and drain_timeout_s > 0:
            await asyncio.wait(tasks, timeout=drain_timeout_s)
        remaining = list(self._streams.values())
        for stream in remaining:
            stream.cancel("server stopping", notify_client=True)
        tasks = [s.task for s in remaining if s.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=_CANCEL_GRACE_S)

    # -- liveness -----------------------------------------------------------------------------

    async def _ping(self, inbox: str, timeout_s: float) -> object:
        if self._nc is None:
            raise RuntimeError("not connected")
        return await self._nc.request(f"{inbox}.{PING_TOKEN}", b"", timeout=timeout_s)

    def _client_lost(self, inbox: str, why: str) -> None:
        log.info("request-plane client %s is gone (%s); cancelling its streams", inbox, why)
        for key, stream in list(self._streams.items()):
            if key[0] == inbox:
                stream.cancel(f"client gone: {why}", notify_client=True)

    async def _on_disconnect(self) -> None:
        if self._stopping or self._nc is None:
            return
        log.warning(
            "request-plane server lost its NATS connection; cancelling %d streams",
            len(self._streams),
        )
        for stream in list(self._streams.values()):
            stream.cancel("NATS connection lost", notify_client=False)


def _checked_chunk(chunk: object, max_bytes: int) -> bytes:
    """A handler's chunk as bytes; ``TypeError`` for non-bytes, ``TransportError`` if it does
    not fit in one NATS message."""
    if type(chunk) is not bytes:
        if not isinstance(chunk, bytes | bytearray | memoryview):
            raise TypeError(f"handler yielded {type(chunk).__name__}, expected bytes")
        chunk = bytes(chunk)
    if len(chunk) > max_bytes:
        raise TransportError(f"chunk of {len(chunk)} bytes exceeds NATS max_payload")
    return chunk


async def _close_iterator(chunks: AsyncIterator[bytes] | None) -> None:
    """Run the handler's ``finally`` blocks (async generators need ``aclose``)."""
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:  # the handler's cleanup failed; the stream is over anyway
            log.exception("request-plane handler raised while closing")
