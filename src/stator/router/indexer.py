"""KV indexer: which worker holds which KV block, keyed by block sequence hash.

Data layout (chosen for pure-Python speed; see ``stator bench indexer``):

- Workers are numbered into groups of ``GROUP_BITS`` (30); each group has one flat ``dict``
  sequence hash → bitmask of the group's workers holding that block. 30-bit masks stay
  single-digit Python ints, which keeps the per-block update near 10 M/s on one core (wider
  masks allocate multi-digit ints and run 2-3x slower).
- ``find_matches`` walks the request's hashes from block 0 in each group, AND-ing masks, and stops
  at the first block no worker of the group holds; a worker's score is the index where its bit
  dropped out (Dynamo's "consecutive matched blocks from block 0", ``indexer.rs``).
- Each worker's cached-block count is kept as a counter. Clearing or removing a worker scans its
  group's dict (rare events: worker leaves, ``AllBlocksCleared``, dump recovery).

Sequence hashes identify the whole prefix, so no tree is needed: block ``i`` of a request is
cached on a worker iff that worker stored the hash ``s[i]``.

Event ids: each worker's ``KvEventBatch.event_id`` must grow by 1. A gap means lost events; the
batch is still applied and ``apply_event_batch`` returns True once, asking the caller to fetch a
``KvCacheDump`` from that worker. Batches arriving while a dump is awaited are kept, and
re-applied on top of the dump when it comes (those newer than the dump's ``event_id``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice

from stator.protocols.kv_events import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    KvCacheDump,
    KvEventBatch,
)

MAX_BUFFERED_BATCHES = 4096  # per worker, while a dump is awaited
GROUP_BITS = 30  # workers per bitmask group: masks stay single-digit ints


@dataclass(frozen=True, slots=True)
class OverlapScores:
    """Result of ``find_matches``.

    ``scores``: worker id → number of consecutive request blocks, from block 0, the worker holds
    (only workers with at least 1). ``tree_sizes``: worker id → number of blocks the worker holds
    (every known worker; Dynamo's name for the cached-block count).
    """

    scores: dict[int, int]
    tree_sizes: dict[int, int]


class KvIndexer:
    """Cached block sequence hashes per worker, with prefix matching. No I/O."""

    def __init__(self) -> None:
        self._groups: list[dict[int, int]] = []  # group → {seq hash: worker bitmask}
        self._slot: dict[int, tuple[int, int]] = {}  # worker → (group index, bit)
        self._worker_at: list[int | None] = []  # slot index → worker
        self._free_slots: list[int] = []
        self._counts: dict[int, int] = {}  # worker → cached blocks
        self._last_event_id: dict[int, int] = {}
        self._buffered: dict[int, list[KvEventBatch]] = {}  # workers awaiting a dump

    # -- workers -------------------------------------------------------------------------------

    def add_worker(self, worker_id: int) -> None:
        """Start tracking ``worker_id`` with no blocks (idempotent)."""
        if worker_id in self._slot:
            return
        if self._free_slots:
            index = self._free_slots.pop()
            self._worker_at[index] = worker_id
        else:
            index = len(self._worker_at)
            self._worker_at.append(worker_id)
        group, offset = divmod(index, GROUP_BITS)
        while len(self._groups) <= group:
            self._groups.append({})
        self._slot[worker_id] = (group, 1 << offset)
        self._counts[worker_id] = 0

    def remove_worker(self, worker_id: int) -> None:
        """Forget the worker and all its blocks (idempotent)."""
        if worker_id not in self._slot:
            return
        self.clear_worker(worker_id)
        group, bit = self._slot.pop(worker_id)
        index = group * GROUP_BITS + bit.bit_length() - 1
        self._worker_at[index] = None
        self._free_slots.append(index)
        del self._counts[worker_id]
        self._last_event_id.pop(worker_id, None)
        self._buffered.pop(worker_id, None)

    def worker_ids(self) -> list[int]:
        """Tracked workers."""
        return list(self._slot)

    def num_blocks(self, worker_id: int) -> int:
        """Blocks cached on ``worker_id`` (0 if unknown)."""
        return self._counts.get(worker_id, 0)

    def __len__(self) -> int:
        """Distinct block hashes cached on any worker."""
        if len(self._groups) == 1:
            return len(self._groups[0])
        keys: set[int] = set()
        for owners in self._groups:
            keys.update(owners)
        return len(keys)

    # -- events --------------------------------------------------------------------------------

    def apply_event_batch(self, batch: KvEventBatch) -> bool:
        """Apply one worker's batch. Returns True when a gap in event ids was just detected,
        i.e. the caller should request a ``KvCacheDump`` from ``batch.worker_id``.

        Unknown workers are added. Batches with an id at or below the last applied one are
        ignored (duplicates). The first batch seen from a worker sets its baseline.
        """
        worker_id = batch.worker_id
        self.add_worker(worker_id)
        last = self._last_event_id.get(worker_id)
        if last is not None and batch.event_id <= last:
            return False
        gap = last is not None and batch.event_id != last + 1
        self._apply_events(worker_id, batch)
        self._last_event_id[worker_id] = batch.event_id
        buffered = self._buffered.get(worker_id)
        if buffered is not None:
            if len(buffered) < MAX_BUFFERED_BATCHES:
                buffered.append(batch)
            return False
        if gap:
            self._buffered[worker_id] = [batch]
        return gap

    def awaiting_dump(self, worker_id: int) -> bool:
        """True between a detected gap and the worker's dump being applied."""
        return worker_id in self._buffered

    def apply_dump(self, dump: KvCacheDump) -> None:
        """Replace the worker's blocks with the dump's, then re-apply batches received after the
        dump was taken (``event_id`` > ``dump.event_id``). Clears the awaiting-dump state."""
        worker_id = dump.worker_id
        self.add_worker(worker_id)
        self.clear_worker(worker_id)
        for event in dump.events:
            self._store(worker_id, event.block_hashes)
        last = dump.event_id
        for batch in self._buffered.pop(worker_id, []):
            if batch.event_id > last:
                self._apply_events(worker_id, batch)
                last = batch.event_id
        self._last_event_id[worker_id] = max(last, self._last_event_id.get(worker_id, last))

    def clear_worker(self, worker_id: int) -> None:
        """Drop every block of the worker, keeping it tracked. Cost: a scan of its group."""
        slot = self._slot.get(worker_id)
        if slot is None or not self._counts[worker_id]:
            return
        group, bit = slot
        owners = self._groups[group]
        mine = [h for h, mask in owners.items() if mask & bit]
        for h in mine:
            mask = owners[h] ^ bit
            if mask:
                owners[h] = mask
            else:
                del owners[h]
        self._counts[worker_id] = 0

    def store_blocks(self, worker_id: int, block_hashes: Sequence[int]) -> None:
        """Record ``block_hashes`` as cached on ``worker_id`` (adds the worker if unknown)."""
        self.add_worker(worker_id)
        self._store(worker_id, block_hashes)

    def remove_blocks(self, worker_id: int, block_hashes: Sequence[int]) -> None:
        """Record ``block_hashes`` as evicted from ``worker_id`` (unknown hashes are ignored)."""
        if worker_id in self._slot:
            self._remove(worker_id, block_hashes)

    def _apply_events(self, worker_id: int, batch: KvEventBatch) -> None:
        group, bit = self._slot[worker_id]
        owners = self._groups[group]
        count = self._counts[worker_id]
        for event in batch.events:
            if isinstance(event, BlockStored):
                count += _add_bit(owners, bit, event.block_hashes)
            elif isinstance(event, BlockRemoved):
                count -= _drop_bit(owners, bit, event.block_hashes)
            elif isinstance(event, AllBlocksCleared):
                self._counts[worker_id] = count
                self.clear_worker(worker_id)
                count = 0
        self._counts[worker_id] = count

    def _store(self, worker_id: int, block_hashes: Sequence[int]) -> None:
        group, bit = self._slot[worker_id]
        self._counts[worker_id] += _add_bit(self._groups[group], bit, block_hashes)

    def _remove(self, worker_id: int, block_hashes: Sequence[int]) -> None:
        group, bit = self._slot[worker_id]
        self._counts[worker_id] -= _drop_bit(self._groups[group], bit, block_hashes)

    # -- queries -------------------------------------------------------------------------------

    def find_matches(self, seq_hashes: Sequence[int]) -> OverlapScores:
        """Each worker's consecutive matched blocks from block 0, and every worker's size.

        ``seq_hashes``: the request's block sequence hashes, in order. Cost: per worker group,
        one dict lookup per block up to the first block no worker of the group holds.
        """
        return OverlapScores(self.match_scores(seq_hashes), self.tree_sizes())

    def match_scores(self, seq_hashes: Sequence[int]) -> dict[int, int]:
        """``find_matches(...).scores`` alone (no per-worker sizes)."""
        scores: dict[int, int] = {}
        if not seq_hashes:
            return scores
        first = seq_hashes[0]
        for group, owners in enumerate(self._groups):
            active = owners.get(first, 0)
            if active:
                self._walk(owners, active, seq_hashes, group * GROUP_BITS, scores)
        return scores

    def tree_sizes(self) -> dict[int, int]:
        """Worker id → cached-block count, for every tracked worker."""
        return dict(self._counts)

    def _walk(
        self,
        owners: dict[int, int],
        active: int,
        seq_hashes: Sequence[int],
        base: int,
        scores: dict[int, int],
    ) -> None:
        get = owners.get
        depth = 1
        for h in islice(seq_hashes, 1, None):
            mask = active & get(h, 0)
            if mask != active:
                self._score_bits(active ^ mask, depth, base, scores)
                if not mask:
                    return
                active = mask
            depth += 1
        self._score_bits(active, depth, base, scores)

    def _score_bits(self, bits: int, depth: int, base: int, scores: dict[int, int]) -> None:
        worker_at = self._worker_at
        while bits:
            low = bits & -bits
            worker = worker_at[base + low.bit_length() - 1]
            if worker is not None:
                scores[worker] = depth
            bits ^= low


def _add_bit(owners: dict[int, int], bit: int, block_hashes: Sequence[int]) -> int:
    """Set ``bit`` on each hash (the hot loop of the indexer); returns how many were new."""
    get = owners.get
    added = 0
    for h in block_hashes:
        mask = get(h, 0)
        if not mask & bit:
            owners[h] = mask | bit
            added += 1
    return added


def _drop_bit(owners: dict[int, int], bit: int, block_hashes: Sequence[int]) -> int:
    """Clear ``bit`` on each hash that has it (deleting empty entries); returns how many."""
    get = owners.get
    removed = 0
    for h in block_hashes:
        mask = get(h, 0)
        if mask & bit:
            mask ^= bit
            if mask:
                owners[h] = mask
            else:
                del owners[h]
            removed += 1
    return removed
