"""Stop strings over streamed text, with a hold-back buffer so a stop string is never partly sent.

Text arrives in arbitrary pieces (detokenizer deltas). Text that could be the start of a stop
string is held back until the next pieces show whether it is one; everything before it is
emitted at once. The output stops at the first point where the text so far ends with a stop
string — the stop with the earliest end; if several end there, the longest — so the result does
not depend on how the text was split into pieces. The stop string itself is not emitted unless
``include_stop_str_in_output`` (vLLM's request field of that name) is set.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from stator.errors import InvalidRequestError


class StopCheck(NamedTuple):
    """Result of :meth:`StopStringMatcher.feed`: the text to send now, and whether to stop."""

    text: str
    stopped: bool


class StopStringMatcher:
    """Finds the request's stop strings in a stream of text pieces.

    Use: ``text, stopped = matcher.feed(delta)`` per piece; send ``text``; on ``stopped``,
    finish with ``finish_reason="stop"`` (``matcher.matched`` names the stop string). At the end
    of a stream that did not stop, send ``matcher.flush()`` (the held-back text).
    Per piece, work is ``O(len(piece) + L) * num_stops`` with ``L`` the longest stop string;
    at most ``L - 1`` characters are held.

    Raises:
        InvalidRequestError: a stop string is empty (``param="stop"``).
    """

    def __init__(self, stop: Sequence[str], *, include_stop_str_in_output: bool = False) -> None:
        if any(not s for s in stop):
            raise InvalidRequestError("stop strings must not be empty", param="stop")
        self._stops = tuple(dict.fromkeys(stop))
        self._max_hold = max((len(s) for s in self._stops), default=1) - 1
        self._include_stop = include_stop_str_in_output
        self._held = ""
        self.matched: str | None = None

    @property
    def stopped(self) -> bool:
        """Whether a stop string has been seen (further input is ignored)."""
        return self.matched is not None

    def feed(self, text: str) -> StopCheck:
        """Add the next piece; return the text that is safe to send and whether to stop."""
        if self.stopped:
            return StopCheck("", True)
        buffer = self._held + text
        match = self._first_match(buffer)
        if match is not None:
            start, stop = match
            self.matched, self._held = stop, ""
            end = start + len(stop) if self._include_stop else start
            return StopCheck(buffer[:end], True)
        hold = self._hold_length(buffer)
        self._held = buffer[len(buffer) - hold :]
        return StopCheck(buffer[: len(buffer) - hold], False)

    def flush(self) -> str:
        """End of stream without a stop: return the held-back text (``""`` after a stop)."""
        held, self._held = self._held, ""
        return "" if self.stopped else held

    def _first_match(self, buffer: str) -> tuple[int, str] | None:
        """``(start, stop)`` of the stop occurrence that ends first (longest on a tie)."""
        best: tuple[int, int, str] | None = None  # (end, -len, stop)
        for stop in self._stops:
            start = buffer.find(stop)
            if start >= 0:
                key = (start + len(stop), -len(stop), stop)
                best = key if best is None or key < best else best
        if best is None:
            return None
        end, _, stop = best
        return end - len(stop), stop

    def _hold_length(self, buffer: str) -> int:
        """Length of the longest suffix of ``buffer`` that is a proper prefix of a stop."""
        for k in range(min(len(buffer), self._max_hold), 0, -1):
            tail = buffer[-k:]
            if any(len(s) > k and s.startswith(tail) for s in self._stops):
                return k
        return 0
