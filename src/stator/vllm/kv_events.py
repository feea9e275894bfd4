"""vLLM's KV-cache events → stator's, with vLLM block hashes replaced by stator sequence hashes.

vLLM publishes on ZMQ multipart ``[topic, seq (8-byte big-endian), payload]``, where ``payload``
is msgpack ``[ts, [events], dp_rank?]`` (``vllm/distributed/kv_events.py``, ``EventBatch`` is
``array_like``). Each event is a tagged struct: a map ``{"type": "BlockStored", ...}`` in vLLM
0.11+ (``KVCacheEvent`` with ``tag=True``), an array ``["BlockStored", field, ...]`` in older
releases that made the events ``array_like`` too; both are read.

Why hashes are converted: vLLM's block hashes (sha256 over the parent hash, the tokens and extra
keys, or its 64-bit truncation) are not the sequence hashes the KV router computes from a
request's tokens (``stator.kv.hashing``, Dynamo's xxh3 scheme). So for every ``BlockStored`` the
converter hashes the event's ``token_ids`` block by block with stator's scheme, chaining from the
*stator* hash of the parent block, and remembers ``vLLM hash → stator hash`` so a later
``BlockRemoved`` (which carries only vLLM hashes) can be translated. A stored block whose parent
is unknown (its store event was lost) cannot be chained and is dropped, with its descendants.
The map is a set, like vLLM's cache: a block re-announced (vLLM reports prefix-cache reuse as
stores) maps to the same hash, and one remove forgets it. Events of KV-cache groups other than
the first (hybrid models) are skipped: group 0 covers every token, so it alone says which prefix
is cached. LoRA adapters are not part of stator's hash: blocks of different adapters over the same
tokens share a stator hash (``lora_name`` is passed along).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from stator.kv.hashing import extend_sequence_hash, local_block_hashes
from stator.protocols.kv_events import AllBlocksCleared, BlockRemoved, BlockStored, KvCacheEvent

VllmHash = int | bytes
"""vLLM's ``ExternalBlockHash``: sha256 bytes, or a 64-bit int when
``VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES`` is set."""

_ARRAY_FIELDS = {
    "BlockStored": (
        "block_hashes",
        "parent_block_hash",
        "token_ids",
        "block_size",
        "lora_id",
        "medium",
        "lora_name",
    ),
    "BlockRemoved": ("block_hashes", "medium"),
    "AllBlocksCleared": (),
}
"""Field order of the ``array_like`` encoding of older vLLM releases."""


class KvEventDecodeError(ValueError):
    """A payload that is not a vLLM ``KVEventBatch``."""


@dataclass(frozen=True, slots=True)
class VllmEventBatch:
    """One decoded vLLM batch: ``ts`` (Unix s), raw events as dicts with a ``type`` key."""

    ts: float
    events: list[dict[str, Any]]
    dp_rank: int


def decode_vllm_batch(payload: bytes) -> VllmEventBatch:
    """Decode a vLLM ``KVEventBatch`` msgpack payload.

    Raises:
        KvEventDecodeError: not msgpack, or not ``[ts, [events], dp_rank?]``.
    """
    try:
        raw = msgspec.msgpack.decode(payload)
    except msgspec.DecodeError as exc:
        raise KvEventDecodeError(f"not msgpack: {exc}") from exc
    if not isinstance(raw, list) or len(raw) < 2 or not isinstance(raw[1], list):
        raise KvEventDecodeError(f"expected [ts, [events], dp_rank], got {type(raw).__name__}")
    dp_rank = raw[2] if len(raw) > 2 and isinstance(raw[2], int) else 0
    return VllmEventBatch(float(raw[0]), [_event_dict(e) for e in raw[1]], dp_rank)


def _event_dict(event: Any) -> dict[str, Any]:
    if isinstance(event, dict):
        if "type" not in event:
            raise KvEventDecodeError(f"event without a type tag: {sorted(event)}")
        return event
    if isinstance(event, list) and event and event[0] in _ARRAY_FIELDS:
        return {"type": event[0], **dict(zip(_ARRAY_FIELDS[event[0]], event[1:], strict=False))}
    raise KvEventDecodeError(f"unrecognised event {event!r:.80}")


@dataclass(frozen=True, slots=True)
class TrackedBlock:
    """A cached block as the router knows it: its stator hash, parent's, tokens (one block)."""

    seq_hash: int
    parent: int | None
    token_ids: tuple[int, ...]


