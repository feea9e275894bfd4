"""The zmq event-plane wire format: frames and the discovery record (no sockets)."""

from __future__ import annotations

import msgspec
import pytest

from stator.runtime.event_plane.zmq_wire import (
    ZmqChannel,
    decode_channel,
    decode_frames,
    encode_channel,
    encode_frames,
)


def test_frames_are_topic_big_endian_id_payload() -> None:
    frames = encode_frames(b"kv-events", 0x0102030405060708, b"payload")
    assert frames == [b"kv-events", bytes([1, 2, 3, 4, 5, 6, 7, 8]), b"payload"]
    assert decode_frames(frames, b"kv-events") == (0x0102030405060708, b"payload")


@pytest.mark.parametrize("instance_id", [0, 1, 2**53 - 1, 2**64 - 1])
def test_instance_id_round_trips(instance_id: int) -> None:
    assert decode_frames(encode_frames(b"t", instance_id, b""), b"t") == (instance_id, b"")


@pytest.mark.parametrize("instance_id", [-1, 2**64])
def test_instance_id_out_of_range_is_rejected(instance_id: int) -> None:
    with pytest.raises(ValueError, match="64-bit"):
        encode_frames(b"t", instance_id, b"")


@pytest.mark.parametrize(
    "frames",
    [
        [b"kv-events-x", bytes(8), b"p"],  # ZMQ's prefix filter admits it; we do not
        [b"kv-events", bytes(7), b"p"],
        [b"kv-events", bytes(8)],
        [b"kv-events", bytes(8), b"p", b"extra"],
    ],
)
def test_other_topics_and_malformed_messages_are_dropped(frames: list[bytes]) -> None:
    assert decode_frames(frames, b"kv-events") is None


def test_channel_record_round_trips_and_rejects_garbage() -> None:
    channel = ZmqChannel("tcp://127.0.0.1:40123")
    assert decode_channel(encode_channel(channel)) == channel
    with pytest.raises(msgspec.ValidationError):
        decode_channel(b'{"addr": "x"}')
