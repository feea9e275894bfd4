"""``RemoteRouter``: the frontend's ``EngineRouter`` when routing runs in a standalone router.

With ``--router-endpoint dyn://ns.router.generate`` the frontend does not pick workers itself:
it sends each ``PreprocessedRequest`` to an instance of the standalone router
(``python -m stator.router``; round-robin over router replicas), which picks the worker, books
the load and streams the worker's chunks back. The first chunk is a ``RoutedEngineOutput``
naming the worker (``nvext.worker_id``). Closing the stream cancels it at the router, which
cancels it at the worker and releases the booked load.

Errors raised by the standalone router keep their meaning: a ``RemoteHandlerError`` whose
``remote_type`` is a stator error class is re-raised as that class (a 503 from busy workers stays
a ``ServiceUnavailableError`` with ``Retry-After``; an unknown pinned worker stays a 404).
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

from stator import errors
from stator.errors import NoInstanceError, RemoteHandlerError, StatorError
from stator.protocols.engine import LLMEngineOutput, PreprocessedRequest
from stator.router.base import EngineRouter, RoutedStream
from stator.router.debug import RouterDebugState, WorkerDebugState
from stator.router.wire import RoutedEngineOutput
from stator.runtime.address import EndpointAddress
from stator.runtime.client import Client
from stator.runtime.runtime import DistributedRuntime

UNKNOWN_WORKER_ID = -1
"""``worker_id`` of a stream whose router did not say where it went (an older router)."""


class RemoteRouter(EngineRouter):
    """Sends one model's engine requests to the standalone router at ``router_address``.

    ``worker_address``: the model's worker endpoint, followed only to list live workers
    (``/health``). ``request_timeout_s``: limit on the wait for each chunk (None = none).
    """

    def __init__(
        self,
        runtime: DistributedRuntime,
        router_address: EndpointAddress,
        worker_address: EndpointAddress,
        *,
        request_timeout_s: float | None = None,
    ) -> None:
        self.runtime = runtime
        self.router_address = router_address
        self.worker_address = worker_address
        self.request_timeout_s = request_timeout_s
        self._router: Client | None = None
        self._workers: Client | None = None

    async def start(self) -> None:
        """Follow the router's and the workers' instances."""
        self._router = await self.runtime.endpoint(self.router_address).client()
        self._workers = await self.runtime.endpoint(self.worker_address).client()

    async def close(self) -> None:
        """Stop following (open streams are unaffected). Idempotent."""
        for client in (self._router, self._workers):
            if client is not None:
                await client.close()
        self._router = self._workers = None

    def worker_ids(self) -> list[int]:
        """Live instances of the model's worker endpoint."""
        return self._workers.instance_ids() if self._workers is not None else []

    async def generate(self, request: PreprocessedRequest) -> RoutedStream:
        """Send ``request`` through the standalone router; return once its first chunk arrived.

        Raises:
            NoInstanceError: no router instance (or, from the router, no worker) (503).
            ServiceUnavailableError: every worker is busy (503, ``Retry-After``).
            NotFoundError: the pinned worker is not live (404).
            TransportError / RemoteHandlerError: the router or worker failed first.
        """
        if self._router is None:
            raise NoInstanceError(f"router client for {self.router_address} is not started")
        chunks = self._router.round_robin(
            request,
            RoutedEngineOutput,
            timeout_s=self.request_timeout_s,
            request_id=request.request_id or None,
        )
        forward = _Forward(chunks)
        first = await forward.first()
        routing = first.routing_data if first is not None else None
        worker_id = routing.worker_id if routing is not None else UNKNOWN_WORKER_ID
        overlap = routing.overlap_blocks if routing is not None else 0
        return RoutedStream(worker_id, forward, overlap)

    def debug_state(self) -> RouterDebugState:
        """The workers this frontend sees; routing state lives in the standalone router."""
        workers = [WorkerDebugState(w, None, 0, 0, 0, None) for w in sorted(self.worker_ids())]
        return RouterDebugState(
            endpoint=str(self.worker_address),
            router_mode="remote",
            block_size=None,
            kv_events=False,
            workers=workers,
            remote=str(self.router_address),
        )


class _Forward:
    """The router's chunk stream, with the first chunk fetched ahead and typed errors."""

    def __init__(self, chunks: Any) -> None:
        self._chunks = chunks
        self._first: LLMEngineOutput | None = None
        self._closed = False

    async def first(self) -> RoutedEngineOutput | None:
        """Wait for the first chunk (None: the stream ended at once); closes on failure."""
        try:
            first: RoutedEngineOutput = await self._next()
        except StopAsyncIteration:
            return None
        self._first = first
        return first

    def __aiter__(self) -> _Forward:
        return self

    async def __anext__(self) -> LLMEngineOutput:
        if self._first is not None:
            out, self._first = self._first, None
            return out
        if self._closed:
            raise StopAsyncIteration
        chunk: LLMEngineOutput = await self._next()
        return chunk

    async def _next(self) -> Any:
        try:
            return await self._chunks.__anext__()
        except StopAsyncIteration:
            await self.aclose()
            raise
        except RemoteHandlerError as exc:
            await self.aclose()
            raise typed_remote_error(exc) from None
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        """Cancel the request at the router (if still running). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._first = None
        with contextlib.suppress(RuntimeError):
            await self._chunks.aclose()


def typed_remote_error(exc: RemoteHandlerError) -> StatorError:
    """The stator error class the remote handler raised, rebuilt from ``exc``'s message without
    the transport addresses the request plane prefixes (``exc`` itself when the remote type is
    not a stator error with a message-only constructor)."""
    cls = getattr(errors, exc.remote_type, None)
    if not isinstance(cls, type) or not issubclass(cls, StatorError):
        return exc
    if cls is RemoteHandlerError or issubclass(cls, errors.ConfigError):
        return exc
    try:
        typed = cls(_TRANSPORT_PREFIX.sub("", exc.message))
    except TypeError:
        return exc
    return typed


_TRANSPORT_PREFIX = re.compile(r"^(?:[a-z]+://\S+?: )+")
"""``tcp://127.0.0.1:40759: `` (one per hop) before a remote handler's message."""
