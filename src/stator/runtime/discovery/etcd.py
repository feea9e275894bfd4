"""``etcd`` discovery: a cluster-wide leased key-value store on etcd v3 (through ``aetcd``).

Keys follow DESIGN.md (the same keys as ``mem`` and ``file``). Every key is bound to an etcd lease;
a background task refreshes every lease of this process every ``ttl/3`` s, so when the process
dies its keys disappear at most ``ttl`` s after its last refresh (etcd also checks for expired
leases every 500 ms). Lease ids are chosen here, at random in ``[1, 2**53 - 1]``, so the primary
lease id doubles as a JSON-safe instance id and survives a re-grant.

Reconnection: the refresh task notices when etcd is unreachable (etcd restarted, network
lost) and retries every ``retry_interval_s`` (rotating through the endpoints); every call waits
up to ``rpc_timeout_s`` for the connection (gRPC ``waitForReady``), so calls made while etcd is
coming back succeed once it is there. Once etcd answers again, a lease that is gone (it expired
during the outage, or etcd lost its data) is granted again with the same id and every key this
process put under it is written again, so instances re-register by themselves. Watches restart
on their own with a consistent snapshot (see ``etcd_watch``). Reads and writes during an outage
raise ``TransportError`` after ``rpc_timeout_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any

import aetcd

from stator.errors import ServerError, TransportError
from stator.runtime.discovery.base import (
    DEFAULT_LEASE_TTL_S,
    Discovery,
    KeyValue,
    Lease,
    WatchEvent,
)
from stator.runtime.discovery.etcd_endpoints import EtcdEndpoint, parse_etcd_endpoints
from stator.runtime.discovery.etcd_watch import EtcdWatch
from stator.runtime.discovery.mem_store import MAX_LEASE_ID

log = logging.getLogger(__name__)

ETCD_ERRORS = (aetcd.ClientError, OSError, TimeoutError)
"""What an etcd call raises when etcd is unreachable or refuses (aetcd maps gRPC errors)."""

DEFAULT_RPC_TIMEOUT_S = 3.0
"""Deadline of one etcd call (s): a call to an unreachable etcd fails after at most this."""
DEFAULT_RETRY_INTERVAL_S = 0.5
"""Pause between reconnection attempts while etcd is unreachable (s)."""

GRPC_OPTIONS = {
    # reconnect quickly after an etcd restart (gRPC's default backoff grows to 120 s)
    "grpc.initial_reconnect_backoff_ms": 200,
    "grpc.min_reconnect_backoff_ms": 200,
    "grpc.max_reconnect_backoff_ms": 1000,
    # notice a silently dead connection (etcd's default --grpc-keepalive-min-time is 5 s)
    "grpc.keepalive_time_ms": 10_000,
    "grpc.keepalive_timeout_ms": 5_000,
    "grpc.keepalive_permit_without_calls": 1,
    # calls wait (up to their deadline) for the channel to connect instead of failing at once
    # while it is between reconnection attempts, e.g. just after etcd came back
    "grpc.service_config": json.dumps({"methodConfig": [{"name": [{}], "waitForReady": True}]}),
}
"""gRPC channel options of the etcd client."""


class EtcdLease(Lease):
    """A lease of an ``EtcdDiscovery``; ``revoke()`` deletes its keys in etcd."""

    def __init__(self, owner: EtcdDiscovery, lease_id: int, ttl_s: float) -> None:
        self.id = lease_id
        self.ttl_s = ttl_s
        self.owner = owner

    async def revoke(self) -> None:
        """Revoke in etcd (its keys vanish) and stop refreshing it.

        Raises:
            TransportError: etcd is unreachable (the lease then expires after its TTL).
        """
        await self.owner._revoke(self)


class EtcdDiscovery(Discovery):
    """Discovery on an etcd v3 cluster.

    Args:
        endpoints: client URLs of the etcd members (``http://host:2379``); the first that
            answers is used, the others on failover.
        lease_ttl_s: TTL of the primary lease (s, rounded up to whole seconds for etcd).
        rpc_timeout_s: deadline of each etcd call (s).
        retry_interval_s: pause between attempts while etcd is unreachable (s).

    Raises:
        ConfigError: (``--etcd-endpoints``) no endpoint or a malformed one.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        lease_ttl_s: float = DEFAULT_LEASE_TTL_S,
        *,
        rpc_timeout_s: float = DEFAULT_RPC_TIMEOUT_S,
        retry_interval_s: float = DEFAULT_RETRY_INTERVAL_S,
    ) -> None:
        if lease_ttl_s <= 0:
            raise ValueError(f"lease_ttl_s must be > 0, got {lease_ttl_s}")
        self._endpoints: list[EtcdEndpoint] = parse_etcd_endpoints(list(endpoints))
        self._endpoint_index = 0
        self._ttl_s = lease_ttl_s
        self._rpc_timeout_s = rpc_timeout_s
        self._retry_interval_s = retry_interval_s
        self._client: Any = None
        self._primary: EtcdLease | None = None
        self._leases: dict[int, EtcdLease] = {}
        self._owned: dict[str, tuple[bytes, int]] = {}  # key → (value, lease id) we wrote
        self._watches: set[EtcdWatch] = set()
        self._keep_alive: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def endpoint_urls(self) -> str:
        """The endpoints, comma-separated (for messages)."""
        return ",".join(e.url for e in self._endpoints)

    async def start(self) -> None:
        """Connect (trying each endpoint once), grant the primary lease, start refreshing.

        Raises:
            TransportError: no endpoint answered (the message names them and the errors).
        """
        if self._primary is not None:
            return
        failures = []
        for index in range(len(self._endpoints)):
            self._use_endpoint(index)
            try:
                self._primary = await self._grant(self._ttl_s)
                break
            except ETCD_ERRORS as exc:
                failures.append(f"{self._endpoints[index].url}: {exc or type(exc).__name__}")
                await self._close_client()
        else:
            raise TransportError(
                f"etcd is unreachable at {self.endpoint_urls}: {'; '.join(failures)}"
            )
        self._keep_alive = asyncio.create_task(self._keep_alive_loop(), name="etcd-keep-alive")

    async def close(self) -> None:
        """Revoke every lease of this process (its keys vanish), stop refreshing, end watches.

        When etcd is unreachable the keys are left to expire with their leases (within TTL).
        """
        if self._closed:
            return
        self._closed = True
        await self._stop_background()
        for lease in list(self._leases.values()):
            try:  # a short deadline: an unreachable etcd must not hold up a shutdown
                await asyncio.wait_for(self._call(_revoke_call(lease.id), "revoke"), 1.0)
            except (TransportError, TimeoutError) as exc:
                log.warning(
                    "etcd lease %x not revoked (%s); its keys expire within its TTL",
                    lease.id,
                    exc or "timed out",
                )
        self._leases.clear()
        self._owned.clear()
        await self._close_client()

    async def simulate_crash(self) -> None:
        """Stop refreshing and watching *without* revoking: keys vanish only after the TTL.

        For tests of a process dying without a clean shutdown (same as ``MemDiscovery``).
        """
        self._closed = True
        await self._stop_background()
        self._leases.clear()
        await self._close_client()

    @property
    def primary_lease(self) -> Lease:
        """The lease granted by ``start()``.

        Raises:
            ServerError: ``start()`` was not called.
        """
        if self._primary is None:
            raise ServerError("etcd discovery: start() was not called")
        return self._primary

    async def create_lease(self, ttl_s: float = DEFAULT_LEASE_TTL_S) -> Lease:
        """A new lease, refreshed until revoked or ``close()``.

        Raises:
            TransportError: etcd is unreachable.
        """
        self._check_open()
        with self._errors("lease grant"):
            return await self._grant(ttl_s)

    async def put(self, key: str, value: bytes, *, lease: Lease | None = None) -> None:
        """Store ``value`` at ``key`` bound to ``lease`` (default: primary); remembered so it is
        written again if the lease has to be re-granted.

        Raises:
            TransportError: the lease was revoked, or etcd is unreachable.
            ServerError: discovery is closed.
        """
        self._check_open()
        lease_id = (lease or self.primary_lease).id
        bound = self._leases.get(lease_id)
        if bound is None:
            raise TransportError(f"etcd discovery: lease {lease_id:x} was revoked")
        data = bytes(value)
        with self._errors("put"):
            try:
                await self._timed(self._client.put(key.encode(), data, lease=lease_id))
            except aetcd.ClientError as exc:
                if "lease not found" not in str(exc):
                    raise
                await self._restore(bound)  # expired behind our back: re-grant, then write
                await self._timed(self._client.put(key.encode(), data, lease=lease_id))
        self._owned[key] = (data, lease_id)

    async def get(self, key: str) -> bytes | None:
        """The value at ``key`` or ``None``.

        Raises:
            TransportError: etcd is unreachable.
        """
        result = await self._call(lambda c: c.get(key.encode()), "get")
        return None if result is None else bytes(result.value)

    async def get_prefix(self, prefix: str) -> list[KeyValue]:
        """Entries under ``prefix``, sorted by key.

        Raises:
            TransportError: etcd is unreachable.
        """
        result = await self._call(lambda c: c.get_prefix(prefix.encode()), "get_prefix")
        entries = [KeyValue(bytes(kv.key).decode(), bytes(kv.value)) for kv in result]
        return sorted(entries, key=lambda kv: kv.key)

    async def delete(self, key: str) -> None:
        """Remove ``key`` (no error if absent); it is no longer re-registered.

        Raises:
            TransportError: etcd is unreachable.
        """
        self._owned.pop(key, None)
        await self._call(lambda c: c.delete(key.encode()), "delete")

    def watch_prefix(self, prefix: str) -> AsyncIterator[WatchEvent]:
        """PUTs for the entries under ``prefix``, then every change (see ``etcd_watch``); ends on
        ``aclose()`` or ``close()``. Survives etcd restarts."""
        watch = EtcdWatch(
            prefix, lambda: self._client, self._watches.discard, self._retry_interval_s
        )
        if self._closed:
            watch.close()
        else:
            self._watches.add(watch)
        return watch

    # -- leases -------------------------------------------------------------------------------

    async def _grant(self, ttl_s: float, lease_id: int | None = None) -> EtcdLease:
        """Grant a lease (a random id unless ``lease_id``); an id taken by someone else is
        retried with another, our own ``lease_id`` still alive is adopted."""
        while True:
            wanted = lease_id or secrets.randbelow(MAX_LEASE_ID) + 1
            try:
                await self._timed(self._client.lease(max(1, math.ceil(ttl_s)), lease_id=wanted))
            except aetcd.DuplicateLeaseError:
                if lease_id is None:
                    continue
            lease = self._leases.get(wanted) or EtcdLease(self, wanted, ttl_s)
            self._leases[wanted] = lease
            return lease

    async def _revoke(self, lease: EtcdLease) -> None:
        if self._leases.pop(lease.id, None) is None:
            return
        for key, (_, lease_id) in list(self._owned.items()):
            if lease_id == lease.id:
                del self._owned[key]
        await self._call(lambda c: c.revoke_lease(lease.id), "revoke a lease")

    async def _refresh(self, lease: EtcdLease) -> None:
        """Refresh ``lease``; re-grant it (and re-put its keys) if etcd no longer has it."""
        reply = await self._timed(self._client.refresh_lease(lease.id))
        if (reply is None or reply.TTL <= 0) and lease.id in self._leases:
            await self._restore(lease)

    async def _restore(self, lease: EtcdLease) -> None:
        keys = [(k, v) for k, (v, lid) in self._owned.items() if lid == lease.id]
        log.warning(
            "etcd lease %x is gone; granting it again and re-putting %d keys", lease.id, len(keys)
        )
        await self._grant(lease.ttl_s, lease.id)
        for key, value in keys:
            await self._timed(self._client.put(key.encode(), value, lease=lease.id))

    async def _keep_alive_loop(self) -> None:
        healthy = True
        while True:
            ttls = [lease.ttl_s for lease in self._leases.values()] or [self._ttl_s]
            await asyncio.sleep(min(ttls) / 3 if healthy else self._retry_interval_s)
            try:
                for lease in list(self._leases.values()):
                    await self._refresh(lease)
            except Exception as exc:  # etcd errors, or anything else: never stop refreshing
                if healthy:
                    log.warning(
                        "etcd at %s is unreachable (%s); retrying every %.1f s",
                        self._endpoints[self._endpoint_index].url,
                        exc,
                        self._retry_interval_s,
                    )
                healthy = False
                self._failover()
                continue
            if not healthy:
                log.warning(
                    "etcd at %s is reachable again", self._endpoints[self._endpoint_index].url
                )
            healthy = True

    # -- the client ---------------------------------------------------------------------------

    def _use_endpoint(self, index: int) -> None:
        endpoint = self._endpoints[index]
        self._endpoint_index = index
        self._client = aetcd.Client(
            endpoint.host,
            endpoint.port,
            timeout=self._rpc_timeout_s,  # gRPC deadlines take float seconds
            options=dict(GRPC_OPTIONS),
        )

    def _failover(self) -> None:
        """Switch to the next endpoint (with one endpoint, gRPC reconnects by itself)."""
        if len(self._endpoints) < 2:
            return
        old = self._client
        self._use_endpoint((self._endpoint_index + 1) % len(self._endpoints))
        asyncio.get_running_loop().create_task(_close_quietly(old))

    async def _close_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await _close_quietly(client)

    async def _timed(self, call: Awaitable[Any]) -> Any:
        """Await an etcd call within ``rpc_timeout_s`` (``TimeoutError`` past it)."""
        return await asyncio.wait_for(call, self._rpc_timeout_s)

    async def _call(self, call: Callable[[Any], Awaitable[Any]], what: str) -> Any:
        """``call(client)`` within the deadline; failures become ``TransportError``.

        Raises:
            ServerError: discovery is closed (no client).
            TransportError: etcd failed or is unreachable (names the endpoint).
        """
        if self._client is None:
            raise ServerError(f"etcd discovery is closed (cannot {what})")
        with self._errors(what):
            return await self._timed(call(self._client))

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Turn etcd failures into ``TransportError`` naming the endpoint."""
        try:
            yield
        except ETCD_ERRORS as exc:
            url = self._endpoints[self._endpoint_index].url
            raise TransportError(
                f"etcd {what} at {url} failed: {exc or type(exc).__name__}"
            ) from exc

    async def _stop_background(self) -> None:
        if self._keep_alive is not None:
            self._keep_alive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keep_alive
            self._keep_alive = None
        for watch in list(self._watches):
            await watch.aclose()

    def _check_open(self) -> None:
        if self._closed:
            raise ServerError("etcd discovery is closed")


def _revoke_call(lease_id: int) -> Callable[[Any], Awaitable[Any]]:
    return lambda client: client.revoke_lease(lease_id)


async def _close_quietly(client: Any) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.close(), DEFAULT_RPC_TIMEOUT_S)
