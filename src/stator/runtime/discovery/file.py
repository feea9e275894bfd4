"""``file`` discovery: processes on one machine share a directory (``--discovery-dir``).

Layout and liveness rules are in ``file_layout``: every key file names its lease; a lease is a
file whose mtime a background task refreshes every ``ttl/3`` s; readers ignore keys whose lease
file is missing or older than its TTL, and every process sweeps such leftovers. So when a
process is SIGKILLed its keys stop being visible at most ``ttl`` s after its last heartbeat (plus
one watch poll, ~0.15 s). ``close()`` revokes this process's leases: its keys go at once.

Watches poll the directory (one shared poller per ``FileDiscovery``, every ``poll_interval_s``,
woken at once by local writes) and diff the live view into PUT/DELETE events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator

import msgspec

from stator.errors import ServerError, TransportError
from stator.runtime.discovery.base import (
    DEFAULT_LEASE_TTL_S,
    Discovery,
    KeyValue,
    Lease,
    WatchEvent,
    WatchEventKind,
)
from stator.runtime.discovery.file_layout import (
    KEYS_DIR,
    LEASES_DIR,
    KeyRecord,
    LeaseRecord,
    atomic_write,
    encode_key,
    lease_file_name,
    make_dirs,
    new_lease_id,
    read_file,
    unlink_quiet,
)
from stator.runtime.discovery.file_scan import LiveEntry, Scanner, diff_live

log = logging.getLogger(__name__)

DEFAULT_POLL_INTERVAL_S = 0.15


class FileLease(Lease):
    """A lease of a ``FileDiscovery``; ``revoke()`` deletes its file and its keys."""

    def __init__(self, owner: FileDiscovery, lease_id: int, ttl_s: float) -> None:
        self.id = lease_id
        self.ttl_s = ttl_s
        self.owner = owner

    async def revoke(self) -> None:
        """Delete the lease file and every key this process bound to it."""
        self.owner._revoke(self.id)


class FileWatch:
    """An ``AsyncIterator[WatchEvent]`` over one prefix; the queue is unbounded (changes are few).

    Ends (``StopAsyncIteration``) after ``aclose()`` or when the discovery closes.
    """

    def __init__(self, owner: FileDiscovery, prefix: str) -> None:
        self.prefix = prefix
        self._owner = owner
        self._queue: asyncio.Queue[WatchEvent | None] = asyncio.Queue()
        self._closed = False

    def __aiter__(self) -> FileWatch:
        return self

    async def __anext__(self) -> WatchEvent:
        event = None if self._closed else await self._queue.get()
        if event is None or self._closed:
            raise StopAsyncIteration
        return event

    def notify(self, event: WatchEvent) -> None:
        """Queue ``event`` if its key is under the prefix."""
        if not self._closed and event.key.startswith(self.prefix):
            self._queue.put_nowait(event)

    async def aclose(self) -> None:
        """Unregister and end the iteration (idempotent)."""
        self.close()

    def close(self) -> None:
        """Synchronous ``aclose()``."""
        if not self._closed:
            self._closed = True
            self._owner._unwatch(self)
            self._queue.put_nowait(None)


class FileDiscovery(Discovery):
    """Discovery in a directory shared by the processes of one machine.

    Args:
        directory: the shared directory (created if missing).
        lease_ttl_s: TTL of the primary lease in seconds (> 0); a dead process's keys vanish
            this long after its last heartbeat.
        poll_interval_s: how often watches re-list the directory.
    """

    def __init__(
        self,
        directory: str,
        lease_ttl_s: float = DEFAULT_LEASE_TTL_S,
        *,
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
    ) -> None:
        if lease_ttl_s <= 0:
            raise ValueError(f"lease_ttl_s must be > 0, got {lease_ttl_s}")
        self._root = directory
        self._keys_dir = os.path.join(directory, KEYS_DIR)
        self._leases_dir = os.path.join(directory, LEASES_DIR)
        self._ttl_s = lease_ttl_s
        self._poll_interval_s = poll_interval_s
        self._scanner = Scanner(directory)
        self._encoder = msgspec.msgpack.Encoder()
        self._leases: dict[int, FileLease] = {}
        self._owned: dict[str, KeyRecord] = {}  # keys this process wrote, for revoke/revival
        self._primary: FileLease | None = None
        self._watches: set[FileWatch] = set()
        self._live: dict[str, LiveEntry] = {}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._poller: asyncio.Task[None] | None = None
        self._closed = False

    async def start(self) -> None:
        """Create the directory and the primary lease; start heartbeats.

        Raises:
            ServerError: the directory cannot be created or written.
        """
        try:
            make_dirs(self._root)
            self._primary = self._new_lease(self._ttl_s)
        except OSError as e:
            raise ServerError(f"file discovery: cannot use directory {self._root!r}: {e}") from e
        self._tasks.append(asyncio.create_task(self._heartbeat_loop(), name="file-heartbeat"))

    async def close(self) -> None:
        """Revoke every lease of this process (its keys vanish), stop tasks, end watches."""
        if self._closed:
            return
        self._closed = True
        await self._cancel_tasks()
        for lease_id in list(self._leases):
            self._revoke(lease_id)
        for watch in list(self._watches):
            watch.close()

    async def simulate_crash(self) -> None:
        """Stop heartbeats and watches *without* revoking: keys vanish only after the TTL.

        For tests of a process dying without a clean shutdown (same as ``MemDiscovery``).
        """
        self._closed = True
        await self._cancel_tasks()
        self._leases.clear()
        for watch in list(self._watches):
            watch.close()

    @property
    def primary_lease(self) -> Lease:
        """The lease created by ``start()``.

        Raises:
            ServerError: ``start()`` was not called.
        """
        if self._primary is None:
            raise ServerError("file discovery: start() was not called")
        return self._primary

    async def create_lease(self, ttl_s: float = DEFAULT_LEASE_TTL_S) -> Lease:
        """A new lease heartbeated until revoked or ``close()``."""
        self._check_open()
        return self._new_lease(ttl_s)

    async def put(self, key: str, value: bytes, *, lease: Lease | None = None) -> None:
        """Write ``key`` atomically, bound to ``lease`` (default: the primary lease).

        Raises:
            InvalidRequestError: the key is empty or too long for a file name.
            TransportError: the lease was revoked.
            ServerError: discovery is closed.
        """
        self._check_open()
        lease = lease or self.primary_lease
        if isinstance(lease, FileLease) and lease.owner is self and lease.id not in self._leases:
            raise TransportError(f"file discovery: lease {lease.id:x} was revoked")
        record = KeyRecord(key=key, lease_id=lease.id, value=bytes(value))
        self._write_key(record)
        self._owned[key] = record
        self._wake.set()

    async def get(self, key: str) -> bytes | None:
        """The value at ``key`` if it exists and its lease is live, else ``None``."""
        data = read_file(os.path.join(self._keys_dir, encode_key(key)))
        record = None if data is None else self._scanner.decode_key_file(data)
        if record is None or not self._scanner.lease_is_live(record.lease_id):
            return None
        return record.value

    async def get_prefix(self, prefix: str) -> list[KeyValue]:
        """Live entries under ``prefix``, sorted by key."""
        live = self._scanner.scan().live
        return [
            KeyValue(key, entry.record.value)
            for key, entry in sorted(live.items())
            if key.startswith(prefix)
        ]

    async def delete(self, key: str) -> None:
        """Remove ``key`` (no error if absent)."""
        unlink_quiet(os.path.join(self._keys_dir, encode_key(key)))
        self._owned.pop(key, None)
        self._wake.set()

    def watch_prefix(self, prefix: str) -> AsyncIterator[WatchEvent]:
        """PUT for every live entry under ``prefix`` now, then changes as the poller sees them.

        Registered at once (before the first ``__anext__``); ends on ``aclose()`` or ``close()``.
        """
        watch = FileWatch(self, prefix)
        if self._closed:
            watch.close()
            return watch
        self._poll_once()  # bring the live view up to date before registering
        for key, entry in sorted(self._live.items()):
            watch.notify(WatchEvent(WatchEventKind.PUT, key, entry.record.value))
        self._watches.add(watch)
        self._ensure_poller()
        return watch

    # -- leases -------------------------------------------------------------------------------

    def _new_lease(self, ttl_s: float) -> FileLease:
        lease = FileLease(self, new_lease_id(), ttl_s)
        self._write_lease(lease)
        self._leases[lease.id] = lease
        return lease

    def _write_lease(self, lease: FileLease) -> None:
        data = self._encoder.encode(LeaseRecord(ttl_s=lease.ttl_s, pid=os.getpid()))
        atomic_write(self._root, os.path.join(self._leases_dir, lease_file_name(lease.id)), data)

    def _write_key(self, record: KeyRecord) -> None:
        path = os.path.join(self._keys_dir, encode_key(record.key))
        atomic_write(self._root, path, self._encoder.encode(record))

    def _revoke(self, lease_id: int) -> None:
        if self._leases.pop(lease_id, None) is None:
            return
        unlink_quiet(os.path.join(self._leases_dir, lease_file_name(lease_id)))
        for key, record in list(self._owned.items()):
            if record.lease_id == lease_id:
                del self._owned[key]
                self._unlink_key_if_bound(key, lease_id)
        self._wake.set()

    def _unlink_key_if_bound(self, key: str, lease_id: int) -> None:
        path = os.path.join(self._keys_dir, encode_key(key))
        data = read_file(path)
        current = None if data is None else self._scanner.decode_key_file(data)
        if current is not None and current.lease_id == lease_id:
            unlink_quiet(path)

    async def _heartbeat_loop(self) -> None:
        while True:
            ttls = [lease.ttl_s for lease in self._leases.values()] or [self._ttl_s]
            await asyncio.sleep(min(ttls) / 3)
            try:
                for lease in list(self._leases.values()):
                    self._heartbeat(lease)
                self._scanner.sweep(self._scanner.scan())
                self._scanner.sweep_tmp()
            except Exception:  # a broken directory must not end the heartbeats for good
                log.exception("file discovery: heartbeat in %s failed", self._root)

    def _heartbeat(self, lease: FileLease) -> None:
        path = os.path.join(self._leases_dir, lease_file_name(lease.id))
        try:
            os.utime(path)
            return
        except FileNotFoundError:
            pass
        # Another process judged us dead (we stalled past the TTL) and swept us: come back.
        log.warning("file discovery: lease %x expired while alive; re-registering", lease.id)
        self._write_lease(lease)
        for key, record in self._owned.items():
            path = os.path.join(self._keys_dir, encode_key(key))
            if record.lease_id == lease.id and not os.path.exists(path):
                self._write_key(record)

    # -- watches ------------------------------------------------------------------------------

    def _ensure_poller(self) -> None:
        if self._poller is None and not self._closed:
            self._poller = asyncio.create_task(self._poll_loop(), name="file-watch-poller")

    async def _poll_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_interval_s)
            self._wake.clear()
            try:
                self._poll_once()
            except Exception:  # a watch must outlive one bad poll
                log.exception("file discovery: poll of %s failed", self._root)

    def _poll_once(self) -> None:
        result = self._scanner.scan()
        events = diff_live(self._live, result.live)
        self._live = result.live
        for event in events:
            for watch in self._watches:
                watch.notify(event)
        if result.dead_key_files or result.stale_leases:
            self._scanner.sweep(result)

    async def _cancel_tasks(self) -> None:
        tasks = [*self._tasks, *([self._poller] if self._poller else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self._poller = None

    def _unwatch(self, watch: FileWatch) -> None:
        self._watches.discard(watch)

    def _check_open(self) -> None:
        if self._closed:
            raise ServerError("file discovery is closed")
