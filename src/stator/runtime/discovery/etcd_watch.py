"""``EtcdWatch``: a prefix watch on etcd that survives etcd restarts and connection loss.

Each round takes a snapshot (``get_prefix``, which carries etcd's revision ``R``), reports how
the snapshot differs from what this watch has reported so far (PUTs for new or changed keys,
DELETEs for keys that vanished meanwhile), then watches from revision ``R + 1``, so no change
between the snapshot and the watch is lost (etcd watch semantics: events with revision >=
``start_revision``). When the watch stream fails (etcd gone, connection lost, revision
compacted) the round ends and another starts after ``retry_interval_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from stator.runtime.discovery.base import WatchEvent, WatchEventKind

log = logging.getLogger(__name__)

CANCEL_TIMEOUT_S = 1.0
"""Bound on cancelling an etcd watch (the stream may be dead)."""


def diff_snapshot(known: dict[str, bytes], current: dict[str, bytes]) -> list[WatchEvent]:
    """Events that turn ``known`` into ``current``: DELETEs for vanished keys, then PUTs for new
    or changed ones (each group sorted by key)."""
    events = [
        WatchEvent(WatchEventKind.DELETE, key, None) for key in sorted(known) if key not in current
    ]
    events += [
        WatchEvent(WatchEventKind.PUT, key, value)
        for key, value in sorted(current.items())
        if known.get(key) != value
    ]
    return events


def convert_event(event: Any) -> WatchEvent:
    """An ``aetcd.Event`` (``kind`` ``"PUT"``/``"DELETE"``) as a ``WatchEvent``."""
    key = bytes(event.kv.key).decode()
    if event.kind == "DELETE":
        return WatchEvent(WatchEventKind.DELETE, key, None)
    return WatchEvent(WatchEventKind.PUT, key, bytes(event.kv.value))


class EtcdWatch:
    """An ``AsyncIterator[WatchEvent]`` over one prefix (see module doc).

    Args:
        prefix: the key prefix.
        get_client: returns the discovery's current ``aetcd.Client`` (it may change on failover).
        on_close: called once when the watch closes (the discovery forgets it).
        retry_interval_s: pause between rounds after a failure (s).

    The queue is unbounded: discovery changes are few. Ends after ``aclose()``/``close()``.
    """

    def __init__(
        self,
        prefix: str,
        get_client: Callable[[], Any],
        on_close: Callable[[EtcdWatch], None],
        retry_interval_s: float,
    ) -> None:
        self.prefix = prefix
        self._get_client = get_client
        self._on_close = on_close
        self._retry_interval_s = retry_interval_s
        self._queue: asyncio.Queue[WatchEvent | None] = asyncio.Queue()
        self._known: dict[str, bytes] = {}
        self._closed = False
        self._task = asyncio.create_task(self._run(), name=f"etcd-watch {prefix}")

    def __aiter__(self) -> EtcdWatch:
        return self

    async def __anext__(self) -> WatchEvent:
        event = None if self._closed else await self._queue.get()
        if event is None or self._closed:
            raise StopAsyncIteration
        return event

    async def aclose(self) -> None:
        """End the iteration and stop watching (idempotent)."""
        self.close()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def close(self) -> None:
        """Synchronous ``aclose()`` (the background task finishes on its own)."""
        if self._closed:
            return
        self._closed = True
        self._task.cancel()
        self._on_close(self)
        self._queue.put_nowait(None)

    async def _run(self) -> None:
        failing = False
        while not self._closed:
            try:
                await self._round()
                failing = False  # the stream ended cleanly (client replaced): go again
            except Exception as exc:  # an etcd error: report once, keep retrying
                if not failing:
                    log.warning("etcd watch on %r failed (%s); retrying", self.prefix, exc)
                failing = True
                await asyncio.sleep(self._retry_interval_s)

    async def _round(self) -> None:
        client = self._get_client()
        prefix = self.prefix.encode()
        snapshot = await client.get_prefix(prefix)
        current = {bytes(kv.key).decode(): bytes(kv.value) for kv in snapshot}
        for event in diff_snapshot(self._known, current):
            self._emit(event)
        watch = await client.watch_prefix(prefix, start_revision=snapshot.header.revision + 1)
        try:
            async for raw in watch:
                self._emit(convert_event(raw))
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(watch.cancel(), CANCEL_TIMEOUT_S)

    def _emit(self, event: WatchEvent) -> None:
        if event.kind is WatchEventKind.DELETE:
            if self._known.pop(event.key, None) is None:
                return  # never reported: nothing to retract
        else:
            self._known[event.key] = event.value or b""
        self._queue.put_nowait(event)
