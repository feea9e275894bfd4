"""``Liveness``: notices a request-plane peer that went away without a word, over NATS.

NATS does not tell a client that a server's connection is gone (or a server that a client's
is). So each side probes the peers it has open streams with, once they have been silent for
``interval_s``: a NATS request to the peer's ``.ping`` subject. "No responders" means the peer's
subscription is gone (its process died, NATS noticed the closed socket at once); no answer
within ``timeout_s`` means it is unreachable or hung. Either way ``on_lost(peer, why)`` runs.
A SIGKILLed peer is thus noticed within about ``2 * interval_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import nats.errors

log = logging.getLogger(__name__)

Ping = Callable[[str, float], Awaitable[object]]
"""``ping(peer, timeout_s)``: a NATS request to the peer's ping subject."""


class Liveness:
    """Probes silent peers (see module doc).

    Args:
        ping: sends one probe and waits for the answer (raises nats errors).
        peers: the peers that have open streams now.
        on_lost: called with ``(peer, why)`` when a probe fails.
        interval_s: silence (s) after which a peer is probed; also the check period.
        timeout_s: how long a probe may go unanswered (s).
    """

    def __init__(
        self,
        ping: Ping,
        peers: Callable[[], set[str]],
        on_lost: Callable[[str, str], None],
        *,
        interval_s: float,
        timeout_s: float,
    ) -> None:
        self._ping = ping
        self._peers = peers
        self._on_lost = on_lost
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._last_heard: dict[str, float] = {}
        self._probes: dict[str, asyncio.Task[None]] = {}
        self._task = asyncio.create_task(self._run(), name="nats-liveness")

    def heard(self, peer: str) -> None:
        """``peer`` just showed it is alive (sent something)."""
        self._last_heard[peer] = time.monotonic()

    async def close(self) -> None:
        """Stop probing (idempotent)."""
        for task in [self._task, *self._probes.values()]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._probes.clear()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            now = time.monotonic()
            active = self._peers()
            for peer in [p for p in self._last_heard if p not in active]:
                del self._last_heard[peer]
            for peer in active:
                last = self._last_heard.setdefault(peer, now)
                if now - last >= self._interval_s and peer not in self._probes:
                    self._probes[peer] = asyncio.create_task(self._probe(peer))

    async def _probe(self, peer: str) -> None:
        try:
            await self._ping(peer, self._timeout_s)
            self.heard(peer)
        except nats.errors.NoRespondersError:
            self._on_lost(peer, "it stopped responding (no responders)")
        except nats.errors.TimeoutError:
            self._on_lost(peer, f"no answer to a liveness probe within {self._timeout_s} s")
        except Exception as exc:  # NATS reconnecting: its disconnect handling takes over
            log.debug("liveness probe of %s failed: %s", peer, exc)
        finally:
            self._probes.pop(peer, None)
