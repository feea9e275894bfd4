"""Subjects, addresses and message bodies of the ``nats`` request plane (pure, no sockets).

Subjects (``P`` = a server's prefix ``stator.rp.{server_id}``, ``I`` = a client's inbox
``_INBOX.{nuid}``):

- ``P.{ns}.{comp}.{ep}``: a ``Request`` frame, reply subject ``I.{stream_id}``. When nothing
  subscribes (the instance is gone) NATS answers on the reply subject with a status 503
  message: the client's "no instance".
- ``P.c``: client → server control frames (``Credit``, ``Cancel``), reply subject ``I``.
- ``P.ping`` / ``I.ping``: liveness probes (NATS request, empty body, empty reply).
- ``I.f``: server → client frames (``Data``, ``End``, ``Error``, ``Cancel``) of all the
  client's streams on that server.

Each message body is one or more frames of ``framing`` (length-prefixed msgpack), so frames
produced in the same event-loop tick travel in one NATS message. A server's transport address
is ``{nats_url}#{prefix}``; clients use their own connection and only read the prefix.
"""

from __future__ import annotations

import re
import secrets
from typing import Final

import msgspec

from stator.errors import NoInstanceError
from stator.runtime.request_plane.framing import LENGTH_PREFIX, Frame, FrameError

SUBJECT_ROOT: Final = "stator.rp"
"""First tokens of every server prefix."""
CONTROL_TOKEN: Final = "c"
PING_TOKEN: Final = "ping"
FRAMES_TOKEN: Final = "f"
NO_RESPONDERS_STATUS: Final = "503"
"""NATS status header value of a "no responders" message."""

_TOKEN: Final = re.compile(r"^[A-Za-z0-9_-]+$")
_PREFIX: Final = re.compile(r"^stator\.rp\.[0-9a-f]+$")


def new_server_prefix() -> str:
    """A fresh ``stator.rp.{16 hex digits}`` subject prefix for one server."""
    return f"{SUBJECT_ROOT}.{secrets.token_hex(8)}"


def format_nats_address(nats_url: str, prefix: str) -> str:
    """``nats://127.0.0.1:4222#stator.rp.3f2a9c1b0d4e5f60``."""
    return f"{nats_url}#{prefix}"


def parse_nats_address(address: str) -> str:
    """The subject prefix of a transport address (see ``format_nats_address``).

    Raises:
        NoInstanceError: not a nats transport address (names the address).
    """
    _, sep, prefix = address.rpartition("#")
    if not sep or not _PREFIX.match(prefix):
        raise NoInstanceError(
            f"transport address {address!r}: expected nats://host:port#{SUBJECT_ROOT}.<id>"
        )
    return prefix


def request_subject(prefix: str, endpoint_path: str) -> str:
    """``P.{ns}.{comp}.{ep}`` for ``endpoint_path`` ``ns/comp/ep``.

    Raises:
        NoInstanceError: the path is not three subject-safe parts.
    """
    parts = endpoint_path.split("/")
    if len(parts) != 3 or not all(_TOKEN.match(p) for p in parts):
        raise NoInstanceError(f"endpoint path {endpoint_path!r} is not ns/comp/ep")
    return f"{prefix}.{'.'.join(parts)}"


def split_reply(reply: str) -> tuple[str, int] | None:
    """``I.{stream_id}`` → ``(I, stream_id)``, or ``None`` if malformed."""
    inbox, _, sid = reply.rpartition(".")
    return (inbox, int(sid)) if inbox and sid.isdigit() else None


def frame_decoder() -> msgspec.msgpack.Decoder[Frame]:
    """A decoder of one frame body (build once, reuse)."""
    return msgspec.msgpack.Decoder(Frame)


def decode_batch(decoder: msgspec.msgpack.Decoder[Frame], body: bytes) -> list[Frame]:
    """Every frame of one message body (length-prefixed frames, back to back).

    Raises:
        FrameError: the body is not a whole number of valid frames.
    """
    frames: list[Frame] = []
    offset, size = 0, len(body)
    with memoryview(body) as view:
        while offset < size:
            if size - offset < LENGTH_PREFIX.size:
                raise FrameError("message ends inside a length prefix")
            (length,) = LENGTH_PREFIX.unpack_from(body, offset)
            end = offset + LENGTH_PREFIX.size + length
            if end > size:
                raise FrameError(f"frame of {length} bytes overruns its message")
            try:
                frames.append(decoder.decode(view[offset + LENGTH_PREFIX.size : end]))
            except msgspec.DecodeError as exc:
                raise FrameError(f"invalid frame: {exc}") from exc
            offset = end
    return frames
