"""``Endpoint``: the serving side (``serve``) and the entry to the calling side (``client``)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from stator.errors import ServerError
from stator.protocols.model_card import ModelCard
from stator.runtime.address import EndpointAddress
from stator.runtime.codec import Codec
from stator.runtime.discovery import keys
from stator.runtime.instance import InstanceInfo, encode_instance, encode_model_card
from stator.runtime.request_plane.base import RawHandler, RequestContext

if TYPE_CHECKING:
    from stator.runtime.client import Client
    from stator.runtime.runtime import DistributedRuntime

log = logging.getLogger(__name__)

Handler = Callable[[Any, RequestContext], AsyncIterator[Any]]
"""``async def handler(request, ctx) -> AsyncIterator[response]`` (an async generator)."""


class ServedEndpoint:
    """One endpoint served by a runtime; ``stop()`` unregisters it (in-flight streams finish)."""

    def __init__(self, runtime: DistributedRuntime, info: InstanceInfo, keys_: list[str]) -> None:
        self.runtime = runtime
        self.info = info
        self._keys = keys_
        self._stopped = False

    @property
    def address(self) -> EndpointAddress:
        """The ``ns.comp.ep`` served."""
        return self.info.endpoint_address

    @property
    def instance_id(self) -> int:
        """The instance id clients see (the runtime's)."""
        return self.info.instance_id

    async def stop(self) -> None:
        """Delete the instance (and model card) keys, then refuse new requests. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        for key in reversed(self._keys):  # the instance first, then its model card
            await self.runtime.discovery.delete(key)
        self.runtime._unserve(self)


class Endpoint:
    """``ns.comp.ep`` bound to a runtime: ``serve(handler)`` or ``client()``."""

    def __init__(self, runtime: DistributedRuntime, address: EndpointAddress) -> None:
        self.runtime = runtime
        self.address = address

    def __repr__(self) -> str:
        return f"Endpoint({self.address})"

    async def serve(
        self,
        handler: Handler,
        request_type: Any = None,
        *,
        model_card: ModelCard | None = None,
        metadata: dict[str, str] | None = None,
    ) -> ServedEndpoint:
        """Serve ``handler`` here and register this instance (and ``model_card``) in discovery.

        Requests are msgpack-decoded into ``request_type`` (``None``: plain Python objects); a
        payload that does not decode fails that stream with ``InvalidRequestError`` (the client
        gets ``RemoteHandlerError`` with status 400). Each yielded value is msgpack-encoded.
        Keys go under the runtime's primary lease, so they vanish with the process.

        Raises:
            ServerError: this runtime already serves the endpoint, or is shutting down.
        """
        rt = self.runtime
        server = await rt._serving_plane()
        if any(s.address == self.address for s in rt._served):
            raise ServerError(f"{self.address} is already served by this runtime")
        server.register(self.address.path, _raw_handler(handler, rt.codec, request_type))
        info = InstanceInfo(
            instance_id=rt.instance_id,
            namespace=self.address.namespace,
            component=self.address.component,
            endpoint=self.address.endpoint,
            transport=rt.config.request_plane,
            address=server.transport_address,
            metadata=dict(metadata or {}),
        )
        try:
            written = await self._register(info, model_card)
        except BaseException:
            server.unregister(self.address.path)
            raise
        served = ServedEndpoint(rt, info, written)
        rt._served.append(served)
        return served

    async def client(self) -> Client:
        """A client following this endpoint's instances (see ``Client``)."""
        from stator.runtime.client import Client

        client = Client(self.runtime, self.address)
        await client._start()
        self.runtime._clients.add(client)
        return client

    async def _register(self, info: InstanceInfo, card: ModelCard | None) -> list[str]:
        discovery = self.runtime.discovery
        written: list[str] = []
        if card is not None:
            key = keys.model_card_key(self.address, info.instance_id)
            await discovery.put(key, encode_model_card(card))
            written.append(key)
        key = keys.instance_key(self.address, info.instance_id)
        await discovery.put(key, encode_instance(info))
        written.append(key)
        return written


def _raw_handler(handler: Handler, codec: Codec, request_type: Any) -> RawHandler:
    """Wrap a typed handler into the request plane's bytes-in, bytes-out handler."""
    encode = codec.encode

    async def raw(payload: bytes, ctx: RequestContext) -> AsyncIterator[bytes]:
        request = codec.decode_request(payload, request_type)
        responses = handler(request, ctx)
        try:
            async for response in responses:
                yield encode(response)
        finally:
            aclose = getattr(responses, "aclose", None)
            if aclose is not None:
                await aclose()

    return raw
