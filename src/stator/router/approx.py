"""Approximate KV indexing (``--no-router-kv-events``): the router's own decisions as the cache.

Without KV events, the router assumes that a worker it sent a request to holds that request's
prompt blocks for ``ttl_s`` seconds (``--router-ttl-secs``, 120) after the last request that
used them (Dynamo ``approx.rs``: routed prefixes are inserted with a TTL, refreshed on reuse).
Times are seconds on the caller's clock. No I/O.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from stator.router.indexer import KvIndexer, OverlapScores


class ApproxKvIndexer:
    """A ``KvIndexer`` fed by routing decisions, whose entries expire after ``ttl_s``.

    Raises:
        ValueError: ``ttl_s`` <= 0.
    """

    def __init__(self, ttl_s: float) -> None:
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl_s}")
        self.ttl_s = ttl_s
        self.index = KvIndexer()
        self._expiry: dict[int, dict[int, float]] = {}  # worker → {seq hash: expiry s}
        self._queue: deque[tuple[float, int, Sequence[int]]] = deque()

    def add_worker(self, worker_id: int) -> None:
        """Start tracking ``worker_id`` (idempotent)."""
        self.index.add_worker(worker_id)
        self._expiry.setdefault(worker_id, {})

    def remove_worker(self, worker_id: int) -> None:
        """Forget the worker and its recorded blocks (idempotent)."""
        self.index.remove_worker(worker_id)
        self._expiry.pop(worker_id, None)

    def record_routed(self, worker_id: int, seq_hashes: Sequence[int], now_s: float) -> None:
        """The router sent a request with ``seq_hashes`` to ``worker_id`` at ``now_s``: assume
        those blocks cached there until ``now_s + ttl_s`` (refreshing earlier entries)."""
        self.expire(now_s)
        self.add_worker(worker_id)
        self.index.store_blocks(worker_id, seq_hashes)
        until = now_s + self.ttl_s
        expiry = self._expiry[worker_id]
        for h in seq_hashes:
            expiry[h] = until
        self._queue.append((until, worker_id, seq_hashes))

    def expire(self, now_s: float) -> int:
        """Drop entries whose TTL has passed at ``now_s``; returns how many blocks were dropped."""
        dropped = 0
        queue = self._queue
        while queue and queue[0][0] <= now_s:
            _, worker_id, hashes = queue.popleft()
            expiry = self._expiry.get(worker_id)
            if expiry is None:
                continue
            stale = [h for h in hashes if expiry.get(h, now_s + 1) <= now_s]
            for h in stale:
                del expiry[h]
            self.index.remove_blocks(worker_id, stale)
            dropped += len(stale)
        return dropped

    def find_matches(self, seq_hashes: Sequence[int], now_s: float) -> OverlapScores:
        """``KvIndexer.find_matches`` after expiring entries older than the TTL."""
        self.expire(now_s)
        return self.index.find_matches(seq_hashes)
