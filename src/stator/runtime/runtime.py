"""``DistributedRuntime``: the three verbs ``endpoint(...)``, ``serve``, ``client`` and events.

One runtime per process (or per simulated process over a shared ``MemStore``). Its instance id
is its discovery's primary lease id, so everything it registers (instances, model cards,
event channels) vanishes with it. Backends come from ``RuntimeConfig`` via ``factory``; the
request-plane server is started on the first ``serve``, the client on the first call, the
event plane on the first publisher or subscriber. The library installs no signal handlers:
components catch SIGTERM themselves and call ``shutdown()``.

Example::

    rt = await DistributedRuntime.create(RuntimeConfig(discovery_backend="mem"), mem_store=store)
    await rt.endpoint("dyn://dynamo.backend.generate").serve(handler, request_type=Req)
    client = await rt.endpoint("dynamo.backend.generate").client()
    async for chunk in client.generate(req, response_type=Resp): ...
    await rt.shutdown()
"""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType

from stator.errors import ServerError
from stator.runtime.address import EndpointAddress
from stator.runtime.client import Client
from stator.runtime.codec import Codec
from stator.runtime.config import RuntimeConfig
from stator.runtime.discovery.base import Discovery
from stator.runtime.discovery.mem import MemStore
from stator.runtime.endpoint import Endpoint, Handler, ServedEndpoint
from stator.runtime.event_plane.base import EventPlane, EventPublisher, EventSubscriber
from stator.runtime.factory import (
    make_discovery,
    make_event_plane,
    make_request_plane_client,
    make_request_plane_server,
)
from stator.runtime.request_plane.base import RequestPlaneClient, RequestPlaneServer

__all__ = ["Client", "DistributedRuntime", "Endpoint", "Handler", "ServedEndpoint"]

log = logging.getLogger(__name__)


class DistributedRuntime:
    """A process's connection to discovery, the request plane and the event plane.

    Build with ``await DistributedRuntime.create(config)``; end with ``await shutdown()`` (or
    ``async with``).
    """

    def __init__(self, config: RuntimeConfig, discovery: Discovery) -> None:
        """Wrap a *started* discovery; prefer ``create``."""
        self.config = config
        self.discovery = discovery
        self.codec = Codec()
        self._server: RequestPlaneServer | None = None
        self._server_lock = asyncio.Lock()
        self._plane_client: RequestPlaneClient | None = None
        self._event_plane: EventPlane | None = None
        self._served: list[ServedEndpoint] = []
        self._clients: set[Client] = set()
        self._shutting_down = False

    @classmethod
    async def create(
        cls, config: RuntimeConfig | None = None, *, mem_store: MemStore | None = None
    ) -> DistributedRuntime:
        """Start discovery (and its primary lease) for ``config`` (default: ``RuntimeConfig()``).

        ``mem_store``: the shared store of the ``mem`` backend (ignored by the others).

        Raises:
            ConfigError: an unknown or unavailable backend (names the flag).
            TransportError / ServerError: discovery cannot start (the message says why).
        """
        config = config or RuntimeConfig()
        discovery = make_discovery(config, mem_store)
        await discovery.start()
        return cls(config, discovery)

    @property
    def instance_id(self) -> int:
        """This runtime's instance id (= primary lease id, ``< 2**53``)."""
        return self.discovery.primary_lease.id

    def endpoint(self, address: str | EndpointAddress) -> Endpoint:
        """The endpoint ``dyn://ns.comp.ep`` / ``ns.comp.ep``.

        Raises:
            AddressError: ``address`` does not parse (names the bad part).
        """
        if isinstance(address, str):
            address = EndpointAddress.parse(address)
        return Endpoint(self, address)

    async def event_publisher(self, namespace: str, component: str, topic: str) -> EventPublisher:
        """A publisher of ``topic`` in ``namespace/component``, identified by ``instance_id``."""
        return await self._events().publisher(namespace, component, topic, self.instance_id)

    async def event_subscriber(self, namespace: str, component: str, topic: str) -> EventSubscriber:
        """A subscriber to ``topic`` from every publisher in ``namespace/component``."""
        return await self._events().subscriber(namespace, component, topic)

    async def shutdown(self, drain_timeout_s: float = 30.0) -> None:
        """Graceful stop; idempotent.

        1. deregister every served endpoint (instance keys go first, so clients stop picking
           this instance) and refuse new requests;
        2. let in-flight streams finish, up to ``drain_timeout_s`` s (then cancel them);
        3. close clients, the request-plane client and the event plane;
        4. close discovery, revoking the leases (anything left registered vanishes).
        """
        if self._shutting_down:
            return
        self._shutting_down = True
        for served in list(self._served):
            await served.stop()
        if self._server is not None:
            await self._server.stop(drain_timeout_s)
        for client in list(self._clients):
            await client.close()
        if self._plane_client is not None:
            await self._plane_client.close()
        if self._event_plane is not None:
            await self._event_plane.close()
        await self.discovery.close()

    async def __aenter__(self) -> DistributedRuntime:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown()

    # -- used by Endpoint / Client ------------------------------------------------------------

    async def _serving_plane(self) -> RequestPlaneServer:
        """The request-plane server, started on first use."""
        if self._shutting_down:
            raise ServerError("runtime is shutting down: cannot serve new endpoints")
        async with self._server_lock:
            if self._server is None:
                server = make_request_plane_server(self.config)
                await server.start()
                self._server = server
        return self._server

    def _calling_plane(self) -> RequestPlaneClient:
        """The request-plane client, made on first use."""
        if self._plane_client is None:
            self._plane_client = make_request_plane_client(self.config)
        return self._plane_client

    def _unserve(self, served: ServedEndpoint) -> None:
        if served in self._served:
            self._served.remove(served)
        if self._server is not None:
            self._server.unregister(served.address.path)

    def _events(self) -> EventPlane:
        if self._event_plane is None:
            self._event_plane = make_event_plane(self.config, self.discovery)
        return self._event_plane
