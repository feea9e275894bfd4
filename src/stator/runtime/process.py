"""Process plumbing shared by the component entry points (``__main__`` modules)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable


def on_stop_signals(callback: Callable[[], None]) -> None:
    """Call ``callback`` on SIGTERM or SIGINT (must run inside the event loop)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, callback)


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory for ``asyncio.Runner``, or ``None`` (asyncio's default loop) when
    uvloop is not installed."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return None
    return uvloop.new_event_loop
