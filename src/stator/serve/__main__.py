"""``stator serve``: run a local deployment until Ctrl-C / SIGTERM.

Prints where it listens, waits until every model answers, streams component logs with
``[name]`` prefixes, and on Ctrl-C, SIGTERM or a component's death stops every process.
Exit status: 0 after a requested stop, 1 if a component died or readiness timed out,
2 for a bad flag or graph file.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from stator.errors import ConfigError
from stator.serve.config import ServeConfig, serve_config_from_argv
from stator.serve.graph import Graph
from stator.serve.launcher import Launcher
from stator.serve.ready import wait_until_ready


def _default_model() -> Path:
    from stator.testing.tiny_model import ensure_tiny_model

    return ensure_tiny_model()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``stator serve`` (and ``python -m stator.serve``)."""
    try:
        config = serve_config_from_argv(
            list(sys.argv[1:] if argv is None else argv), _default_model
        )
    except ConfigError as exc:
        print(f"stator serve: error: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(config))
    finally:
        if config.private_dir:
            shutil.rmtree(config.private_dir, ignore_errors=True)


async def _run(config: ServeConfig) -> int:
    launcher = Launcher(config.graph, common_argv=config.common_argv, log=_log)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    _log(f"[serve] starting {_describe(config.graph)}")
    try:
        await launcher.start()
        return await _supervise(launcher, config, stop)
    finally:
        _log("[serve] stopping all components")
        await launcher.stop()
        _log("[serve] stopped")


async def _supervise(launcher: Launcher, config: ServeConfig, stop: asyncio.Event) -> int:
    exited = asyncio.create_task(launcher.wait_first_exit())
    ready = asyncio.create_task(
        wait_until_ready(config.http_url, config.num_models, config.ready_timeout_s)
    )
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({exited, ready, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if ready.done() and not ready.exception() and not exited.done():
            _log(f"[serve] ready: {config.http_url}/v1 serving {', '.join(ready.result())}")
            await asyncio.wait({exited, stopped}, return_when=asyncio.FIRST_COMPLETED)
        return _outcome(exited, ready, stopped)
    finally:
        for task in (exited, ready, stopped):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def _outcome(
    exited: asyncio.Task[tuple[str, int]],
    ready: asyncio.Task[list[str]],
    stopped: asyncio.Task[bool],
) -> int:
    if stopped.done():
        return 0
    if exited.done():
        name, code = exited.result()
        _log(f"[serve] component {name} exited with code {code}")
        return 1
    if ready.done() and ready.exception() is not None:
        _log(f"[serve] {ready.exception()}")
    return 1


def _describe(graph: Graph) -> str:
    return ", ".join(f"{c.name} x{c.replicas} ({c.kind})" for c in graph.components)


def _log(line: str) -> None:
    print(line, flush=True)


if __name__ == "__main__":
    sys.exit(main())
