"""vLLM's ZMQ KV events → stator KvEventBatch, with stator sequence hashes (no vLLM needed)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from stator.kv.hashing import block_sequence_hashes
from stator.protocols.kv_events import AllBlocksCleared, BlockRemoved, BlockStored
from stator.vllm.kv_events import KvEventConverter, KvEventDecodeError, decode_vllm_batch
from stator.vllm.kv_relay import RelayCore

BS = 4
TOKENS = list(range(100, 116))  # four blocks of 4


def stored(hashes: list[Any], parent: Any, tokens: list[int], **extra: Any) -> dict[str, Any]:
    """A BlockStored as vLLM 0.32 encodes it (tagged map, all fields)."""
    return {
        "type": "BlockStored",
        "block_hashes": hashes,
        "parent_block_hash": parent,
        "token_ids": tokens,
        "block_size": BS,
        "lora_id": None,
        "medium": "GPU",
        "lora_name": None,
        **extra,
    }


def removed(hashes: list[Any]) -> dict[str, Any]:
    return {"type": "BlockRemoved", "block_hashes": hashes, "medium": "GPU"}


def frames(seq: int, events: list[Any], *, dp_rank: int | None = 0) -> list[bytes]:
    body: list[Any] = [1700000000.5, events] + ([] if dp_rank is None else [dp_rank])
    return [b"kv-events", seq.to_bytes(8, "big"), msgspec.msgpack.encode(body)]


def test_stored_hashes_are_the_routers_sequence_hashes() -> None:
    conv = KvEventConverter()
    # vLLM sends the prefix in two events: blocks 0-1, then 2-3 chained on vLLM hash b"h1".
    first = conv.convert([stored([b"h0", b"h1"], None, TOKENS[:8])])
    second = conv.convert([stored([b"h2", b"h3"], b"h1", TOKENS[8:])])
    expected = block_sequence_hashes(TOKENS, BS)
    assert isinstance(first[0], BlockStored) and isinstance(second[0], BlockStored)
    assert first[0].block_hashes == expected[:2] and first[0].parent_block_hash is None
    assert second[0].block_hashes == expected[2:]
    assert second[0].parent_block_hash == expected[1]
    assert second[0].token_ids == TOKENS[8:] and second[0].block_size == BS
    assert second[0].medium == "GPU"


def test_removed_translates_vllm_hashes_and_skips_unknown() -> None:
    conv = KvEventConverter()
    conv.convert([stored([1, 2], None, TOKENS[:8])])  # int hashes (VLLM_KV_EVENTS_USE_INT...)
    out = conv.convert([removed([2, 99])])
    assert out == [BlockRemoved(block_hashes=[block_sequence_hashes(TOKENS, BS)[1]], medium="GPU")]
    assert conv.convert([removed([2])]) == []  # already gone: nothing to say
    assert len(conv) == 1


def test_unknown_parent_drops_the_blocks_and_their_children() -> None:
    conv = KvEventConverter()
    assert conv.convert([stored([b"x"], b"lost", TOKENS[:4])]) == []
    assert conv.convert([stored([b"y"], b"x", TOKENS[4:8])]) == []
    assert conv.num_dropped == 2 and len(conv) == 0


def test_short_token_list_is_dropped() -> None:
    conv = KvEventConverter()
    assert conv.convert([stored([b"a", b"b"], None, TOKENS[:6])]) == []
    assert conv.num_dropped == 2


def test_all_blocks_cleared_forgets_everything() -> None:
    conv = KvEventConverter()
    conv.convert([stored([b"a"], None, TOKENS[:4])])
    assert conv.convert([{"type": "AllBlocksCleared"}]) == [AllBlocksCleared()]
    assert len(conv) == 0 and conv.dump() == []


def test_other_kv_cache_groups_are_skipped() -> None:
    conv = KvEventConverter()
    assert conv.convert([stored([b"a"], None, TOKENS[:4], group_idx=1)]) == []
    assert len(conv.convert([stored([b"a"], None, TOKENS[:4], group_idx=0)])) == 1


def test_reannounced_block_maps_to_the_same_hash() -> None:
    conv = KvEventConverter()
    a = conv.convert([stored([b"a"], None, TOKENS[:4])])
    b = conv.convert([stored([b"a"], None, TOKENS[:4])])
    assert a == b and len(conv) == 1


def test_dump_lists_parents_before_children() -> None:
    conv = KvEventConverter()
    conv.convert([stored([b"h0", b"h1"], None, TOKENS[:8])])
    conv.convert([stored([b"h2"], b"h1", TOKENS[8:12])])
    conv.convert([removed([b"h0"])])  # a parent evicted before its child: still consistent
    conv.convert([stored([b"h0"], None, TOKENS[:4])])  # ... and stored again, last
    dump = conv.dump()
    order = [e.block_hashes[0] for e in dump]
    expected = block_sequence_hashes(TOKENS[:12], BS)
    assert sorted(order) == sorted(expected)
    seen: set[int] = set()
    for event in dump:
        assert event.parent_block_hash is None or event.parent_block_hash in seen
        seen.add(event.block_hashes[0])
        assert len(event.token_ids) == event.block_size == BS


def test_decode_reads_legacy_array_like_events() -> None:
    legacy = ["BlockStored", [b"h"], None, TOKENS[:4], BS, None, "GPU"]
    batch = decode_vllm_batch(msgspec.msgpack.encode([1.0, [legacy, ["AllBlocksCleared"]]]))
    assert batch.events[0]["type"] == "BlockStored" and batch.events[0]["token_ids"] == TOKENS[:4]
    assert batch.events[1] == {"type": "AllBlocksCleared"}
    assert batch.dp_rank == 0


@pytest.mark.parametrize(
    "payload",
    [
        b"\xc1",
        msgspec.msgpack.encode({"a": 1}),
        msgspec.msgpack.encode([1.0, [{"x": 1}]]),
        msgspec.msgpack.encode([1.0, ["Nope"]]),
    ],
)
def test_decode_rejects_garbage(payload: bytes) -> None:
    with pytest.raises(KvEventDecodeError):
        decode_vllm_batch(payload)


def test_relay_core_numbers_batches_from_one_and_skips_empty() -> None:
    core = RelayCore(worker_id=42)
    b1 = core.handle(frames(0, [stored([b"a"], None, TOKENS[:4])], dp_rank=3))
    assert b1 is not None and (b1.worker_id, b1.event_id, b1.dp_rank) == (42, 1, 3)
    assert b1.timestamp_s == 1700000000.5
    assert core.handle(frames(1, [removed([b"zzz"])])) is None  # nothing to relay: no id used
    b2 = core.handle(frames(2, [removed([b"a"])], dp_rank=None))
    assert b2 is not None and b2.event_id == 2 and b2.dp_rank == 0
    assert core.num_seq_gaps == 0 and core.num_events_in == 3


def test_relay_core_counts_gaps_and_bad_messages() -> None:
    core = RelayCore()
    core.handle(frames(0, [stored([b"a"], None, TOKENS[:4])]))
    core.handle(frames(5, [stored([b"b"], b"a", TOKENS[4:8])]))
    assert core.num_seq_gaps == 1
    assert core.handle([b"only", b"two"]) is None
    assert core.handle([b"t", (6).to_bytes(8, "big"), b"\xc1"]) is None
    assert core.num_bad_batches == 2


def test_relay_core_dump_is_valid_as_of_last_event_id() -> None:
    core = RelayCore(worker_id=7)
    core.handle(frames(0, [stored([b"a", b"b"], None, TOKENS[:8])]))
    dump = core.dump()
    assert (dump.worker_id, dump.event_id) == (7, 1)
    assert [e.block_hashes[0] for e in dump.events] == block_sequence_hashes(TOKENS[:8], BS)
