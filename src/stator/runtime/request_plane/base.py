"""The request-plane transport interface. Payloads are opaque bytes at this layer.

The runtime (``stator.runtime.runtime``) encodes requests and responses with msgspec msgpack on
top. A server hosts many endpoints (by endpoint path) behind one transport address; a client
opens streams to ``(transport_address, endpoint_path)``. Closing a client stream early
(``aclose()`` or cancelling the consuming task) cancels the handler on the server.

Errors a client stream raises (all ``stator.errors``): ``NoInstanceError`` (cannot connect, or
no such endpoint there), ``InstanceLostError`` (connection dropped mid-stream),
``RequestTimeoutError`` (no chunk within the timeout), ``StreamCancelledError`` (the server
stopped the stream), ``RemoteHandlerError`` (the handler raised).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Callable


class RequestContext:
    """Per-request state given to a handler: its id and a stop signal.

    ``stopped`` is set when the client cancels or the server shuts down; handlers that do not
    poll it are cancelled (``asyncio.CancelledError``) at their next await.
    """

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self._stopped = asyncio.Event()

    def stop(self) -> None:
        """Signal the handler to stop."""
        self._stopped.set()

    def is_stopped(self) -> bool:
        """True once the request was cancelled."""
        return self._stopped.is_set()

    async def wait_stopped(self) -> None:
        """Return when the request is cancelled."""
        await self._stopped.wait()


RawHandler = Callable[[bytes, RequestContext], AsyncIterator[bytes]]


class RequestPlaneServer(ABC):
    """Hosts endpoint handlers behind one transport address."""

    @abstractmethod
    async def start(self) -> None:
        """Bind and start accepting (tcp: on an ephemeral port unless one is configured)."""

    @property
    @abstractmethod
    def transport_address(self) -> str:
        """How clients reach this server, e.g. ``tcp://127.0.0.1:40123`` (valid after start)."""

    @abstractmethod
    def register(self, endpoint_path: str, handler: RawHandler) -> None:
        """Serve ``handler`` for requests addressed to ``endpoint_path`` (``ns/comp/ep``)."""

    @abstractmethod
    def unregister(self, endpoint_path: str) -> None:
        """Stop routing new requests to ``endpoint_path``; in-flight streams continue."""

    @property
    @abstractmethod
    def num_inflight(self) -> int:
        """Streams currently being served."""

    @abstractmethod
    async def stop(self, drain_timeout_s: float = 30.0) -> None:
        """Stop accepting, let in-flight streams finish (up to ``drain_timeout_s``, then cancel
        them), then close connections."""


class RequestPlaneClient(ABC):
    """Opens response streams to instances; shares connections between streams."""

    @abstractmethod
    def stream(
        self,
        transport_address: str,
        endpoint_path: str,
        payload: bytes,
        *,
        request_id: str,
        timeout_s: float | None = None,
    ) -> AsyncGenerator[bytes, None]:
        """Send ``payload`` and yield response chunks until the handler finishes.

        ``timeout_s`` bounds the wait for each chunk (``None``: no limit). The result is an async
        generator so callers can ``aclose()`` it (which cancels the remote handler).
        """

    @abstractmethod
    async def close(self) -> None:
        """Close every connection; open streams raise ``InstanceLostError``."""
