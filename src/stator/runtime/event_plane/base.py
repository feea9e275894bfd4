"""The event-plane interface: topic pub/sub scoped to ``namespace/component``.

Publishers publish bytes on a topic (``kv-events``, ``kv-metrics``, ``active-sequences``);
subscribers receive ``(publisher_instance_id, payload)`` from every publisher of that topic in the
component, including publishers that appear later (zmq: found through discovery under
``v1/event_channels/...``; nats: subject ``{namespace}.{component}.{topic}``). Delivery is
best effort (a slow subscriber may drop messages); consumers that need completeness (the KV
indexer) detect gaps with event ids.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator


class EventPublisher(ABC):
    """Publishes on one topic."""

    @abstractmethod
    async def publish(self, payload: bytes) -> None:
        """Send one message to current subscribers."""

    @abstractmethod
    async def close(self) -> None:
        """Unregister and close."""


class EventSubscriber(ABC):
    """Receives one topic from every publisher in a component."""

    @abstractmethod
    def __aiter__(self) -> AsyncIterator[tuple[int, bytes]]:
        """Yield ``(publisher_instance_id, payload)`` until closed."""

    @abstractmethod
    async def close(self) -> None:
        """Stop receiving."""


class EventPlane(ABC):
    """Factory for publishers and subscribers of one backend."""

    @abstractmethod
    async def publisher(
        self, namespace: str, component: str, topic: str, instance_id: int
    ) -> EventPublisher:
        """A publisher for ``topic``, identified as ``instance_id`` to subscribers."""

    @abstractmethod
    async def subscriber(self, namespace: str, component: str, topic: str) -> EventSubscriber:
        """A subscriber to ``topic`` from every publisher in ``namespace/component``."""

    @abstractmethod
    async def close(self) -> None:
        """Close everything this plane opened."""
