"""A worker process for the scale-out e2e tests; takes the runtime's own flags.

Serves ``dyn://e2e.worker.generate`` on the backends chosen by the standard runtime flags
(``--discovery-backend etcd --etcd-endpoints ... --request-plane nats --nats-server ...``); each
request ``{"n": N | None}`` streams ``{"i": 0}``, ``{"i": 1}`` ... every ``--period-ms``
(forever when ``n`` is ``None``). Prints ``READY {instance_id}``; on SIGTERM it shuts down
gracefully and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

from stator.runtime.config import add_runtime_args, runtime_config_from_args
from stator.runtime.request_plane.base import RequestContext
from stator.runtime.runtime import DistributedRuntime

ENDPOINT = "dyn://e2e.worker.generate"


async def main() -> int:
    parser = argparse.ArgumentParser()
    add_runtime_args(parser)
    parser.add_argument("--period-ms", type=float, default=10.0)
    args = parser.parse_args()
    rt = await DistributedRuntime.create(runtime_config_from_args(args))

    async def handler(req: dict[str, Any], ctx: RequestContext) -> AsyncIterator[dict[str, int]]:
        n = 0
        while req.get("n") is None or n < req["n"]:
            yield {"i": n}
            n += 1
            await asyncio.sleep(args.period_ms / 1000)

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await rt.endpoint(ENDPOINT).serve(handler)
        print(f"READY {rt.instance_id}", flush=True)
        await stop.wait()
    finally:
        await rt.shutdown(drain_timeout_s=2.0)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
