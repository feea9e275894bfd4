"""The discovery interface: put/get/delete, prefix get and watch, leases.

Every registration is bound to a lease. ``close()`` revokes the process's primary lease, so its
keys disappear at once; when a process dies without closing, its keys disappear within the lease
TTL (etcd: lease expiry; file: missed heartbeats). Backends: ``mem`` (one process), ``file``
(one machine, a directory), ``etcd`` (a cluster).
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass

DEFAULT_LEASE_TTL_S = 10.0


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One stored entry."""

    key: str
    value: bytes


class WatchEventKind(enum.Enum):
    PUT = "put"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """A change under a watched prefix. ``value`` is ``None`` for deletes."""

    kind: WatchEventKind
    key: str
    value: bytes | None


class Lease(ABC):
    """A lease: keys bound to it vanish when it is revoked or expires (``ttl_s`` seconds)."""

    id: int
    ttl_s: float

    @abstractmethod
    async def revoke(self) -> None:
        """Drop the lease and every key bound to it."""


class Discovery(ABC):
    """A leased key-value store. Keys are ``/``-separated strings; values are bytes."""

    @abstractmethod
    async def start(self) -> None:
        """Connect and create the primary lease (kept alive in the background).

        Raises:
            TransportError: the backing store is unreachable (the message says which).
        """

    @abstractmethod
    async def close(self) -> None:
        """Revoke the primary lease (its keys vanish), stop keep-alives, close watches."""

    @property
    @abstractmethod
    def primary_lease(self) -> Lease:
        """The lease of this process; its id doubles as the default instance id."""

    @abstractmethod
    async def create_lease(self, ttl_s: float = DEFAULT_LEASE_TTL_S) -> Lease:
        """Create an extra lease, kept alive until revoked or until ``close()``."""

    @abstractmethod
    async def put(self, key: str, value: bytes, *, lease: Lease | None = None) -> None:
        """Store ``value`` at ``key``, bound to ``lease`` (default: the primary lease)."""

    @abstractmethod
    async def get(self, key: str) -> bytes | None:
        """The value at ``key``, or ``None``."""

    @abstractmethod
    async def get_prefix(self, prefix: str) -> list[KeyValue]:
        """All live entries whose key starts with ``prefix``, sorted by key."""

    @abstractmethod
    async def delete(self, key: str) -> None:
        """Remove ``key`` (no error if absent)."""

    @abstractmethod
    def watch_prefix(self, prefix: str) -> AsyncIterator[WatchEvent]:
        """Yield a PUT for every live entry under ``prefix``, then every later change.

        The iterator ends when the discovery is closed or the consumer stops iterating.
        """
