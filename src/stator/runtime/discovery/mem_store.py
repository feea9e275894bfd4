"""The in-process key-value store behind the ``mem`` discovery backend.

``MemStore`` holds the entries, leases and watchers of one process and is shared by every
``MemDiscovery`` in it (no module-level state). Semantics follow etcd: every key is bound to a
lease; revoking a lease deletes its keys at once (watchers see DELETE events); a lease that is not
refreshed within its TTL expires (a lazy sweep on every access plus a timer task that wakes at the
earliest deadline).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from stator.errors import TransportError
from stator.runtime.discovery.base import KeyValue, WatchEvent, WatchEventKind

log = logging.getLogger(__name__)

MAX_LEASE_ID = 2**53 - 1
"""Lease ids are in ``[1, 2**53 - 1]`` so they survive a JSON round trip as numbers."""


@dataclass(slots=True)
class _LeaseState:
    ttl_s: float
    deadline: float
    keys: set[str] = field(default_factory=set)


class MemWatch:
    """An ``AsyncIterator[WatchEvent]`` over one prefix of a ``MemStore``.

    Registered when created, so it sees a consistent snapshot (PUTs for the live entries) followed
    by every later change. The queue is unbounded: discovery changes are few. Ends (raises
    ``StopAsyncIteration``) after ``aclose()``, dropping undelivered events.
    """

    def __init__(
        self, store: MemStore, prefix: str, snapshot: list[KeyValue], owner: object = None
    ) -> None:
        self.prefix = prefix
        self.owner = owner
        self._store = store
        self._queue: asyncio.Queue[WatchEvent | None] = asyncio.Queue()
        self._closed = False
        for kv in snapshot:
            self._queue.put_nowait(WatchEvent(WatchEventKind.PUT, kv.key, kv.value))

    def __aiter__(self) -> MemWatch:
        return self

    async def __anext__(self) -> WatchEvent:
        if self._closed:
            raise StopAsyncIteration
        event = await self._queue.get()
        if event is None or self._closed:
            raise StopAsyncIteration
        return event

    def notify(self, event: WatchEvent) -> None:
        """Queue ``event`` if its key is under this watch's prefix (called by the store)."""
        if not self._closed and event.key.startswith(self.prefix):
            self._queue.put_nowait(event)

    async def aclose(self) -> None:
        """Unregister from the store and end the iteration (idempotent)."""
        self.close()

    def close(self) -> None:
        """Synchronous ``aclose()``."""
        if self._closed:
            return
        self._closed = True
        self._store.unwatch(self)
        self._queue.put_nowait(None)


