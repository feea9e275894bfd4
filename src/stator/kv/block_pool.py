"""A paged KV block pool with prefix caching, reference counts and LRU reuse of freed blocks.

The model is vLLM v1's ``BlockPool`` (``vllm/v1/core/block_pool.py``) as simulated by NVIDIA
Dynamo's mocker (``lib/mocker/src/cache/vllm_block_pool.rs``): the pool has ``num_blocks``
physical blocks. A request's blocks are *private* until they are full and computed; then the
caller caches them under their sequence hash (``stator.kv.hashing``), where later requests with
the same prefix can share them. Cached blocks are reference-counted; at zero references they stay
cached but become *inactive* and join an LRU queue (oldest first). A new allocation takes free
capacity first and evicts inactive blocks from the LRU head only when none is left. Two requests
that compute the same block at the same time hold two physical copies of one hash; the hash
leaves the cache when its last copy is evicted.

Every change to the set of cached hashes is recorded as a KV event (``BlockStored`` with token
ids and parent hash, ``BlockRemoved`` on eviction, ``AllBlocksCleared``), drained with
``take_events``. The pool does no I/O.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy.typing as npt

from stator.protocols.kv_events import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    KvCacheEvent,
)

TokenIds = Sequence[int] | npt.NDArray[Any]
"""A block's token ids: a list or a numpy array (kept by reference, converted for events)."""


class CachedBlock:
    """One physical copy of a full, computed block in the prefix cache.

    ``block_hash``: its sequence hash; ``parent_hash``: the previous block's (None for the
    first block); ``token_ids``: its ``block_size`` tokens (kept only when events are recorded);
    ``ref_count``: requests using it (0 = inactive, in the LRU); ``indexed``: still findable by
    hash (False after ``clear`` for blocks that were in use then).
    """

    __slots__ = ("block_hash", "indexed", "parent_hash", "ref_count", "token_ids")

    def __init__(
        self, block_hash: int, parent_hash: int | None, token_ids: TokenIds | None
    ) -> None:
        self.block_hash = block_hash
        self.parent_hash = parent_hash
        self.token_ids = token_ids
        self.ref_count = 1
        self.indexed = True

    def __repr__(self) -> str:
        return f"CachedBlock({self.block_hash:#x}, refs={self.ref_count})"


@dataclass(frozen=True, slots=True)
class PrefixMatch:
    """A prefix lookup: ``num_blocks`` leading blocks are cached, ``num_active`` of them are in
    use by some request (the rest are inactive, in the LRU)."""

    num_blocks: int
    num_active: int


