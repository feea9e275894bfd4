"""Load-tracking router cores and the simple policies: round-robin, random, power-of-two choices,
least-loaded and direct.

``LoadTrackingCore`` is the shared base of every stator ``RouterCore``: it keeps the worker set,
books each routed request's load in ``ActiveSequences`` (blocks and prefill tokens, released at
the first token and at the end) and remembers each worker's reported ``total_kv_blocks``, so the
admission queue can judge busy workers the same way in every mode. Subclasses only choose.
"""

from __future__ import annotations

import random
from abc import abstractmethod
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from stator.errors import InvalidRequestError, NoInstanceError, NotFoundError
from stator.kv.hashing import TokenIds, block_sequence_hashes
from stator.protocols.kv_events import KvEventBatch, LoadMetrics
from stator.router.base import RouterCore, RoutingDecision
from stator.router.sequences import DEFAULT_SEQUENCE_TTL_S, ActiveSequences


@dataclass(frozen=True, slots=True)
class WorkerLoad:
    """A worker's load as booked by this router.

    ``active_decode_blocks``: distinct KV blocks of its in-flight requests;
    ``active_prefill_tokens``: prompt tokens not yet prefilled; ``num_active_requests``;
    ``total_kv_blocks``: its KV capacity as last reported (None until a report arrives).
    """

    worker_id: int
    active_decode_blocks: int
    active_prefill_tokens: int
    num_active_requests: int
    total_kv_blocks: int | None


@dataclass(frozen=True, slots=True)
class RouteRequest:
    """What a policy sees of a request: ``block_hashes`` (sequence hashes of its full blocks)
    and ``isl`` (prompt tokens)."""

    request_id: str
    block_hashes: list[int]
    isl: int


class LoadTrackingCore(RouterCore):
    """Base of the stator router cores: worker set, load booking, pinning, exclusion.

    ``block_size``: tokens per KV block. ``rng``: randomness for ties and random policies
    (seed it for reproducible runs). ``sequence_ttl_s``: seconds after which a booked request
    that never finished is dropped.
    """

    def __init__(
        self,
        block_size: int,
        *,
        rng: random.Random | None = None,
        sequence_ttl_s: float = DEFAULT_SEQUENCE_TTL_S,
    ) -> None:
        self.block_size = block_size
        self.rng = rng if rng is not None else random.Random()
        self.sequences = ActiveSequences(block_size, ttl_s=sequence_ttl_s)
        self._workers: list[int] = []  # sorted
        self._total_kv_blocks: dict[int, int] = {}

    # -- RouterCore ----------------------------------------------------------------------------

    def add_worker(self, worker_id: int) -> None:
        """A worker joined (idempotent)."""
        if worker_id not in self.sequences:
            self.sequences.add_worker(worker_id)
            self._workers.append(worker_id)
            self._workers.sort()

    def remove_worker(self, worker_id: int) -> None:
        """A worker left: forget its booked load and reported capacity (idempotent)."""
        if worker_id in self.sequences:
            self.sequences.remove_worker(worker_id)
            self._workers.remove(worker_id)
        self._total_kv_blocks.pop(worker_id, None)

    def route(
        self,
        request_id: str,
        token_ids: TokenIds,
        now_s: float,
        *,
        pinned_worker_id: int | None = None,
        exclude: Collection[int] = (),
    ) -> RoutingDecision:
        """Pick a worker (the pinned one if given), book the request there, return the choice.

        ``exclude``: workers not to pick (e.g. busy ones); ignored for a pinned worker.

        Raises:
            NoInstanceError: no worker is known, or all are excluded.
            NotFoundError: ``pinned_worker_id`` is not a known worker.
            InvalidRequestError: the policy needs a pinned worker (direct) and none was given.
        """
        request = RouteRequest(
            request_id, block_sequence_hashes(token_ids, self.block_size), len(token_ids)
        )
        if pinned_worker_id is not None:
            if pinned_worker_id not in self.sequences:
                raise NotFoundError(f"worker {pinned_worker_id} is not a live instance")
            overlap = self._overlap_on(pinned_worker_id, request, now_s)
            decision = RoutingDecision(pinned_worker_id, overlap)
        else:
            candidates = self._candidates(exclude)
            decision = self._choose(request, candidates, now_s)
        self._book(request, decision, now_s)
        return decision

    def on_first_token(self, request_id: str, now_s: float) -> None:
        """Release the request's booked prefill tokens."""
        self.sequences.mark_prefill_done(request_id)

    def on_finish(self, request_id: str, now_s: float) -> None:
        """Release everything the request booked (unknown ids are ignored)."""
        self.sequences.free(request_id)

    def apply_kv_events(self, batch: KvEventBatch) -> None:
        """Ignored by policies that do not track cached blocks."""

    def apply_load_metrics(self, metrics: LoadMetrics) -> None:
        """Remember the worker's ``total_kv_blocks`` (for busy thresholds)."""
        if metrics.worker_id in self.sequences and metrics.total_kv_blocks > 0:
            self._total_kv_blocks[metrics.worker_id] = metrics.total_kv_blocks

    # -- load view -----------------------------------------------------------------------------

    def worker_ids(self) -> list[int]:
        """Known workers, ascending."""
        return list(self._workers)

    def set_total_kv_blocks(self, worker_id: int, total_kv_blocks: int) -> None:
        """Record a worker's KV capacity in blocks (e.g. from its model card's runtime limits)."""
        if total_kv_blocks > 0:
            self._total_kv_blocks[worker_id] = total_kv_blocks

    def worker_load(self, worker_id: int) -> WorkerLoad:
        """The booked load of ``worker_id`` (zeros for an unknown worker)."""
        seqs = self.sequences
        return WorkerLoad(
            worker_id,
            seqs.active_decode_blocks(worker_id),
            seqs.active_prefill_tokens(worker_id),
            seqs.num_active_requests(worker_id),
            self._total_kv_blocks.get(worker_id),
        )

    def worker_loads(self) -> list[WorkerLoad]:
        """Booked load of every known worker, by ascending id."""
        return [self.worker_load(w) for w in self._workers]

    def booked_cost(self, worker_id: int) -> float:
        """Booked load in blocks: ``active_decode_blocks + active_prefill_tokens / block_size``
        (the DESIGN.md cost with weight 1 and without the new request's terms)."""
        seqs = self.sequences
        return (
            seqs.active_decode_blocks(worker_id)
            + seqs.active_prefill_tokens(worker_id) / self.block_size
        )

    # -- policy hooks --------------------------------------------------------------------------

    @abstractmethod
    def _choose(
        self, request: RouteRequest, candidates: Sequence[int], now_s: float
    ) -> RoutingDecision:
        """Pick one of ``candidates`` (non-empty, ascending ids)."""

    def _overlap_on(self, worker_id: int, request: RouteRequest, now_s: float) -> int:
        """Prompt blocks expected cached on ``worker_id`` (0 unless the policy tracks caches)."""
        return 0

    def _book(self, request: RouteRequest, decision: RoutingDecision, now_s: float) -> None:
        self.sequences.book(
            request.request_id,
            decision.worker_id,
            request.block_hashes,
            request.isl,
            decision.overlap_blocks,
            now_s,
        )

    def _candidates(self, exclude: Collection[int]) -> list[int]:
        if not self._workers:
            raise NoInstanceError("no worker is available")
        if not exclude:
            return self._workers
        candidates = [w for w in self._workers if w not in exclude]
        if not candidates:
            raise NoInstanceError("every worker is excluded (busy)")
        return candidates


