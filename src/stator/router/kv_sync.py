"""``KvSync``: keeps a live router's KV index in step with its workers over the event plane.

A live router (``LiveRouter``) hands every ``KvEventBatch`` it receives to ``on_batch``. KvSync:

- ignores batches of workers the router does not route to (other models sharing the component,
  workers not yet seen in discovery); they are counted in ``stats.ignored_batches``;
- applies the rest to the core (``apply_kv_events``), which notices gaps in a worker's event ids;
- fetches a ``KvCacheDump`` from every worker the core lists in ``pending_dump_requests`` (a gap)
  and from every worker that joins (its blocks cached before the router saw it), over the
  worker's ``dyn://{ns}.{component}.kv_dump`` endpoint with ``client.direct({}, worker_id)``
  (DESIGN.md worker ↔ router conventions), then ``apply_kv_dump``s it;
- holds a worker's batches while its dump is being fetched and applies them after the dump, so a
  batch newer than the dump is never overwritten by it (older ones are dropped by the core as
  duplicates: their ids are at or below the dump's ``event_id``).

Only a ``KvRouterCore`` that follows KV events keeps an index; for other cores (simple modes,
approximate mode) batches go to ``apply_kv_events`` (a no-op there) and no dump is fetched.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging

from stator.errors import NoInstanceError, ServerError, StatorError
from stator.protocols.kv_events import KvCacheDump, KvEventBatch
from stator.router.debug import KvEventStats
from stator.router.simple import LoadTrackingCore
from stator.runtime.address import EndpointAddress
from stator.runtime.client import Client
from stator.runtime.runtime import DistributedRuntime

log = logging.getLogger(__name__)

DUMP_ENDPOINT = "kv_dump"
"""Endpoint name of a worker's dump service, in the worker endpoint's namespace and component."""
DUMP_TIMEOUT_S = 10.0
"""Seconds to wait for a worker's dump (per attempt)."""
DUMP_ATTEMPTS = 20
DUMP_RETRY_DELAY_S = 0.1
"""A worker's dump endpoint may not be visible yet when it joins: retry NoInstanceError
``DUMP_ATTEMPTS`` times, ``DUMP_RETRY_DELAY_S`` apart (2 s in all, well inside a lease TTL)."""
MAX_HELD_BATCHES = 4096
"""Batches held per worker while its dump is fetched (older ones beyond this are dropped; the
indexer's own gap detection then asks for another dump)."""


