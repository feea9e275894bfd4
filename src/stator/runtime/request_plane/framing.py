"""Wire framing of the tcp request plane: pure encoding and decoding, no sockets.

A frame on the wire is a 4-byte big-endian length ``n`` followed by ``n`` bytes of msgpack: an
array whose first two elements are the frame kind (the msgspec tag) and the stream id, e.g.
``[2, stream_id, payload]`` for a data chunk. Many streams are multiplexed on one connection;
stream ids are chosen by the client (1, 2, 3, ... per connection).

Frame kinds (client → server: ``Request``, ``Cancel``, ``Credit``; server → client: ``Data``,
``End``, ``Error``, ``Cancel``):

- ``Request``: open stream ``stream_id`` to ``endpoint`` with an initial credit ``window``
  (chunks the server may send before the client grants more).
- ``Data``: one response chunk (opaque bytes). Uses one unit of credit.
- ``End``: the handler finished normally.
- ``Error``: the stream failed; ``code`` is one of the ``ERR_*`` constants.
- ``Cancel``: client → server: stop the handler; server → client: the server stopped the stream.
- ``Credit``: client → server: the consumer read ``n`` more chunks; the server may send ``n`` more.

Per-stream credit is what keeps memory bounded: a slow consumer stops granting credit, the
server-side handler is suspended after ``window`` unacknowledged chunks, and other streams on
the same connection keep flowing (the same idea as HTTP/2 flow-control windows, RFC 9113 §5.2,
counted in chunks instead of bytes).
"""

from __future__ import annotations

import struct
from typing import Final

import msgspec

from stator.errors import TransportError

LENGTH_PREFIX: Final = struct.Struct(">I")
"""The 4-byte big-endian frame length that precedes every msgpack frame body."""

DEFAULT_MAX_FRAME_BYTES: Final = 64 * 1024 * 1024
"""Largest frame body accepted (bytes); a larger length prefix is a protocol error."""

ERR_NO_ENDPOINT: Final = "no_endpoint"
"""``Error.code``: nothing is registered at the requested endpoint path."""
ERR_STOPPING: Final = "stopping"
"""``Error.code``: the server is shutting down and accepts no new streams."""
ERR_HANDLER: Final = "handler"
"""``Error.code``: the handler raised; ``remote_type`` names the exception class."""
ERR_PROTOCOL: Final = "protocol"
"""``Error.code``: the peer broke the protocol (e.g. reused a stream id)."""


class FrameError(TransportError):
    """The byte stream is not a valid frame sequence (bad length, bad msgpack, unknown kind)."""


class Request(msgspec.Struct, array_like=True, tag=1):
    """Open a stream: call ``endpoint`` (``ns/comp/ep``) with ``payload``.

    ``window``: how many ``Data`` chunks the server may send before it needs ``Credit``.
    """

    stream_id: int
    endpoint: str
    request_id: str
    window: int
    payload: bytes


class Data(msgspec.Struct, array_like=True, tag=2):
    """One response chunk of stream ``stream_id``."""

    stream_id: int
    payload: bytes


class End(msgspec.Struct, array_like=True, tag=3):
    """Stream ``stream_id`` finished normally (no more ``Data``)."""

    stream_id: int


class Error(msgspec.Struct, array_like=True, tag=4):
    """Stream ``stream_id`` failed. ``code``: an ``ERR_*`` constant. For ``ERR_HANDLER``,
    ``remote_type`` is the handler's exception class name and ``status_code`` the HTTP status
    it maps to (a ``StatorError``'s own, else 500)."""

    stream_id: int
    code: str
    message: str
    remote_type: str = ""
    status_code: int = 500


class Cancel(msgspec.Struct, array_like=True, tag=5):
    """Stop stream ``stream_id`` (either direction); ``reason`` is for logs and errors."""

    stream_id: int
    reason: str = ""


class Credit(msgspec.Struct, array_like=True, tag=6):
    """Allow the server ``n`` more ``Data`` chunks on stream ``stream_id``."""

    stream_id: int
    n: int


Frame = Request | Data | End | Error | Cancel | Credit
"""Any frame."""

_ENCODER: Final = msgspec.msgpack.Encoder()
_PREFIX_PLACEHOLDER: Final = b"\x00\x00\x00\x00"


def encode_frame(frame: Frame) -> bytes:
    """Return the wire bytes of one frame: length prefix + msgpack body."""
    body = _ENCODER.encode(frame)
    return LENGTH_PREFIX.pack(len(body)) + body


def encode_frame_into(frame: Frame, buf: bytearray) -> None:
    """Append the wire bytes of ``frame`` to ``buf`` (no intermediate copies)."""
    start = len(buf)
    buf += _PREFIX_PLACEHOLDER
    _ENCODER.encode_into(frame, buf, start + 4)
    LENGTH_PREFIX.pack_into(buf, start, len(buf) - start - 4)


class FrameDecoder:
    """Incremental decoder: ``feed`` bytes as they arrive, get back the complete frames.

    Holds at most one partial frame between calls. Raises ``FrameError`` on a length above
    ``max_frame_bytes`` or a body that is not a valid frame; the connection must then be closed.
    """

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self._max_frame_bytes = max_frame_bytes
        self._decoder: msgspec.msgpack.Decoder[Frame] = msgspec.msgpack.Decoder(Frame)
        self._pending = bytearray()

    @property
    def num_buffered_bytes(self) -> int:
        """Bytes of an incomplete frame held until more data arrives."""
        return len(self._pending)

    def feed(self, data: bytes) -> list[Frame]:
        """Add ``data`` and return every frame it completes, in order.

        A large frame arriving in many reads is accumulated without re-parsing (linear time).
        """
        if self._pending:
            self._pending += data
            if len(self._pending) < self._pending_need():
                return []
            frames: list[Frame] = []
            del self._pending[: self._parse(self._pending, frames)]
            return frames
        frames = []
        end = self._parse(data, frames)
        if end < len(data):
            self._pending += data[end:]
        return frames

    def _pending_need(self) -> int:
        """Bytes needed before the first pending frame is complete (4 while the prefix is short)."""
        if len(self._pending) < 4:
            return 4
        (length,) = LENGTH_PREFIX.unpack_from(self._pending, 0)
        self._check_length(length)
        return 4 + int(length)

    def _check_length(self, length: int) -> None:
        if length > self._max_frame_bytes:
            raise FrameError(f"frame of {length} bytes exceeds {self._max_frame_bytes}")

    def _parse(self, buf: bytes | bytearray, out: list[Frame]) -> int:
        """Decode complete frames of ``buf`` into ``out``; return the offset of the rest."""
        offset = 0
        size = len(buf)
        unpack = LENGTH_PREFIX.unpack_from
        decode = self._decoder.decode
        max_frame_bytes = self._max_frame_bytes
        with memoryview(buf) as view:
            while size - offset >= 4:
                (length,) = unpack(buf, offset)
                if length > max_frame_bytes:
                    self._check_length(length)
                end = offset + 4 + length
                if end > size:
                    break
                try:
                    out.append(decode(view[offset + 4 : end]))
                except msgspec.DecodeError as exc:
                    raise FrameError(f"invalid frame: {exc}") from exc
                offset = end
        return offset