class RoundRobinCore(LoadTrackingCore):
    """Cycles through the workers in ascending id order."""

    _next: int = 0

    def _choose(
        self, request: RouteRequest, candidates: Sequence[int], now_s: float
    ) -> RoutingDecision:
        worker = candidates[self._next % len(candidates)]
        self._next = (self._next + 1) % max(1, len(self._workers))
        return RoutingDecision(worker)


class RandomCore(LoadTrackingCore):
    """Picks a worker uniformly at random."""

    def _choose(
        self, request: RouteRequest, candidates: Sequence[int], now_s: float
    ) -> RoutingDecision:
        return RoutingDecision(self.rng.choice(candidates))


class PowerOfTwoCore(LoadTrackingCore):
    """Samples two distinct workers and takes the one with the lower booked cost
    (then fewer active requests, then the first sampled). Mitzenmacher's power of two choices."""

    def _choose(
        self, request: RouteRequest, candidates: Sequence[int], now_s: float
    ) -> RoutingDecision:
        if len(candidates) == 1:
            return RoutingDecision(candidates[0])
        a, b = self.rng.sample(list(candidates), 2)
        return RoutingDecision(min((a, b), key=self._load_key))

    def _load_key(self, worker_id: int) -> tuple[float, int]:
        return self.booked_cost(worker_id), self.sequences.num_active_requests(worker_id)


class LeastLoadedCore(PowerOfTwoCore):
    """Takes the worker with the lowest booked cost (then fewest active requests, then random)."""

    def _choose(
        self, request: RouteRequest, candidates: Sequence[int], now_s: float
    ) -> RoutingDecision:
        keys = {w: self._load_key(w) for w in candidates}
        best = min(keys.values())
        return RoutingDecision(self.rng.choice([w for w, k in keys.items() if k == best]))


class DirectCore(LoadTrackingCore):
    """Sends each request to the worker it names (``routing.backend_instance_id``)."""

    def _choose(
        self, request: RouteRequest, candidates: Sequence[int], now_s: float
    ) -> RoutingDecision:
        raise InvalidRequestError(
            "router mode 'direct' needs the worker id in the request "
            "(nvext.backend_instance_id / routing.backend_instance_id)",
            param="backend_instance_id",
        )
