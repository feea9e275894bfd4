"""KV-cache events and load metrics published by engine workers on the event plane.

The event model is vLLM's (``vllm/distributed/kv_events.py``): ``BlockStored`` when full blocks
enter the prefix cache, ``BlockRemoved`` when they are evicted, ``AllBlocksCleared`` on reset.
Block hashes are stator/Dynamo *sequence* hashes (``stator.kv.hashing``), unsigned 64-bit ints.
Workers batch events in a ``KvEventBatch`` with a per-worker, monotonically increasing
``event_id`` (+1 per batch); a consumer that sees a gap asks the worker for a ``KvCacheDump``.
"""

from __future__ import annotations

import msgspec

from stator.protocols import PROTOCOL_VERSION

KV_EVENTS_TOPIC = "kv-events"
KV_METRICS_TOPIC = "kv-metrics"
ACTIVE_SEQUENCES_TOPIC = "active-sequences"


class BlockStored(msgspec.Struct, tag=True, omit_defaults=True, kw_only=True):
    """Full blocks stored, in prefix order. ``parent_block_hash`` precedes ``block_hashes[0]``.

    ``token_ids`` are the tokens of all the stored blocks concatenated
    (``len == block_size * len(block_hashes)``).
    """

    block_hashes: list[int]
    parent_block_hash: int | None
    token_ids: list[int]
    block_size: int
    medium: str | None = None
    lora_name: str | None = None


class BlockRemoved(msgspec.Struct, tag=True, omit_defaults=True, kw_only=True):
    """Blocks evicted from the cache (by sequence hash)."""

    block_hashes: list[int]
    medium: str | None = None


class AllBlocksCleared(msgspec.Struct, tag=True):
    """The worker dropped its whole cache."""


KvCacheEvent = BlockStored | BlockRemoved | AllBlocksCleared


class KvEventBatch(msgspec.Struct, kw_only=True):
    """A batch of events from one worker. ``event_id`` increases by exactly 1 per batch."""

    worker_id: int
    event_id: int
    events: list[KvCacheEvent]
    timestamp_s: float = 0.0
    dp_rank: int = 0
    version: str = PROTOCOL_VERSION


class KvCacheDump(msgspec.Struct, kw_only=True):
    """A worker's whole cache state, for gap recovery: its cached sequence hashes as stored
    events (parents before children), valid as of ``event_id`` (the last batch id it published).
    """

    worker_id: int
    event_id: int
    events: list[BlockStored]


class LoadMetrics(msgspec.Struct, kw_only=True):
    """A worker's load, published on ``kv-metrics`` after each engine step (or periodically).

    ``active_decode_blocks``: KV blocks held by running requests. ``active_prefill_tokens``:
    prompt tokens not yet prefilled. ``kv_cache_usage``: used / total blocks in [0, 1].
    """

    worker_id: int
    active_decode_blocks: int
    active_prefill_tokens: int
    num_waiting_reqs: int
    num_running_reqs: int
    kv_cache_usage: float
    total_kv_blocks: int
    timestamp_s: float = 0.0
