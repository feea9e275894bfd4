"""Book-keeping of the requests a worker is serving: counts, prefill backlog, last activity.

The handlers report each request's start, first output and end; the health check reads the
idle time, the load reporter the prefill backlog, ``/metrics`` the counts.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class InflightTracker:
    """Requests in flight on one worker. Times in seconds of ``clock`` (monotonic).

    ``active_prefill_tokens``: prompt tokens of requests that have not produced their first
    output yet (not yet prefilled, as far as the worker can see).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._prefilling: dict[str, int] = {}
        self._running: set[str] = set()
        self.last_activity_s = clock()
        self.num_started = 0
        self.num_finished = 0
        self.active_prefill_tokens = 0

    @property
    def num_inflight(self) -> int:
        """Requests started and not finished."""
        return len(self._running)

    def idle_for_s(self) -> float:
        """Seconds since a request last started, produced output or ended (0 while busy)."""
        return 0.0 if self._running else self._clock() - self.last_activity_s

    def started(self, request_id: str, num_prompt_tokens: int) -> None:
        """A request entered the engine."""
        self._running.add(request_id)
        self._prefilling[request_id] = num_prompt_tokens
        self.active_prefill_tokens += num_prompt_tokens
        self.num_started += 1
        self.last_activity_s = self._clock()

    def first_output(self, request_id: str) -> None:
        """The request's prompt is prefilled (its first output arrived). Idempotent."""
        tokens = self._prefilling.pop(request_id, None)
        if tokens is not None:
            self.active_prefill_tokens -= tokens
        self.last_activity_s = self._clock()

    def finished(self, request_id: str) -> None:
        """The request ended (any reason). Idempotent."""
        self.first_output(request_id)
        if request_id in self._running:
            self._running.discard(request_id)
            self.num_finished += 1
