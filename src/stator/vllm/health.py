"""Canary health check: a one-token request when the worker has been idle a while.

As Dynamo's canary health check: when no request has started, produced output or ended for
``idle_s`` seconds, the checker runs ``probe`` (one-token generation through the engine), at
most once per ``idle_s``. A probe that raises or takes longer than ``timeout_s`` makes the
worker ``unhealthy`` until a later probe or real request succeeds. ``report()`` is what
``GET /health`` returns.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from stator.vllm.inflight import InflightTracker

log = logging.getLogger(__name__)

HealthStatus = Literal["healthy", "unhealthy"]
Probe = Callable[[], Awaitable[None]]


@dataclass(slots=True)
class HealthState:
    """The last verdict. ``last_check_s``: clock time of the last probe (None: never)."""

    status: HealthStatus = "healthy"
    last_check_s: float | None = None
    last_error: str | None = None
    num_checks: int = 0


class HealthChecker:
    """Runs ``probe`` when ``tracker`` has been idle ``idle_s`` seconds.

    ``timeout_s``: seconds a probe may take. ``clock``: the tracker's clock (monotonic s).
    """

    def __init__(
        self,
        probe: Probe,
        tracker: InflightTracker,
        *,
        idle_s: float,
        timeout_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.state = HealthState()
        self._probe = probe
        self._tracker = tracker
        self._idle_s = idle_s
        self._timeout_s = timeout_s
        self._clock = clock

    def due(self) -> bool:
        """Idle long enough, and no probe within the last ``idle_s``."""
        last = self.state.last_check_s
        recent = last is not None and self._clock() - last < self._idle_s
        return not recent and self._tracker.idle_for_s() >= self._idle_s

    async def check(self) -> HealthStatus:
        """Run the probe now; record and return the verdict."""
        self.state.num_checks += 1
        try:
            await asyncio.wait_for(self._probe(), self._timeout_s)
        except Exception as exc:  # any failure of the engine counts
            self.state.status, self.state.last_error = "unhealthy", f"{type(exc).__name__}: {exc}"
            log.warning("health check failed: %s", self.state.last_error)
        else:
            self.state.status, self.state.last_error = "healthy", None
        self.state.last_check_s = self._clock()
        return self.state.status

    def note_success(self) -> None:
        """A real request completed: the engine works."""
        self.state.status, self.state.last_error = "healthy", None

    async def run(self) -> None:
        """Check whenever ``due()``, polling every ``idle_s / 4`` s (at least 50 ms); forever."""
        tick = max(0.05, self._idle_s / 4)
        while True:
            await asyncio.sleep(tick)
            if self.due():
                await self.check()

    def report(self, **extra: Any) -> dict[str, Any]:
        """``{status, last_check_s_ago, last_error, num_checks, num_inflight, ...extra}``."""
        last = self.state.last_check_s
        return {
            "status": self.state.status,
            "last_check_s_ago": None if last is None else round(self._clock() - last, 3),
            "last_error": self.state.last_error,
            "num_checks": self.state.num_checks,
            "num_inflight": self._tracker.num_inflight,
            **extra,
        }
