"""The request plane's wire framing, without sockets."""

from __future__ import annotations

import msgspec
import pytest

from stator.errors import NoInstanceError, TransportError
from stator.runtime.request_plane.framing import (
    LENGTH_PREFIX,
    Cancel,
    Credit,
    Data,
    End,
    Error,
    Frame,
    FrameDecoder,
    FrameError,
    Request,
    encode_frame,
    encode_frame_into,
)
from stator.runtime.request_plane.tcp_address import format_tcp_address, parse_tcp_address

ALL_KINDS: list[Frame] = [
    Request(1, "dynamo/backend/generate", "req-1", 256, b"\x00payload\xff"),
    Data(1, b"chunk"),
    Data(2**40, b""),
    End(1),
    Error(3, "handler", "boom", "ValueError", 400),
    Cancel(4, "cancelled by client"),
    Credit(5, 128),
]


def test_frame_is_length_prefix_then_msgpack_array_with_kind_and_stream_id() -> None:
    wire = encode_frame(Data(7, b"abc"))
    (length,) = LENGTH_PREFIX.unpack_from(wire, 0)
    assert length == len(wire) - 4
    assert msgspec.msgpack.decode(wire[4:]) == [2, 7, b"abc"]


@pytest.mark.parametrize("frame", ALL_KINDS, ids=lambda f: type(f).__name__)
def test_every_kind_round_trips(frame: Frame) -> None:
    assert FrameDecoder().feed(encode_frame(frame)) == [frame]


def test_encode_into_appends_the_same_bytes() -> None:
    buf = bytearray(b"head")
    for frame in ALL_KINDS:
        encode_frame_into(frame, buf)
    assert bytes(buf) == b"head" + b"".join(encode_frame(f) for f in ALL_KINDS)


def test_many_frames_in_one_read_decode_in_order() -> None:
    wire = b"".join(encode_frame(f) for f in ALL_KINDS)
    assert FrameDecoder().feed(wire) == ALL_KINDS


def test_frames_split_at_every_byte_boundary() -> None:
    wire = b"".join(encode_frame(f) for f in ALL_KINDS)
    for cut in range(len(wire) + 1):
        decoder = FrameDecoder()
        frames = decoder.feed(wire[:cut]) + decoder.feed(wire[cut:])
        assert frames == ALL_KINDS, cut
        assert decoder.num_buffered_bytes == 0


def test_frames_fed_one_byte_at_a_time() -> None:
    wire = b"".join(encode_frame(f) for f in ALL_KINDS)
    decoder = FrameDecoder()
    frames: list[Frame] = []
    for i in range(len(wire)):
        frames += decoder.feed(wire[i : i + 1])
    assert frames == ALL_KINDS


def test_large_frame_in_many_reads_is_held_until_complete() -> None:
    frame = Data(9, bytes(range(256)) * 4096)  # 1 MiB payload
    wire = encode_frame(frame)
    decoder = FrameDecoder()
    pieces = [wire[i : i + 1000] for i in range(0, len(wire), 1000)]
    results = [decoder.feed(piece) for piece in pieces]
    assert all(r == [] for r in results[:-1])
    assert results[-1] == [frame]


def test_length_above_limit_is_a_frame_error() -> None:
    decoder = FrameDecoder(max_frame_bytes=100)
    with pytest.raises(FrameError, match="exceeds 100"):
        decoder.feed(LENGTH_PREFIX.pack(101) + b"x")


def test_length_above_limit_detected_when_prefix_arrives_split() -> None:
    decoder = FrameDecoder(max_frame_bytes=100)
    assert decoder.feed(LENGTH_PREFIX.pack(10_000)[:2]) == []
    with pytest.raises(FrameError):
        decoder.feed(LENGTH_PREFIX.pack(10_000)[2:])


def test_garbage_body_is_a_frame_error() -> None:
    body = b"\xc1\xc1"  # 0xc1 is never valid msgpack
    with pytest.raises(FrameError, match="invalid frame"):
        FrameDecoder().feed(LENGTH_PREFIX.pack(len(body)) + body)


def test_unknown_kind_is_a_frame_error() -> None:
    body = msgspec.msgpack.encode([99, 1, b"x"])
    with pytest.raises(FrameError):
        FrameDecoder().feed(LENGTH_PREFIX.pack(len(body)) + body)


def test_wrong_field_type_is_a_frame_error() -> None:
    body = msgspec.msgpack.encode([2, 1, "text, not bytes"])
    with pytest.raises(FrameError):
        FrameDecoder().feed(LENGTH_PREFIX.pack(len(body)) + body)


def test_frame_error_is_a_transport_error() -> None:
    assert issubclass(FrameError, TransportError)


def test_tcp_address_round_trip() -> None:
    assert parse_tcp_address(format_tcp_address("127.0.0.1", 9000)) == ("127.0.0.1", 9000)
    assert format_tcp_address("::1", 80) == "tcp://[::1]:80"
    assert parse_tcp_address("tcp://[::1]:80") == ("::1", 80)


@pytest.mark.parametrize(
    ("address", "bad_part"),
    [
        ("http://127.0.0.1:80", "scheme"),
        ("tcp://127.0.0.1", "port"),
        ("tcp://:80", "host:port"),
        ("tcp://host:0", "bad port"),
        ("tcp://host:99999", "bad port"),
    ],
)
def test_bad_tcp_address_names_the_bad_part(address: str, bad_part: str) -> None:
    with pytest.raises(NoInstanceError, match=bad_part):
        parse_tcp_address(address)
