"""``Client``: follows an endpoint's instances in discovery and streams requests to them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TypeVar, overload

import msgspec

from stator.errors import (
    InstanceLostError,
    InvalidRequestError,
    NoInstanceError,
    RemoteHandlerError,
    ServerError,
)
from stator.runtime.address import EndpointAddress
from stator.runtime.codec import with_remote_status
from stator.runtime.discovery import keys
from stator.runtime.discovery.base import WatchEvent, WatchEventKind
from stator.runtime.instance import InstanceInfo, decode_instance

if TYPE_CHECKING:
    from stator.runtime.runtime import DistributedRuntime

log = logging.getLogger(__name__)

T = TypeVar("T")
ChangeCallback = Callable[[list[int], list[int]], object]
"""``callback(added_instance_ids, removed_instance_ids)``."""


class Client:
    """Calls the instances of one endpoint; made by ``Endpoint.client()``.

    The instance list follows discovery (``v1/instances/{ns}/{comp}/{ep}/``): an instance that
    is deregistered, shut down or dies (lease expiry) leaves the selection. Two tiers, as in
    Dynamo's client: ``instance_ids()`` is what discovery lists; ``instance_ids_avail()`` leaves
    out instances reported down (a stream to them failed to connect or lost its connection)
    until discovery re-registers them or ``down_ttl_s`` passes (default: the lease TTL, by which
    time a dead instance has left discovery). Round-robin and random pick among available
    instances (all listed ones if none is available); ``direct`` tries the given one regardless.
    """

    def __init__(
        self,
        runtime: DistributedRuntime,
        address: EndpointAddress,
        *,
        down_ttl_s: float | None = None,
    ) -> None:
        self.runtime = runtime
        self.address = address
        self.down_ttl_s = runtime.config.lease_ttl_s if down_ttl_s is None else down_ttl_s
        self._down_until: dict[int, float] = {}  # instance id → monotonic s
        self._instances: dict[int, InstanceInfo] = {}
        self._ids: list[int] = []  # sorted; the round-robin order
        self._rr_next = 0
        self._callbacks: list[ChangeCallback] = []
        self._available = asyncio.Event()
        self._watch: AsyncIterator[WatchEvent] | None = None
        self._task: asyncio.Task[None] | None = None
        self._deleted_while_syncing: set[str] | None = None

    async def _start(self) -> None:
        """Start following discovery; on return the current instances are known."""
        prefix = keys.instances_prefix(self.address)
        discovery = self.runtime.discovery
        self._watch = discovery.watch_prefix(prefix)
        self._task = asyncio.create_task(self._follow(self._watch), name=f"client {self.address}")
        # The watch registered at once; whatever it reports from now on wins over this listing.
        self._deleted_while_syncing = set()
        listing = await discovery.get_prefix(prefix)
        deleted, self._deleted_while_syncing = self._deleted_while_syncing, None
        for kv in listing:
            if kv.key not in deleted:
                self._apply(WatchEvent(WatchEventKind.PUT, kv.key, kv.value))

    # -- the instance set ---------------------------------------------------------------------

    def instance_ids(self) -> list[int]:
        """Ids of the live instances, sorted."""
        return list(self._ids)

    def instance_ids_avail(self) -> list[int]:
        """Ids of live instances not reported down, sorted."""
        if not self._down_until:
            return list(self._ids)
        now = time.monotonic()
        for instance_id, until in list(self._down_until.items()):
            if until <= now:
                del self._down_until[instance_id]
        return [i for i in self._ids if i not in self._down_until]

    def report_instance_down(self, instance_id: int) -> None:
        """Leave ``instance_id`` out of round-robin/random picks for ``down_ttl_s`` seconds (or
        until discovery registers it again)."""
        if instance_id in self._instances:
            self._down_until[instance_id] = time.monotonic() + self.down_ttl_s

    def instances(self) -> list[InstanceInfo]:
        """Records of the live instances, sorted by id."""
        return [self._instances[i] for i in self._ids]

    async def wait_for_instances(self, timeout_s: float = 10.0) -> list[int]:
        """Wait until at least one instance is live; return the ids.

        Raises:
            NoInstanceError: none appeared within ``timeout_s`` seconds.
        """
        try:
            await asyncio.wait_for(self._available.wait(), timeout_s)
        except TimeoutError:
            raise NoInstanceError(f"no instance of {self.address} within {timeout_s} s") from None
        return self.instance_ids()

    def on_change(self, callback: ChangeCallback) -> None:
        """Call ``callback(added, removed)`` (instance ids) after every change of the set."""
        self._callbacks.append(callback)

    # -- calling ------------------------------------------------------------------------------

    @overload
    def generate(
        self,
        request: Any,
        response_type: type[T],
        *,
        instance_id: int | None = None,
        timeout_s: float | None = None,
        request_id: str | None = None,
    ) -> AsyncIterator[T]: ...

    @overload
    def generate(
        self,
        request: Any,
        response_type: Any = None,
        *,
        instance_id: int | None = None,
        timeout_s: float | None = None,
        request_id: str | None = None,
    ) -> AsyncIterator[Any]: ...

    def generate(
        self,
        request: Any,
        response_type: Any = None,
        *,
        instance_id: int | None = None,
        timeout_s: float | None = None,
        request_id: str | None = None,
    ) -> AsyncIterator[Any]:
        """Stream ``request`` to ``instance_id`` (``None``: round-robin); yield typed chunks.

        ``request``: any msgpack-encodable value (usually a Struct). ``response_type``: what each
        chunk decodes into (``None``: plain Python objects). ``timeout_s``: limit on the wait for
        each chunk (s). ``request_id``: passed to the handler's context (default: random hex).
        Closing the iterator early (``aclose()``, ``break``, cancelling the task) cancels the
        handler remotely.

        Raises (while iterating):
            NoInstanceError: no live instance, unknown ``instance_id``, or connect failed.
            InstanceLostError: the instance went away mid-stream.
            RequestTimeoutError: no chunk within ``timeout_s``.
            StreamCancelledError: the server stopped the stream (e.g. its shutdown).
            RemoteHandlerError: the handler raised (``remote_type``; ``status_code`` of the
                remote stator error class when it is one).
            InvalidRequestError: ``request`` is not msgpack-encodable.
        """
        pick = self._pick_round_robin if instance_id is None else lambda: self._pick(instance_id)
        return self._stream(request, response_type, pick, timeout_s, request_id)

    def round_robin(
        self,
        request: Any,
        response_type: Any = None,
        *,
        timeout_s: float | None = None,
        request_id: str | None = None,
    ) -> AsyncIterator[Any]:
        """``generate`` to the next available instance in id order."""
        return self._stream(request, response_type, self._pick_round_robin, timeout_s, request_id)

    def random(
        self,
        request: Any,
        response_type: Any = None,
        *,
        timeout_s: float | None = None,
        request_id: str | None = None,
    ) -> AsyncIterator[Any]:
        """``generate`` to a uniformly random available instance."""
        return self._stream(request, response_type, self._pick_random, timeout_s, request_id)

    def direct(
        self,
        request: Any,
        instance_id: int,
        response_type: Any = None,
        *,
        timeout_s: float | None = None,
        request_id: str | None = None,
    ) -> AsyncIterator[Any]:
        """``generate`` to ``instance_id`` (``NoInstanceError`` if it is not live)."""
        return self._stream(
            request, response_type, lambda: self._pick(instance_id), timeout_s, request_id
        )

    async def close(self) -> None:
        """Stop following discovery (open streams are unaffected). Idempotent."""
        if self._watch is not None:
            aclose = getattr(self._watch, "aclose", None)
            if aclose is not None:
                await aclose()
            self._watch = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.runtime._clients.discard(self)

    # -- internals ----------------------------------------------------------------------------

    async def _stream(
        self,
        request: Any,
        response_type: Any,
        pick: Callable[[], InstanceInfo],
        timeout_s: float | None,
        request_id: str | None,
    ) -> AsyncIterator[Any]:
        info = pick()
        codec = self.runtime.codec
        try:
            payload = codec.encode(request)
        except TypeError as e:
            raise InvalidRequestError(f"request is not msgpack-encodable: {e}") from e
        decode = codec.decoder(response_type).decode
        plane = self.runtime._calling_plane()
        chunks = plane.stream(
            info.address,
            self.address.path,
            payload,
            request_id=request_id or uuid.uuid4().hex,
            timeout_s=timeout_s,
        )
        try:
            async for chunk in chunks:
                try:
                    response = decode(chunk)
                except (msgspec.DecodeError, msgspec.ValidationError) as e:
                    raise ServerError(
                        f"instance {info.instance_id:x} of {self.address} sent a bad chunk: {e}"
                    ) from e
                yield response
        except RemoteHandlerError as e:
            raise with_remote_status(e) from None
        except (NoInstanceError, InstanceLostError):
            self.report_instance_down(info.instance_id)
            raise
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()

    def _pick(self, instance_id: int) -> InstanceInfo:
        info = self._instances.get(instance_id)
        if info is None:
            raise NoInstanceError(f"instance {instance_id:x} of {self.address} is not live")
        return info

    def _pick_round_robin(self) -> InstanceInfo:
        ids = self._selectable_ids()
        instance_id = ids[self._rr_next % len(ids)]
        self._rr_next = (self._rr_next + 1) % len(ids)
        return self._instances[instance_id]

    def _pick_random(self) -> InstanceInfo:
        return self._instances[random.choice(self._selectable_ids())]

    def _selectable_ids(self) -> list[int]:
        if not self._ids:
            raise NoInstanceError(f"no live instance of {self.address}")
        return self.instance_ids_avail() or self._ids

    async def _follow(self, watch: AsyncIterator[WatchEvent]) -> None:
        async for event in watch:
            self._apply(event)

    def _apply(self, event: WatchEvent) -> None:
        try:
            instance_id = keys.instance_id_from_key(event.key)
        except ValueError:
            log.warning("ignoring discovery key %r: not an instance key", event.key)
            return
        self._down_until.pop(instance_id, None)  # (re-)registered or gone: forget "down"
        if event.kind is WatchEventKind.DELETE:
            if self._deleted_while_syncing is not None:
                self._deleted_while_syncing.add(event.key)
            if self._instances.pop(instance_id, None) is not None:
                self._changed([], [instance_id])
            return
        try:
            info = decode_instance(event.value or b"")
        except ServerError as e:
            log.warning("ignoring %s: %s", event.key, e)
            return
        is_new = instance_id not in self._instances
        self._instances[instance_id] = info
        if is_new:
            self._changed([instance_id], [])

    def _changed(self, added: list[int], removed: list[int]) -> None:
        self._ids = sorted(self._instances)
        if self._ids:
            self._available.set()
        else:
            self._available.clear()
        for callback in self._callbacks:
            try:
                callback(added, removed)
            except Exception:
                log.exception("instance change callback of %s failed", self.address)
