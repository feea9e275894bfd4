"""Wire format of the ``zmq`` event plane (pure functions, no sockets).

Each message is three ZMQ frames ``[topic, instance_id, payload]``: the topic in UTF-8 (ZMQ's
subscription filter matches it), the publisher's instance id as 8 bytes big-endian (the framing
vLLM uses for its sequence number in KV-event messages, DESIGN.md "KV events"), and the payload
bytes unchanged. A publisher's address is registered in discovery as a ``ZmqChannel`` (JSON).
"""

from __future__ import annotations

import msgspec

INSTANCE_ID_BYTES = 8
"""Width of the instance-id frame (unsigned, big-endian)."""


class ZmqChannel(msgspec.Struct, frozen=True):
    """Discovery record at ``v1/event_channels/{ns}/{comp}/{topic}/{instance_id}``.

    ``address``: the publisher's PUB endpoint, e.g. ``tcp://127.0.0.1:40123``.
    """

    address: str
    transport: str = "zmq"


def encode_channel(channel: ZmqChannel) -> bytes:
    """JSON bytes of a channel record."""
    return msgspec.json.encode(channel)


def decode_channel(data: bytes) -> ZmqChannel:
    """Parse a channel record.

    Raises:
        msgspec.ValidationError / msgspec.DecodeError: not a channel record.
    """
    return msgspec.json.decode(data, type=ZmqChannel)


def encode_frames(topic: bytes, instance_id: int, payload: bytes) -> list[bytes]:
    """``[topic, instance_id (8 bytes BE), payload]``.

    Raises:
        ValueError: ``instance_id`` is negative or does not fit in 64 bits.
    """
    if not 0 <= instance_id < 2 ** (8 * INSTANCE_ID_BYTES):
        raise ValueError(f"instance id {instance_id} does not fit in an unsigned 64-bit frame")
    return [topic, instance_id.to_bytes(INSTANCE_ID_BYTES, "big"), payload]


def decode_frames(frames: list[bytes], topic: bytes) -> tuple[int, bytes] | None:
    """``(instance_id, payload)`` of a message on ``topic``, or ``None`` if it is malformed or on
    another topic (ZMQ filters by prefix, so ``kv-events`` also admits ``kv-events-x``)."""
    if len(frames) != 3 or frames[0] != topic or len(frames[1]) != INSTANCE_ID_BYTES:
        return None
    return int.from_bytes(frames[1], "big"), frames[2]
