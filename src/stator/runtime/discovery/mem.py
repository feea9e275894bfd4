"""The ``mem`` discovery backend: one process, no I/O.

Each ``MemDiscovery`` plays one "process" (its own primary lease, refreshed by its keep-alive
task) over a ``MemStore`` shared by the whole process (see ``mem_store``). Tests and
``stator serve`` in-process use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from stator.runtime.discovery.base import (
    DEFAULT_LEASE_TTL_S,
    Discovery,
    KeyValue,
    Lease,
    WatchEvent,
)
from stator.runtime.discovery.mem_store import MAX_LEASE_ID, MemStore, MemWatch

__all__ = ["MAX_LEASE_ID", "MemDiscovery", "MemLease", "MemStore", "MemWatch"]

log = logging.getLogger(__name__)


class MemLease(Lease):
    """A lease in a ``MemStore``; ``revoke()`` deletes its keys at once."""

    def __init__(
        self,
        store: MemStore,
        lease_id: int,
        ttl_s: float,
        on_revoke: Callable[[int], object] = lambda _id: None,
    ) -> None:
        self.id = lease_id
        self.ttl_s = ttl_s
        self._store = store
        self._on_revoke = on_revoke

    async def revoke(self) -> None:
        """Drop the lease and every key bound to it (no error if already gone)."""
        self._on_revoke(self.id)
        self._store.revoke(self.id)


class MemDiscovery(Discovery):
    """``Discovery`` over a shared ``MemStore``; one instance per simulated process.

    Args:
        store: the process's shared store.
        lease_ttl_s: TTL of the primary lease (s). Leases are refreshed every ``ttl_s / 3``.
    """

    def __init__(self, store: MemStore, lease_ttl_s: float = DEFAULT_LEASE_TTL_S) -> None:
        self._store = store
        self._ttl_s = lease_ttl_s
        self._primary: MemLease | None = None
        self._leases: dict[int, MemLease] = {}
        self._keep_alive: asyncio.Task[None] | None = None
        self._closed = False

    async def start(self) -> None:
        """Create the primary lease and start the keep-alive task (idempotent)."""
        if self._primary is not None:
            return
        self._primary = self._new_lease(self._ttl_s)
        self._keep_alive = asyncio.create_task(self._keep_alive_loop(), name="mem-keep-alive")

    async def close(self) -> None:
        """Revoke every lease of this discovery (keys vanish), stop keep-alive, end watches."""
        if self._closed:
            return
        self._closed = True
        await self._stop_background()
        for lease in list(self._leases.values()):
            await lease.revoke()
        self._leases.clear()

    async def simulate_crash(self) -> None:
        """Stop keep-alives and watches *without* revoking: keys vanish only after the TTL.

        For tests that need a process dying without a clean shutdown.
        """
        self._closed = True
        await self._stop_background()
        self._leases.clear()

    @property
    def primary_lease(self) -> Lease:
        """The primary lease. Raises ``RuntimeError`` before ``start()``."""
        if self._primary is None:
            raise RuntimeError("MemDiscovery.start() has not been called")
        return self._primary

    async def create_lease(self, ttl_s: float = DEFAULT_LEASE_TTL_S) -> Lease:
        """A new lease of ``ttl_s`` s, kept alive until revoked or ``close()``."""
        return self._new_lease(ttl_s)

    def _new_lease(self, ttl_s: float) -> MemLease:
        self._check_open()
        lease_id = self._store.grant(ttl_s)
        lease = MemLease(self._store, lease_id, ttl_s, on_revoke=self._forget_lease)
        self._leases[lease.id] = lease
        return lease

    async def put(self, key: str, value: bytes, *, lease: Lease | None = None) -> None:
        """Store ``value`` at ``key`` under ``lease`` (default: primary).

        Raises:
            TransportError: the lease has expired or was revoked.
            RuntimeError: not started, or closed.
        """
        self._check_open()
        self._store.put(key, value, (lease or self.primary_lease).id)

    async def get(self, key: str) -> bytes | None:
        """The value at ``key`` or ``None``."""
        return self._store.get(key)

    async def get_prefix(self, prefix: str) -> list[KeyValue]:
        """Live entries under ``prefix``, sorted by key."""
        return self._store.get_prefix(prefix)

    async def delete(self, key: str) -> None:
        """Remove ``key`` (no error if absent)."""
        self._store.delete(key)

    def watch_prefix(self, prefix: str) -> AsyncIterator[WatchEvent]:
        """PUTs for live entries under ``prefix``, then changes; ends on ``aclose()``/``close()``.

        A consumer that stops early should ``aclose()`` the iterator (else it is unregistered at
        ``close()``).
        """
        watch = self._store.watch(prefix, owner=self)
        if self._closed:
            watch.close()
        return watch

    def _forget_lease(self, lease_id: int) -> None:
        self._leases.pop(lease_id, None)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("MemDiscovery is closed")

    async def _stop_background(self) -> None:
        if self._keep_alive is not None:
            self._keep_alive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keep_alive
            self._keep_alive = None
        self._store.close_watches(self)

    async def _keep_alive_loop(self) -> None:
        while True:
            ttl = min((lease.ttl_s for lease in self._leases.values()), default=self._ttl_s)
            await asyncio.sleep(ttl / 3)
            for lease_id in list(self._leases):
                if not self._store.keep_alive(lease_id):
                    log.warning("discovery lease %x lost (expired or revoked)", lease_id)
                    del self._leases[lease_id]