class KvEventConverter:
    """Translates one vLLM engine's events into stator events and tracks its cached blocks.

    Not thread-safe; one per worker. ``num_dropped``: stored blocks dropped (unknown parent or
    tokens missing).
    """

    def __init__(self) -> None:
        self._blocks: dict[VllmHash, TrackedBlock] = {}
        self.num_dropped = 0

    def __len__(self) -> int:
        return len(self._blocks)

    def convert(self, events: Sequence[dict[str, Any]]) -> list[KvCacheEvent]:
        """stator events for ``events`` (a vLLM batch), applied to the tracked state."""
        out: list[KvCacheEvent] = []
        for event in events:
            if event.get("group_idx") not in (None, 0):
                continue
            kind = event["type"]
            if kind == "BlockStored":
                stored = self._store(event)
                if stored is not None:
                    out.append(stored)
            elif kind == "BlockRemoved":
                removed = self._remove(event)
                if removed is not None:
                    out.append(removed)
            elif kind == "AllBlocksCleared":
                self._blocks.clear()
                out.append(AllBlocksCleared())
        return out

    def dump(self) -> list[BlockStored]:
        """Every tracked block as a one-block ``BlockStored``, parents before children."""
        by_hash = {b.seq_hash: b for b in self._blocks.values()}
        emitted: set[int] = set()
        out: list[BlockStored] = []
        for block in by_hash.values():
            for b in _ancestry(block, by_hash, emitted):
                emitted.add(b.seq_hash)
                out.append(
                    BlockStored(
                        block_hashes=[b.seq_hash],
                        parent_block_hash=b.parent,
                        token_ids=list(b.token_ids),
                        block_size=len(b.token_ids),
                    )
                )
        return out

    def _store(self, event: dict[str, Any]) -> BlockStored | None:
        vllm_hashes: list[VllmHash] = list(event.get("block_hashes") or [])
        block_size = int(event.get("block_size") or 0)
        tokens: list[int] = list(event.get("token_ids") or [])
        vllm_parent = event.get("parent_block_hash")
        unknown_parent = vllm_parent is not None and vllm_parent not in self._blocks
        if unknown_parent or block_size < 1 or len(tokens) < block_size * len(vllm_hashes):
            self.num_dropped += len(vllm_hashes)
            return None
        parent_hash = self._blocks[vllm_parent].seq_hash if vllm_parent is not None else None
        seq_hashes: list[int] = []
        prev = parent_hash
        for i, local in enumerate(local_block_hashes(tokens, block_size)[: len(vllm_hashes)]):
            prev = extend_sequence_hash(prev, local)
            block_tokens = tuple(tokens[i * block_size : (i + 1) * block_size])
            parent_of_block = seq_hashes[-1] if seq_hashes else parent_hash
            self._blocks[vllm_hashes[i]] = TrackedBlock(prev, parent_of_block, block_tokens)
            seq_hashes.append(prev)
        if not seq_hashes:
            return None
        return BlockStored(
            block_hashes=seq_hashes,
            parent_block_hash=parent_hash,
            token_ids=tokens[: block_size * len(seq_hashes)],
            block_size=block_size,
            medium=event.get("medium"),
            lora_name=event.get("lora_name"),
        )

    def _remove(self, event: dict[str, Any]) -> BlockRemoved | None:
        removed: list[int] = []
        for h in event.get("block_hashes") or []:
            block = self._blocks.pop(h, None)
            if block is not None:
                removed.append(block.seq_hash)
        if not removed:
            return None
        return BlockRemoved(block_hashes=removed, medium=event.get("medium"))


def _ancestry(
    block: TrackedBlock, by_hash: dict[int, TrackedBlock], emitted: set[int]
) -> Iterator[TrackedBlock]:
    """``block`` and its not-yet-emitted tracked ancestors, oldest first."""
    chain: list[TrackedBlock] = []
    current: TrackedBlock | None = block
    while current is not None and current.seq_hash not in emitted:
        chain.append(current)
        current = by_hash.get(current.parent) if current.parent is not None else None
    return reversed(chain)
