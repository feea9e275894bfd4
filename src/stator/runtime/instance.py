"""Discovery records of the runtime: the instance record and the model card, as JSON bytes.

``v1/instances/{ns}/{comp}/{ep}/{instance_id:x}`` holds an ``InstanceInfo`` (how to reach one
instance of an endpoint); ``v1/mdc/{ns}/{comp}/{ep}/{instance_id:x}`` holds the instance's
``ModelCard``. Both are JSON (msgspec) so ``etcdctl get`` or ``cat`` shows them readably; they are
written once per registration, never on the hot path.
"""

from __future__ import annotations

import msgspec

from stator.errors import ServerError
from stator.protocols.model_card import ModelCard
from stator.runtime.address import EndpointAddress


class InstanceInfo(msgspec.Struct, kw_only=True):
    """One serving instance of an endpoint.

    ``instance_id``: the serving runtime's primary lease id (``< 2**53``). ``transport``: the
    request plane (``tcp`` | ``nats``); ``address``: where that plane reaches it, e.g.
    ``tcp://127.0.0.1:40123``. ``metadata``: free-form strings given to ``serve``.
    """

    instance_id: int
    namespace: str
    component: str
    endpoint: str
    transport: str
    address: str
    metadata: dict[str, str] = msgspec.field(default_factory=dict)

    @property
    def endpoint_address(self) -> EndpointAddress:
        """The ``ns.comp.ep`` this instance serves."""
        return EndpointAddress(self.namespace, self.component, self.endpoint)


def encode_instance(info: InstanceInfo) -> bytes:
    """JSON bytes of ``info``."""
    return msgspec.json.encode(info)


def decode_instance(data: bytes) -> InstanceInfo:
    """Parse an instance record.

    Raises:
        ServerError: the bytes are not a valid ``InstanceInfo``.
    """
    try:
        return msgspec.json.decode(data, type=InstanceInfo)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise ServerError(f"bad instance record in discovery: {e}") from e


def encode_model_card(card: ModelCard) -> bytes:
    """JSON bytes of ``card``."""
    return msgspec.json.encode(card)


def decode_model_card(data: bytes) -> ModelCard:
    """Parse a model card record (``v1/mdc/...``).

    Raises:
        ServerError: the bytes are not a valid ``ModelCard``.
    """
    try:
        return msgspec.json.decode(data, type=ModelCard)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise ServerError(f"bad model card in discovery: {e}") from e
