"""The seam between the frontend and a router: ``EngineRouter.generate`` → ``RoutedStream``.

The frontend hands a tokenized ``PreprocessedRequest`` to the model's router; the router picks a
worker, books the load, sends the request and returns a ``RoutedStream`` that yields the engine's
``LLMEngineOutput`` chunks and tells which worker serves it. Closing the stream early (``aclose``)
cancels the request at the worker and releases the booked load.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator

from stator.kv.hashing import TokenIds
from stator.protocols.engine import LLMEngineOutput, PreprocessedRequest
from stator.protocols.kv_events import KvEventBatch, LoadMetrics


class RoutedStream:
    """A worker's response stream. ``worker_id``: the instance serving it.

    ``overlap_blocks``: prompt blocks the router expected the worker to hold (0 outside kv mode).
    """

    def __init__(
        self, worker_id: int, chunks: AsyncIterator[LLMEngineOutput], overlap_blocks: int = 0
    ) -> None:
        self.worker_id = worker_id
        self.overlap_blocks = overlap_blocks
        self._chunks = chunks

    def __aiter__(self) -> AsyncIterator[LLMEngineOutput]:
        return self._chunks

    async def aclose(self) -> None:
        """Cancel the request at the worker (if still running) and release its load."""
        aclose = getattr(self._chunks, "aclose", None)
        if aclose is not None:
            await aclose()


class EngineRouter(ABC):
    """Routes engine requests for one model to its workers."""

    @abstractmethod
    async def start(self) -> None:
        """Begin watching workers (instances, KV events, load metrics)."""

    @abstractmethod
    async def close(self) -> None:
        """Stop watching and cancel in-flight streams."""

    @abstractmethod
    async def generate(self, request: PreprocessedRequest) -> RoutedStream:
        """Pick a worker and start the request there.

        Raises:
            NoInstanceError: no worker serves the model (HTTP 503).
            ServiceUnavailableError: every worker is over its busy threshold (HTTP 503 with
                ``Retry-After``).
            NotFoundError: ``request.routing.backend_instance_id`` names no live worker.
        """

    @abstractmethod
    def worker_ids(self) -> list[int]:
        """Live workers known to this router."""


class RoutingDecision:
    """Where a request goes: ``worker_id``, and the prompt blocks expected cached there."""

    __slots__ = ("overlap_blocks", "worker_id")

    def __init__(self, worker_id: int, overlap_blocks: int = 0) -> None:
        self.worker_id = worker_id
        self.overlap_blocks = overlap_blocks

    def __repr__(self) -> str:
        return f"RoutingDecision(worker_id={self.worker_id}, overlap_blocks={self.overlap_blocks})"


class RouterCore(ABC):
    """The I/O-free routing policy shared by the live router and offline replay.

    Times are seconds on the caller's clock (wall or virtual). The caller reports each routed
    request's first output token and its end, so the core can book and release load; it feeds
    the workers' KV events and load metrics in. Policies that ignore an input (round-robin
    ignores KV events) implement that method as a no-op.
    """

    @abstractmethod
    def add_worker(self, worker_id: int) -> None:
        """A worker joined (idempotent)."""

    @abstractmethod
    def remove_worker(self, worker_id: int) -> None:
        """A worker left: forget its cached blocks and booked load (idempotent)."""

    @abstractmethod
    def route(
        self,
        request_id: str,
        token_ids: TokenIds,
        now_s: float,
        *,
        pinned_worker_id: int | None = None,
    ) -> RoutingDecision:
        """Pick a worker for the request and book its load there.

        Raises:
            NoInstanceError: no worker is known.
            NotFoundError: ``pinned_worker_id`` is not a known worker.
        """

    @abstractmethod
    def on_first_token(self, request_id: str, now_s: float) -> None:
        """The request's prefill is done: release its booked prefill tokens."""

    @abstractmethod
    def on_finish(self, request_id: str, now_s: float) -> None:
        """The request ended (finished, errored or cancelled): release all its load."""

    @abstractmethod
    def apply_kv_events(self, batch: KvEventBatch) -> None:
        """Apply a worker's KV-event batch (KV-aware policies)."""

    @abstractmethod
    def apply_load_metrics(self, metrics: LoadMetrics) -> None:
        """Take a worker's reported load (load-aware policies)."""
