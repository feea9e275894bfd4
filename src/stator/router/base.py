"""The seam between the frontend and a router: ``EngineRouter.generate`` → ``RoutedStream``.

The frontend hands a tokenized ``PreprocessedRequest`` to the model's router; the router picks a
worker, books the load, sends the request and returns a ``RoutedStream`` that yields the engine's
``LLMEngineOutput`` chunks and tells which worker serves it. Closing the stream early (``aclose``)
cancels the request at the worker and releases the booked load.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator

from stator.protocols.engine import LLMEngineOutput, PreprocessedRequest


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