class KvSync:
    """Event-plane input of one live router: ``core`` is its router core; ``address`` the
    workers' generate endpoint (the dump endpoint is ``{ns}.{component}.kv_dump``)."""

    def __init__(
        self,
        runtime: DistributedRuntime,
        address: EndpointAddress,
        core: LoadTrackingCore,
        *,
        dump_timeout_s: float = DUMP_TIMEOUT_S,
    ) -> None:
        from stator.router.kv_core import KvRouterCore

        self.runtime = runtime
        self.dump_address = dataclasses.replace(address, endpoint=DUMP_ENDPOINT)
        self.core = core
        self.kv_core = core if isinstance(core, KvRouterCore) and core.approx is None else None
        self.stats = KvEventStats()
        self.dump_timeout_s = dump_timeout_s
        self._client: Client | None = None
        self._held: dict[int, list[KvEventBatch]] = {}  # workers whose dump is being fetched
        self._fetches: dict[int, asyncio.Task[None]] = {}
        self._closed = False

    @property
    def tracks_blocks(self) -> bool:
        """True when the core keeps a KV index fed by events (kv mode with KV events)."""
        return self.kv_core is not None

    async def start(self) -> None:
        """Open the dump client (kv mode with KV events only)."""
        if self.kv_core is not None and self._client is None:
            self._client = await self.runtime.endpoint(self.dump_address).client()

    async def close(self) -> None:
        """Cancel dump fetches and close the dump client. Idempotent."""
        self._closed = True
        tasks = list(self._fetches.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._fetches.clear()
        self._held.clear()
        if self._client is not None:
            await self._client.close()
            self._client = None

    # -- workers -------------------------------------------------------------------------------

    def worker_added(self, worker_id: int) -> None:
        """A worker joined: fetch its dump (it may hold blocks the router never heard of)."""
        self.request_dump(worker_id)

    def worker_removed(self, worker_id: int) -> None:
        """A worker left: stop fetching its dump, drop its held batches and counters."""
        task = self._fetches.pop(worker_id, None)
        if task is not None:
            task.cancel()
        self._held.pop(worker_id, None)
        self.stats.forget(worker_id)

    # -- events --------------------------------------------------------------------------------

    def on_batch(self, batch: KvEventBatch) -> None:
        """Apply (or hold, or ignore) one batch, then fetch the dumps the core asks for."""
        worker_id = batch.worker_id
        if worker_id not in self.core.sequences:
            self.stats.ignored_batches += 1
            return
        self.stats.on_batch(batch)
        held = self._held.get(worker_id)
        if held is not None:
            if len(held) < MAX_HELD_BATCHES:
                held.append(batch)
            return
        self.core.apply_kv_events(batch)
        self._request_pending_dumps()

    def request_dump(self, worker_id: int) -> None:
        """Fetch and apply ``worker_id``'s dump in the background (no-op without a KV index,
        before ``start`` or after ``close``, or while one is already being fetched)."""
        if self._client is None or self._closed or worker_id in self._fetches:
            return
        self._held[worker_id] = []
        self.stats.worker(worker_id).dumps_requested += 1
        task = asyncio.create_task(self._sync(worker_id), name=f"kv dump {worker_id:x}")
        self._fetches[worker_id] = task

    def _request_pending_dumps(self) -> None:
        if self.kv_core is not None:
            for worker_id in self.kv_core.pending_dump_requests():
                self.request_dump(worker_id)

    async def _sync(self, worker_id: int) -> None:
        dump: KvCacheDump | None = None
        try:
            dump = await self.fetch_dump(worker_id)
        except asyncio.CancelledError:
            raise
        except (StatorError, TimeoutError) as exc:
            log.warning("no KV dump from worker %x: %s", worker_id, exc)
        except Exception:
            log.exception("no KV dump from worker %x", worker_id)
        finally:
            if self._fetches.get(worker_id) is asyncio.current_task():
                del self._fetches[worker_id]
        self._apply(worker_id, dump)

    def _apply(self, worker_id: int, dump: KvCacheDump | None) -> None:
        held = self._held.pop(worker_id, [])
        if worker_id not in self.core.sequences:
            return
        if dump is not None and self.kv_core is not None:
            if dump.worker_id == worker_id:
                self.kv_core.apply_kv_dump(dump)
                self.stats.worker(worker_id).dumps_applied += 1
            else:
                log.warning("worker %x sent the dump of %x; ignored", worker_id, dump.worker_id)
        for batch in held:
            self.core.apply_kv_events(batch)
        self._request_pending_dumps()

    async def fetch_dump(self, worker_id: int) -> KvCacheDump:
        """One ``KvCacheDump`` from ``worker_id``'s dump endpoint.

        Retries while the endpoint is not (yet) visible in discovery.

        Raises:
            NoInstanceError: the worker serves no dump endpoint (after the retries), or the
                router is closed.
            RequestTimeoutError / RemoteHandlerError / InstanceLostError: the call failed.
            ServerError: the worker answered with no dump.
        """
        for attempt in range(DUMP_ATTEMPTS):
            client = self._client
            if client is None:
                raise NoInstanceError(f"router for {self.dump_address} is closed")
            try:
                return await _one_dump(client, worker_id, self.dump_timeout_s)
            except NoInstanceError:
                if attempt + 1 == DUMP_ATTEMPTS:
                    raise
                await asyncio.sleep(DUMP_RETRY_DELAY_S)
        raise AssertionError("unreachable")


async def _one_dump(client: Client, worker_id: int, timeout_s: float) -> KvCacheDump:
    stream = client.direct({}, worker_id, KvCacheDump, timeout_s=timeout_s)
    try:
        async for dump in stream:
            if isinstance(dump, KvCacheDump):
                return dump
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
    raise ServerError(f"worker {worker_id:x} answered its kv_dump call with no dump")
