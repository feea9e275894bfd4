"""``Outbox``: coalesces request-plane frames into NATS messages, one per destination per tick.

``send`` appends a frame's wire bytes to the buffer of its ``(subject, reply)`` and wakes the
sender task; the task, which runs once the current event-loop tick is over, publishes each buffer
as one NATS message. No message holds more than ``max_message_bytes`` unless it is a single
frame (a frame that would overflow a buffer starts the next one), so with single frames kept
below NATS's ``max_payload`` every message fits. Ordering per destination is preserved
(NATS keeps the order of one publisher's messages). This is the NATS counterpart of the tcp
plane's write coalescing (``connection.FramedProtocol.send``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from stator.runtime.request_plane.framing import Frame, encode_frame_into

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024
"""A buffer is published as soon as it holds this many bytes (and at the end of the tick)."""

Publish = Callable[[str, bytes, str], Awaitable[None]]
"""``publish(subject, body, reply)``."""


class Outbox:
    """Per-destination frame buffers and the task that publishes them (see module doc).

    Args:
        publish: sends one NATS message (``nc.publish`` with positional ``reply``).
        max_message_bytes: where a buffer is cut (bytes; must stay below ``max_payload``).
    """

    def __init__(self, publish: Publish, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES):
        self._publish = publish
        self._max_message_bytes = max_message_bytes
        self._open: dict[tuple[str, str], bytearray] = {}
        self._ready: list[tuple[str, str, bytearray]] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task = asyncio.create_task(self._run(), name="nats-outbox")

    def send(self, subject: str, frame: Frame, reply: str = "") -> None:
        """Queue ``frame`` for ``subject`` (with ``reply`` as the message's reply subject)."""
        key = (subject, reply)
        buf = self._open.get(key)
        if buf is None:
            buf = self._open[key] = bytearray()
        start = len(buf)
        encode_frame_into(frame, buf)
        if len(buf) > self._max_message_bytes and start > 0:  # overflow: this frame starts anew
            self._ready.append((subject, reply, buf[:start]))
            buf = self._open[key] = buf[start:]
        if len(buf) >= self._max_message_bytes:
            self._ready.append((subject, reply, self._open.pop(key)))
        self._idle.clear()
        self._wake.set()

    async def flush(self) -> None:
        """Wait until everything queued so far has been handed to NATS."""
        while not self._idle.is_set() and not self._task.done():
            await self._idle.wait()

    async def close(self) -> None:
        """Publish what is queued, then stop the task (idempotent)."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.flush(), 2.0)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batches, self._ready = self._ready, []
            batches += [(subject, reply, buf) for (subject, reply), buf in self._open.items()]
            self._open.clear()
            for subject, reply, buf in batches:
                try:
                    await self._publish(subject, bytes(buf), reply)
                except Exception as exc:  # connection closed or reconnecting: frames are lost
                    log.debug("NATS publish to %s failed: %s", subject, exc)
            if not self._open and not self._ready:
                self._idle.set()
