"""``python -m stator.router`` / ``stator router``: run the standalone router.

Example::

    python -m stator.router --endpoint dyn://dynamo.backend.generate --router-mode kv
    python -m stator.frontend --router-endpoint dyn://dynamo.router.generate

Prints ``stator router ready: ...`` once it serves. SIGINT/SIGTERM stop it gracefully
(endpoints deregistered, in-flight streams drained for a few seconds); exit status 0. A bad flag
exits with status 2 naming it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Sequence

import uvloop

from stator.errors import ConfigError, StatorError
from stator.router.standalone import StandaloneRouter, StandaloneRouterConfig, build_parser
from stator.router.standalone import config_from_args as _config_from_args
from stator.runtime.process import on_stop_signals
from stator.runtime.runtime import DistributedRuntime

SHUTDOWN_DRAIN_S = 3.0
"""Seconds in-flight streams get to finish on SIGTERM."""


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags and serve until stopped. Returns the exit status (2 = bad configuration)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = _config_from_args(args)
    except ConfigError as exc:
        parser.error(exc.message)  # exits 2
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return uvloop.run(serve(config))


async def serve(config: StandaloneRouterConfig) -> int:
    """Start the runtime and the router, print the ready line, run until SIGINT/SIGTERM."""
    stop = asyncio.Event()
    on_stop_signals(stop.set)
    runtime = await DistributedRuntime.create(config.runtime)
    router: StandaloneRouter | None = None
    try:
        starting = asyncio.create_task(StandaloneRouter.start(runtime, config))
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            return 0
        stopping.cancel()
        router = starting.result()
        mode = config.router.router_mode
        print(
            f"stator router ready: serving {config.router_endpoint} for {config.worker_endpoint} "
            f"(mode {mode}, block size {router.block_size}, instance {runtime.instance_id})",
            flush=True,
        )
        await stop.wait()
    except StatorError as exc:
        print(f"stator router: error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        # Deregister and drain first (in-flight streams still reach their workers), then close.
        await runtime.shutdown(drain_timeout_s=SHUTDOWN_DRAIN_S)
        if router is not None:
            await router.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
