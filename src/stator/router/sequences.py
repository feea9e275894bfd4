"""Active load tracking: the router's own booking of each routed request on its worker.

Semantics follow Dynamo's ``ActiveSequences`` (``lib/kv-router/src/sequence.rs``):

- A routed request books its prompt's block sequence hashes on the chosen worker. Blocks shared by
  several active requests on one worker count once (reference-counted), so
  ``active_decode_blocks`` = number of distinct blocks held by the worker's active requests, and
  ``new_blocks(worker, hashes)`` = the request's blocks not already held there.
- It also books ``prefill_tokens = max(0, isl - overlap_blocks * block_size)`` (the tokens the
  worker must compute); they are released at the first output token.
- Everything is released when the request ends. A request that never reports its end is expired
  ``ttl_s`` seconds after it was booked (Dynamo's stale-request expiry, 300 s).

Times are seconds on the caller's clock (wall or virtual). No I/O.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

DEFAULT_SEQUENCE_TTL_S = 300.0  # Dynamo sequence.rs EXPIRY_DURATION


@dataclass(slots=True)
class _Booking:
    worker_id: int
    block_hashes: Sequence[int]
    prefill_tokens: int
    booked_at_s: float


@dataclass(slots=True)
class _WorkerLoad:
    block_refs: dict[int, int] = field(default_factory=dict)
    prefill_tokens: int = 0
    num_requests: int = 0


class ActiveSequences:
    """Per-worker booked load of in-flight requests.

    ``block_size``: tokens per KV block (>= 1). ``ttl_s``: seconds after booking at which a request
    that has not finished is dropped (> 0).

    Raises:
        ValueError: ``block_size`` < 1 or ``ttl_s`` <= 0.
    """

    def __init__(self, block_size: int, ttl_s: float = DEFAULT_SEQUENCE_TTL_S) -> None:
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl_s}")
        self.block_size = block_size
        self.ttl_s = ttl_s
        self._workers: dict[int, _WorkerLoad] = {}
        self._bookings: dict[str, _Booking] = {}  # insertion order == booking order

    # -- workers -------------------------------------------------------------------------------

    def add_worker(self, worker_id: int) -> None:
        """Start tracking ``worker_id`` (idempotent)."""
        self._workers.setdefault(worker_id, _WorkerLoad())

    def remove_worker(self, worker_id: int) -> list[str]:
        """Forget ``worker_id`` and its bookings; returns the dropped request ids."""
        self._workers.pop(worker_id, None)
        dropped = [rid for rid, b in self._bookings.items() if b.worker_id == worker_id]
        for rid in dropped:
            del self._bookings[rid]
        return dropped

    def worker_ids(self) -> list[int]:
        """Tracked workers, in the order they were added."""
        return list(self._workers)

    def __contains__(self, worker_id: object) -> bool:
        return worker_id in self._workers

    # -- queries -------------------------------------------------------------------------------

    def active_decode_blocks(self, worker_id: int) -> int:
        """Distinct KV blocks booked on ``worker_id`` by its active requests (0 if unknown)."""
        load = self._workers.get(worker_id)
        return len(load.block_refs) if load else 0

    def active_prefill_tokens(self, worker_id: int) -> int:
        """Prompt tokens booked on ``worker_id`` whose prefill has not finished (0 if unknown)."""
        load = self._workers.get(worker_id)
        return load.prefill_tokens if load else 0

    def num_active_requests(self, worker_id: int) -> int:
        """Requests booked on ``worker_id`` and not yet finished (0 if unknown)."""
        load = self._workers.get(worker_id)
        return load.num_requests if load else 0

    def new_blocks(self, worker_id: int, block_hashes: Collection[int]) -> int:
        """How many of the distinct ``block_hashes`` are not already booked on ``worker_id``.

        Pass a ``set`` for speed (one C-level intersection).
        """
        load = self._workers.get(worker_id)
        if load is None or not load.block_refs:
            return len(block_hashes)
        return len(block_hashes) - len(load.block_refs.keys() & block_hashes)

    def prefill_tokens_for(self, isl: int, overlap_blocks: int) -> int:
        """Tokens to prefill: ``max(0, isl - overlap_blocks * block_size)``."""
        return max(0, isl - overlap_blocks * self.block_size)

    def worker_of(self, request_id: str) -> int | None:
        """The worker a live request is booked on, or None."""
        booking = self._bookings.get(request_id)
        return booking.worker_id if booking else None

    def __len__(self) -> int:
        return len(self._bookings)

    # -- commands ------------------------------------------------------------------------------

    def book(
        self,
        request_id: str,
        worker_id: int,
        block_hashes: Sequence[int],
        isl: int,
        overlap_blocks: int,
        now_s: float,
    ) -> None:
        """Book a routed request's blocks and prefill tokens on ``worker_id``.

        ``block_hashes``: the prompt's block sequence hashes; ``isl``: prompt length (tokens);
        ``overlap_blocks``: prompt blocks expected cached on the worker. Expires stale bookings
        first. Adds the worker if unknown.

        Raises:
            ValueError: ``request_id`` is already booked.
        """
        if request_id in self._bookings:
            raise ValueError(f"request {request_id!r} is already booked")
        self.expire(now_s)
        load = self._workers.setdefault(worker_id, _WorkerLoad())
        refs = load.block_refs
        for h in block_hashes:
            refs[h] = refs.get(h, 0) + 1
        prefill = self.prefill_tokens_for(isl, overlap_blocks)
        load.prefill_tokens += prefill
        load.num_requests += 1
        self._bookings[request_id] = _Booking(worker_id, block_hashes, prefill, now_s)

    def mark_prefill_done(self, request_id: str) -> None:
        """Release the request's prefill tokens (first output token). Unknown ids are ignored."""
        booking = self._bookings.get(request_id)
        if booking is None or booking.prefill_tokens == 0:
            return
        load = self._workers.get(booking.worker_id)
        if load is not None:
            load.prefill_tokens -= booking.prefill_tokens
        booking.prefill_tokens = 0

    def free(self, request_id: str) -> bool:
        """Release everything the request booked. Returns False for an unknown id."""
        booking = self._bookings.pop(request_id, None)
        if booking is None:
            return False
        load = self._workers.get(booking.worker_id)
        if load is None:
            return True
        load.prefill_tokens -= booking.prefill_tokens
        load.num_requests -= 1
        refs = load.block_refs
        for h in booking.block_hashes:
            count = refs.get(h, 0) - 1
            if count > 0:
                refs[h] = count
            else:
                refs.pop(h, None)
        return True

    def expire(self, now_s: float) -> list[str]:
        """Free bookings made more than ``ttl_s`` before ``now_s``; returns their ids."""
        cutoff = now_s - self.ttl_s
        stale: list[str] = []
        for rid, booking in self._bookings.items():
            if booking.booked_at_s > cutoff:
                break
            stale.append(rid)
        for rid in stale:
            self.free(rid)
        return stale
