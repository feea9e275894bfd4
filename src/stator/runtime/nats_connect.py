"""Connecting to NATS (``--nats-server``), shared by the NATS request and event planes.

The first connection attempt is bounded (``connect_timeout_s``) and fails with a
``TransportError`` naming the URL; once connected, nats-py reconnects by itself forever
(every ``RECONNECT_WAIT_S``), re-subscribing what was subscribed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import nats
from nats.aio.client import Client as NatsClient

from stator.errors import TransportError

log = logging.getLogger(__name__)

DEFAULT_CONNECT_TIMEOUT_S = 5.0
"""How long the first connection to NATS may take (s)."""
RECONNECT_WAIT_S = 0.5
"""Pause between reconnection attempts after the connection is lost (s)."""
PING_INTERVAL_S = 5
"""NATS protocol PING period (s): with 2 outstanding pings a silently dead connection is
dropped (and reconnected) after about 15 s."""

Callback = Callable[[], Awaitable[None]]


async def connect_nats(
    url: str,
    *,
    name: str,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    on_disconnect: Callback | None = None,
) -> NatsClient:
    """Connect to the NATS server(s) at ``url`` (comma-separated URLs for a cluster).

    ``name`` labels the connection in NATS monitoring; ``on_disconnect`` runs whenever the
    connection is lost (nats-py then reconnects in the background).

    Raises:
        TransportError: no server answered within ``connect_timeout_s`` (names the URL).
    """
    nc = NatsClient()
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        if not nc.is_connected:
            errors.append(str(exc) or type(exc).__name__)
        else:
            log.warning("NATS %s: %s", url, exc)

    try:
        async with asyncio.timeout(connect_timeout_s):
            await nc.connect(
                servers=[u.strip() for u in url.split(",") if u.strip()],
                name=name,
                error_cb=on_error,
                disconnected_cb=on_disconnect,
                connect_timeout=max(1, round(connect_timeout_s)),
                reconnect_time_wait=RECONNECT_WAIT_S,  # type: ignore[arg-type]
                max_reconnect_attempts=-1,
                ping_interval=PING_INTERVAL_S,
            )
    except (TimeoutError, OSError, nats.errors.Error) as exc:
        with contextlib.suppress(Exception):
            await nc.close()
        reason = errors[-1] if errors else (str(exc) or type(exc).__name__)
        raise TransportError(f"NATS is unreachable at {url}: {reason}") from exc
    return nc