class MemStore:
    """The shared in-process key-value data: entries, leases, watchers.

    Args:
        clock: monotonic seconds (injectable for tests; default ``time.monotonic``).

    All methods are synchronous and run on the event loop thread; the only task is the expiry
    timer, started by ``grant`` when a loop is running and ending when no lease is left.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._entries: dict[str, tuple[bytes, int]] = {}
        self._leases: dict[int, _LeaseState] = {}
        self._watches: set[MemWatch] = set()
        self._timer: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Event | None = None

    # -- leases ---------------------------------------------------------------------------------

    def grant(self, ttl_s: float) -> int:
        """Create a lease of ``ttl_s`` seconds; returns its id (random, in ``[1, 2**53 - 1]``).

        Raises:
            ValueError: ``ttl_s`` is not positive.
        """
        if not ttl_s > 0:
            raise ValueError(f"lease ttl must be > 0 s, got {ttl_s}")
        lease_id = secrets.randbelow(MAX_LEASE_ID) + 1
        while lease_id in self._leases:
            lease_id = secrets.randbelow(MAX_LEASE_ID) + 1
        self._leases[lease_id] = _LeaseState(ttl_s, self._clock() + ttl_s)
        self._ensure_timer()
        return lease_id

    def keep_alive(self, lease_id: int) -> bool:
        """Push the lease's deadline to now + TTL; ``False`` if it has expired or was revoked."""
        self.sweep()
        state = self._leases.get(lease_id)
        if state is None:
            return False
        state.deadline = self._clock() + state.ttl_s
        return True

    def has_lease(self, lease_id: int) -> bool:
        """Whether the lease is live (expired leases are swept first)."""
        self.sweep()
        return lease_id in self._leases

    def revoke(self, lease_id: int) -> None:
        """Drop the lease and delete its keys (watchers get DELETEs). No error if unknown."""
        state = self._leases.pop(lease_id, None)
        if state is None:
            return
        if not self._leases and self._wakeup is not None:
            self._wakeup.set()  # the expiry timer ends once no lease is left
        for key in sorted(state.keys):
            self._remove(key)

    def sweep(self) -> None:
        """Revoke every lease whose deadline has passed."""
        now = self._clock()
        expired = [lid for lid, st in self._leases.items() if st.deadline <= now]
        for lease_id in expired:
            log.info(
                "lease %x expired; deleting %d keys", lease_id, len(self._leases[lease_id].keys)
            )
            self.revoke(lease_id)

    # -- entries --------------------------------------------------------------------------------

    def put(self, key: str, value: bytes, lease_id: int) -> None:
        """Store ``value`` at ``key`` bound to ``lease_id`` (rebinding it if it had another).

        Raises:
            TransportError: the lease has expired or was revoked (as etcd's "lease not found").
        """
        self.sweep()
        state = self._leases.get(lease_id)
        if state is None:
            raise TransportError(f"discovery lease {lease_id:x} not found (expired or revoked)")
        old = self._entries.get(key)
        if old is not None and old[1] != lease_id and old[1] in self._leases:
            self._leases[old[1]].keys.discard(key)
        self._entries[key] = (value, lease_id)
        state.keys.add(key)
        self._notify(WatchEvent(WatchEventKind.PUT, key, value))

    def get(self, key: str) -> bytes | None:
        """The value at ``key`` or ``None``."""
        self.sweep()
        entry = self._entries.get(key)
        return None if entry is None else entry[0]

    def get_prefix(self, prefix: str) -> list[KeyValue]:
        """Live entries under ``prefix``, sorted by key."""
        self.sweep()
        return [
            KeyValue(k, v) for k, (v, _) in sorted(self._entries.items()) if k.startswith(prefix)
        ]

    def delete(self, key: str) -> None:
        """Remove ``key`` (no error if absent); watchers get a DELETE."""
        self.sweep()
        entry = self._entries.get(key)
        if entry is None:
            return
        state = self._leases.get(entry[1])
        if state is not None:
            state.keys.discard(key)
        self._remove(key)

    def watch(self, prefix: str, owner: object = None) -> MemWatch:
        """A watch yielding PUTs for the live entries under ``prefix``, then every change.

        ``owner`` tags the watch so that ``close_watches(owner)`` can end it.
        """
        watch = MemWatch(self, prefix, self.get_prefix(prefix), owner)
        self._watches.add(watch)
        return watch

    def unwatch(self, watch: MemWatch) -> None:
        """Stop notifying ``watch`` (called by ``MemWatch.close``)."""
        self._watches.discard(watch)

    def close_watches(self, owner: object) -> None:
        """End every watch created with ``owner``."""
        for watch in [w for w in self._watches if w.owner is owner]:
            watch.close()

    # -- internals ------------------------------------------------------------------------------

    def _remove(self, key: str) -> None:
        if self._entries.pop(key, None) is not None:
            self._notify(WatchEvent(WatchEventKind.DELETE, key, None))

    def _notify(self, event: WatchEvent) -> None:
        for watch in list(self._watches):
            watch.notify(event)

    def _ensure_timer(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop: expiry is still enforced by the lazy sweep on access
        timer = self._timer
        if self._wakeup is not None and timer and not timer.done() and timer.get_loop() is loop:
            self._wakeup.set()
            return
        self._wakeup = asyncio.Event()
        self._timer = loop.create_task(self._expiry_loop(self._wakeup), name="mem-lease-expiry")

    async def _expiry_loop(self, wakeup: asyncio.Event) -> None:
        while self._leases:
            delay = min(st.deadline for st in self._leases.values()) - self._clock()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wakeup.wait(), timeout=max(delay, 0.0) + 0.001)
            wakeup.clear()
            self.sweep()
