"""Pure parts of the nats planes: subjects, addresses, message bodies, the outbox's batching."""

from __future__ import annotations

import asyncio

import pytest

from stator.errors import NoInstanceError
from stator.runtime.event_plane.nats_wire import (
    decode_event,
    encode_event,
    event_subject,
    subject_token,
)
from stator.runtime.request_plane.framing import Credit, Data, End, Request, encode_frame
from stator.runtime.request_plane.nats_outbox import Outbox
from stator.runtime.request_plane.nats_subjects import (
    FrameError,
    decode_batch,
    format_nats_address,
    frame_decoder,
    new_server_prefix,
    parse_nats_address,
    request_subject,
    split_reply,
)


def test_address_round_trips() -> None:
    prefix = new_server_prefix()
    assert prefix.startswith("stator.rp.") and prefix != new_server_prefix()
    address = format_nats_address("nats://10.0.0.1:4222", prefix)
    assert address == f"nats://10.0.0.1:4222#{prefix}"
    assert parse_nats_address(address) == prefix


@pytest.mark.parametrize(
    "address", ["tcp://127.0.0.1:9000", "nats://h:4222", "nats://h:4222#other.subject", "#x.>"]
)
def test_bad_addresses_are_no_instance(address: str) -> None:
    with pytest.raises(NoInstanceError, match="expected nats://"):
        parse_nats_address(address)


def test_request_subject_maps_the_endpoint_path() -> None:
    assert request_subject("stator.rp.ab", "dynamo/backend/generate") == (
        "stator.rp.ab.dynamo.backend.generate"
    )
    for bad in ("a/b", "a/b/c/d", "a.x/b/c", "a/*/c", "a//c"):
        with pytest.raises(NoInstanceError):
            request_subject("stator.rp.ab", bad)


def test_split_reply() -> None:
    assert split_reply("_INBOX.abc.17") == ("_INBOX.abc", 17)
    assert split_reply("_INBOX.abc.f") is None
    assert split_reply("") is None


def test_batches_decode_every_frame_in_order() -> None:
    frames = [Request(1, "a/b/c", "r", 8, b"p"), Data(1, b"x" * 300), Credit(1, 4), End(1)]
    body = b"".join(encode_frame(f) for f in frames)
    assert decode_batch(frame_decoder(), body) == frames
    assert decode_batch(frame_decoder(), b"") == []


@pytest.mark.parametrize("cut", [2, 9])
def test_truncated_batches_are_frame_errors(cut: int) -> None:
    body = encode_frame(Data(1, b"hello")) + encode_frame(End(1))
    with pytest.raises(FrameError):
        decode_batch(frame_decoder(), body[:-cut])


def test_garbage_is_a_frame_error() -> None:
    with pytest.raises(FrameError, match="invalid frame"):
        decode_batch(frame_decoder(), b"\x00\x00\x00\x02\xc1\xc1")


def test_event_subjects_are_sanitised_tokens() -> None:
    assert event_subject("dynamo", "backend", "kv-events") == "dynamo.backend.kv-events"
    assert event_subject("a.b", "c*", "d >e") == "a_b.c_.d__e"
    assert subject_token("ok_-1") == "ok_-1"
    with pytest.raises(ValueError, match="empty"):
        subject_token("")


def test_event_bodies_carry_the_instance_id() -> None:
    body = encode_event(2**53 - 1, b"payload")
    assert len(body) == 8 + len(b"payload")
    assert decode_event(body) == (2**53 - 1, b"payload")
    assert decode_event(encode_event(0, b"")) == (0, b"")
    assert decode_event(b"short") is None
    with pytest.raises(ValueError):
        encode_event(-1, b"")
    with pytest.raises(ValueError):
        encode_event(2**64, b"")


async def test_outbox_coalesces_one_tick_per_destination() -> None:
    sent: list[tuple[str, bytes, str]] = []

    async def publish(subject: str, body: bytes, reply: str) -> None:
        sent.append((subject, body, reply))

    outbox = Outbox(publish, max_message_bytes=1000)
    for i in range(5):
        outbox.send("to.a", Data(1, b"%d" % i))
    outbox.send("to.b", Credit(2, 3), reply="me")
    await outbox.flush()
    assert [(s, r) for s, _, r in sent] == [("to.a", ""), ("to.b", "me")]
    assert decode_batch(frame_decoder(), sent[0][1]) == [Data(1, b"%d" % i) for i in range(5)]
    sent.clear()
    for _ in range(10):  # ~310 bytes each: at most 3 per message of <= 1000 bytes
        outbox.send("to.a", Data(1, b"y" * 300))
    outbox.send("to.a", Data(1, b"z" * 2000))  # larger than a message: alone
    await outbox.flush()
    assert [len(body) <= 1000 for _, body, _ in sent] == [True] * 4 + [False]
    frames = [f for _, body, _ in sent for f in decode_batch(frame_decoder(), body)]
    assert frames == [Data(1, b"y" * 300)] * 10 + [Data(1, b"z" * 2000)]
    await outbox.close()


async def test_outbox_survives_a_failing_publish() -> None:
    calls = 0

    async def publish(subject: str, body: bytes, reply: str) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("reconnecting")

    outbox = Outbox(publish)
    outbox.send("x", End(1))
    await outbox.flush()
    outbox.send("x", End(2))
    await asyncio.wait_for(outbox.flush(), 1.0)
    assert calls == 2
    await outbox.close()