class BlockPool:
    """``num_blocks`` physical KV blocks of ``block_size`` tokens with a prefix cache.

    ``record_events``: keep KV events (and block token ids) for ``take_events``/``dump``;
    turn off when nobody consumes them (offline replay with a cache-blind router).

    Raises:
        ValueError: ``num_blocks`` or ``block_size`` < 1.
    """

    def __init__(self, num_blocks: int, block_size: int, *, record_events: bool = True) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError(
                f"num_blocks and block_size must be >= 1, got {num_blocks}, {block_size}"
            )
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.record_events = record_events
        self._num_private = 0
        self._num_cached = 0  # physical cached copies, active or inactive
        self._by_hash: dict[int, CachedBlock] = {}
        self._duplicates: dict[int, list[CachedBlock]] = {}
        self._lru: OrderedDict[CachedBlock, None] = OrderedDict()
        self._events: list[KvCacheEvent] = []

    # -- queries ------------------------------------------------------------------------------

    @property
    def num_used(self) -> int:
        """Physical blocks holding data (private + cached, active or inactive)."""
        return self._num_private + self._num_cached

    @property
    def num_free(self) -> int:
        """Blocks holding nothing (usable without eviction)."""
        return self.num_blocks - self._num_private - self._num_cached

    @property
    def num_inactive(self) -> int:
        """Cached blocks no request uses (evictable, in LRU order)."""
        return len(self._lru)

    @property
    def num_active(self) -> int:
        """Blocks in use by requests (private + referenced cached copies)."""
        return self._num_private + self._num_cached - len(self._lru)

    @property
    def num_cached_hashes(self) -> int:
        """Distinct sequence hashes findable in the cache."""
        return len(self._by_hash)

    @property
    def usage(self) -> float:
        """KV-cache utilisation: ``num_active / num_blocks`` in [0, 1]."""
        return self.num_active / self.num_blocks

    def contains(self, block_hash: int) -> bool:
        """Whether some copy of ``block_hash`` is cached."""
        return block_hash in self._by_hash

    def match_prefix(self, block_hashes: Sequence[int], max_blocks: int) -> PrefixMatch:
        """Longest cached prefix of ``block_hashes`` (at most ``max_blocks`` blocks)."""
        by_hash = self._by_hash
        num = num_active = 0
        for block_hash in block_hashes[:max_blocks]:
            block = by_hash.get(block_hash)
            if block is None:
                break
            num += 1
            if block.ref_count:
                num_active += 1
        return PrefixMatch(num, num_active)

    def can_allocate(self, num_fresh: int) -> bool:
        """Whether ``num_fresh`` private blocks fit (counting evictable inactive blocks)."""
        return num_fresh <= self.num_free + len(self._lru)

    # -- commands -----------------------------------------------------------------------------

    def allocate(self, prefix_hashes: Sequence[int], num_fresh: int) -> list[CachedBlock] | None:
        """Take references on the cached blocks of ``prefix_hashes`` and ``num_fresh`` private
        blocks, evicting inactive blocks (LRU first) when free capacity runs out.

        Returns the prefix blocks in order, or None (and changes nothing) when the capacity
        does not suffice.

        Raises:
            KeyError: a prefix hash is not cached (look it up with ``match_prefix`` first).
        """
        hits = [self._by_hash[h] for h in prefix_hashes]
        need_evict = num_fresh - self.num_free
        if need_evict > 0:
            inactive_hits = sum(1 for block in hits if block.ref_count == 0)
            if need_evict > len(self._lru) - inactive_hits:
                return None
        lru = self._lru
        for block in hits:
            if block.ref_count == 0:
                del lru[block]
            block.ref_count += 1
        if need_evict > 0:
            self._evict(need_evict)
        self._num_private += num_fresh
        return hits

    def cache_block(
        self, block_hash: int, parent_hash: int | None, token_ids: TokenIds | None
    ) -> CachedBlock:
        """Turn one of the caller's private blocks (full and computed) into a cached block with
        one reference; records ``BlockStored`` when the hash is new to the cache.

        Raises:
            ValueError: the pool holds no private block.
        """
        if self._num_private < 1:
            raise ValueError("cache_block: no private block to cache")
        self._num_private -= 1
        self._num_cached += 1
        block = CachedBlock(block_hash, parent_hash, token_ids if self.record_events else None)
        primary = self._by_hash.get(block_hash)
        if primary is None:
            self._by_hash[block_hash] = block
            if self.record_events:
                self._record_stored(block)
        else:
            self._duplicates.setdefault(block_hash, []).append(block)
        return block

    def cache_chain(
        self, block_hashes: Sequence[int], parent_hash: int | None, token_ids: TokenIds | None
    ) -> list[CachedBlock]:
        """``cache_block`` for consecutive blocks of one request: ``block_hashes[0]`` follows
        ``parent_hash``; ``token_ids`` are their tokens concatenated (or None). Records one
        ``BlockStored`` per run of hashes new to the cache.

        Raises:
            ValueError: fewer private blocks than ``block_hashes``.
        """
        num = len(block_hashes)
        if num > self._num_private:
            raise ValueError(f"cache_chain: {num} blocks but {self._num_private} private")
        self._num_private -= num
        self._num_cached += num
        record = self.record_events and token_ids is not None
        bs = self.block_size
        by_hash = self._by_hash
        out: list[CachedBlock] = []
        run_start = -1  # first index of the current run of hashes new to the cache
        parent = parent_hash
        for i, block_hash in enumerate(block_hashes):
            tokens = token_ids[i * bs : (i + 1) * bs] if record and token_ids is not None else None
            block = CachedBlock(block_hash, parent, tokens)
            out.append(block)
            parent = block_hash
            if block_hash in by_hash:
                self._duplicates.setdefault(block_hash, []).append(block)
                if run_start >= 0:
                    self._record_run(out, run_start, i, token_ids)
                    run_start = -1
                continue
            by_hash[block_hash] = block
            if record and run_start < 0:
                run_start = i
        if run_start >= 0:
            self._record_run(out, run_start, num, token_ids)
        return out

    def _record_run(
        self, blocks: list[CachedBlock], start: int, end: int, token_ids: TokenIds | None
    ) -> None:
        """One ``BlockStored`` for ``blocks[start:end]`` (consecutive, tokens in ``token_ids``)."""
        bs = self.block_size
        tokens = _as_list(token_ids[start * bs : end * bs]) if token_ids is not None else []
        self._events.append(
            BlockStored(
                block_hashes=[b.block_hash for b in blocks[start:end]],
                parent_block_hash=blocks[start].parent_hash,
                token_ids=tokens,
                block_size=bs,
            )
        )

    def release(self, blocks: Sequence[CachedBlock], num_private: int) -> None:
        """Drop one reference on each of ``blocks`` and free ``num_private`` private blocks.

        Pass ``blocks`` in eviction-priority order: vLLM frees a request's blocks tail first, so
        its last blocks are evicted before its shared prefix.

        Raises:
            ValueError: more private blocks than the pool holds.
        """
        if num_private > self._num_private:
            raise ValueError(f"release: {num_private} private blocks > {self._num_private} held")
        self._num_private -= num_private
        lru = self._lru
        for block in blocks:
            block.ref_count -= 1
            if block.ref_count == 0:
                if block.indexed:
                    lru[block] = None
                else:
                    self._num_cached -= 1

    def clear(self) -> None:
        """Drop every cached hash: inactive blocks are freed, blocks in use stay allocated to
        their requests but can no longer be found. Records ``AllBlocksCleared``."""
        for block in self._lru:
            self._num_cached -= 1
            block.indexed = False
        self._lru.clear()
        for block in self._by_hash.values():
            block.indexed = False
        for copies in self._duplicates.values():
            for block in copies:
                block.indexed = False
        self._by_hash.clear()
        self._duplicates.clear()
        if self.record_events:
            self._events.append(AllBlocksCleared())

    def take_events(self) -> list[KvCacheEvent]:
        """The KV events recorded since the last call, in order."""
        events, self._events = self._events, []
        return events

    def dump(self) -> list[BlockStored]:
        """Every cached hash as a one-block ``BlockStored``, parents before children (for a
        consumer that lost events). Token ids are empty when events are not recorded."""
        out: list[BlockStored] = []
        emitted: set[int] = set()
        for block in self._by_hash.values():
            chain: list[CachedBlock] = []
            current: CachedBlock | None = block
            while current is not None and current.block_hash not in emitted:
                chain.append(current)
                emitted.add(current.block_hash)
                parent = current.parent_hash
                current = self._by_hash.get(parent) if parent is not None else None
            out.extend(self._stored_event([b]) for b in reversed(chain))
        return out

    # -- internals ----------------------------------------------------------------------------

    def _evict(self, num: int) -> None:
        """Evict ``num`` inactive blocks, LRU first."""
        pop = self._lru.popitem
        by_hash = self._by_hash
        duplicates = self._duplicates
        removed: list[int] = []
        for _ in range(num):
            block, _ = pop(last=False)
            block.indexed = False
            block_hash = block.block_hash
            if duplicates and block_hash in duplicates:
                self._evict_copy(block)  # another copy keeps the hash cached
                continue
            del by_hash[block_hash]
            removed.append(block_hash)
        self._num_cached -= num
        if removed and self.record_events:
            last = self._events[-1] if self._events else None
            if isinstance(last, BlockRemoved):
                last.block_hashes.extend(removed)
            else:
                self._events.append(BlockRemoved(block_hashes=removed))

    def _evict_copy(self, block: CachedBlock) -> None:
        """Drop one of several physical copies of a hash."""
        block_hash = block.block_hash
        copies = self._duplicates[block_hash]
        if self._by_hash.get(block_hash) is block:
            self._by_hash[block_hash] = copies.pop()
        else:
            copies.remove(block)
        if not copies:
            del self._duplicates[block_hash]

    def _record_stored(self, block: CachedBlock) -> None:
        last = self._events[-1] if self._events else None
        if (
            isinstance(last, BlockStored)
            and last.block_hashes[-1] == block.parent_hash
            and block.token_ids is not None
        ):
            last.block_hashes.append(block.block_hash)
            last.token_ids.extend(_as_list(block.token_ids))
            return
        self._events.append(self._stored_event([block]))

    def _stored_event(self, blocks: list[CachedBlock]) -> BlockStored:
        token_ids: list[int] = []
        for block in blocks:
            if block.token_ids is not None:
                token_ids.extend(_as_list(block.token_ids))
        return BlockStored(
            block_hashes=[b.block_hash for b in blocks],
            parent_block_hash=blocks[0].parent_hash,
            token_ids=token_ids,
            block_size=self.block_size,
        )


def _as_list(token_ids: TokenIds) -> list[int]:
    tolist = getattr(token_ids, "tolist", None)
    return list(tolist()) if tolist is not None else list(token_ids)
