"""``python -m stator.frontend`` / ``stator frontend``: run the OpenAI-compatible frontend.

Runs on uvloop. SIGINT/SIGTERM stop it gracefully: the HTTP server stops accepting and lets
in-flight requests finish (a few seconds), then routers, watcher and runtime close.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import uvloop

from stator.errors import ConfigError
from stator.frontend.config import FrontendConfig, parse_config
from stator.frontend.service import FrontendService
from stator.runtime.process import on_stop_signals


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags and serve until stopped. Returns the exit status (2 = bad configuration)."""
    try:
        config = parse_config(argv)
    except ConfigError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        uvloop.run(serve(config))
    except OSError as exc:
        where = f"{config.http_host}:{config.http_port}"
        print(f"error: cannot serve on {where}: {exc}", file=sys.stderr)
        return 1
    return 0


async def serve(config: FrontendConfig) -> None:
    """Start the frontend, print where it listens, and run until SIGINT/SIGTERM."""
    service = FrontendService(config)
    try:
        await service.start()
        print(f"stator frontend listening on {service.url}", flush=True)
        on_stop_signals(service.request_stop)
        await service.wait()
    finally:
        await service.stop()


if __name__ == "__main__":
    sys.exit(main())
