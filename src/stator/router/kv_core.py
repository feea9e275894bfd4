"""``KvRouterCore``: KV-cache-aware routing (``--router-mode kv``) without I/O.

Per request: the prompt's block sequence hashes go to the indexer (``find_matches`` → each
worker's overlap and cached-block count), the booked load comes from ``ActiveSequences``, and
``selector.select_worker`` applies the DESIGN.md cost. With ``router_kv_events`` off
(approximate mode) the indexer is fed by the router's own decisions with a TTL instead of the
workers' KV events. Workers whose event stream shows a gap are listed by
``pending_dump_requests`` until their ``KvCacheDump`` is applied with ``apply_kv_dump``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from stator.protocols.kv_events import KvCacheDump, KvEventBatch
from stator.router.approx import ApproxKvIndexer
from stator.router.base import RoutingDecision
from stator.router.config import RouterConfig
from stator.router.indexer import KvIndexer, OverlapScores
from stator.router.selector import WorkerCandidate, select_worker
from stator.router.sequences import DEFAULT_SEQUENCE_TTL_S
from stator.router.simple import LoadTrackingCore, RouteRequest


class KvRouterCore(LoadTrackingCore):
    """KV-aware ``RouterCore``. ``config`` supplies the weight, temperature, approximate mode
    and its TTL; ``block_size`` is tokens per KV block; ``rng`` breaks ties and samples."""

    def __init__(
        self,
        block_size: int,
        *,
        config: RouterConfig | None = None,
        rng: random.Random | None = None,
        sequence_ttl_s: float = DEFAULT_SEQUENCE_TTL_S,
    ) -> None:
        super().__init__(block_size, rng=rng, sequence_ttl_s=sequence_ttl_s)
        self.config = config if config is not None else RouterConfig(router_mode="kv")
        self.approx: ApproxKvIndexer | None = None
        if self.config.router_kv_events:
            self.indexer = KvIndexer()
        else:
            self.approx = ApproxKvIndexer(self.config.router_ttl_secs)
            self.indexer = self.approx.index
        self._dump_requests: set[int] = set()

    # -- RouterCore ----------------------------------------------------------------------------

    def add_worker(self, worker_id: int) -> None:
        """A worker joined (idempotent)."""
        super().add_worker(worker_id)
        self.indexer.add_worker(worker_id)

    def remove_worker(self, worker_id: int) -> None:
        """A worker left: forget its cached blocks and booked load (idempotent)."""
        super().remove_worker(worker_id)
        if self.approx is not None:
            self.approx.remove_worker(worker_id)
        else:
            self.indexer.remove_worker(worker_id)
        self._dump_requests.discard(worker_id)

    def apply_kv_events(self, batch: KvEventBatch) -> None:
        """Apply a worker's KV events (ignored in approximate mode or for unknown workers).

        A gap in the worker's event ids puts it on ``pending_dump_requests``.
        """
        if self.approx is not None or batch.worker_id not in self.sequences:
            return
        if self.indexer.apply_event_batch(batch):
            self._dump_requests.add(batch.worker_id)

    # -- gap recovery --------------------------------------------------------------------------

    def pending_dump_requests(self) -> list[int]:
        """Workers to ask for a ``KvCacheDump`` (each listed once per detected gap)."""
        workers = sorted(self._dump_requests)
        self._dump_requests.clear()
        return workers

    def apply_kv_dump(self, dump: KvCacheDump) -> None:
        """Replace a worker's indexed blocks with its dump (ignored for unknown workers)."""
        if self.approx is None and dump.worker_id in self.sequences:
            self.indexer.apply_dump(dump)

    # -- policy --------------------------------------------------------------------------------

    def overlaps(self, block_hashes: Sequence[int], now_s: float) -> OverlapScores:
        """Each worker's cached prefix (blocks) for ``block_hashes``, and its cached-block count."""
        if self.approx is not None:
            return self.approx.find_matches(block_hashes, now_s)
        return self.indexer.find_matches(block_hashes)

    def _choose(
        self, request: RouteRequest, candidates: Sequence[int], now_s: float
    ) -> RoutingDecision:
        found = self.overlaps(request.block_hashes, now_s)
        hashes = set(request.block_hashes)
        seqs = self.sequences
        options = [
            WorkerCandidate(
                worker_id=w,
                overlap_blocks=found.scores.get(w, 0),
                cached_blocks=found.tree_sizes.get(w, 0),
                active_prefill_tokens=seqs.active_prefill_tokens(w),
                active_decode_blocks=seqs.active_decode_blocks(w),
                new_blocks=seqs.new_blocks(w, hashes),
            )
            for w in candidates
        ]
        chosen = select_worker(
            options,
            request.isl,
            self.block_size,
            overlap_weight=self.config.router_kv_overlap_score_weight,
            temperature=self.config.router_temperature,
            rng=self.rng,
        )
        return RoutingDecision(chosen.worker_id, chosen.overlap_blocks)

    def _overlap_on(self, worker_id: int, request: RouteRequest, now_s: float) -> int:
        return self.overlaps(request.block_hashes, now_s).scores.get(worker_id, 0)

    def _book(self, request: RouteRequest, decision: RoutingDecision, now_s: float) -> None:
        super()._book(request, decision, now_s)
        if self.approx is not None:
            self.approx.record_routed(decision.worker_id, request.block_hashes, now_s)
