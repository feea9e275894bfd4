"""A runtime process for the e2e tests: ``server`` or ``client`` over ``file`` discovery.

server: serves ``e2e.worker.generate``; each request streams ``{"i": n}`` every ``--period-ms``
        until ``n`` reaches the request's ``"n"`` (default: forever). A handler that is cancelled
        writes ``{marker_dir}/cancelled-{request_id}``. Prints ``READY {instance_id}``; on SIGTERM
        it shuts down gracefully and exits 0.
client: streams one request (``--request-id``) to the endpoint, prints ``STREAMING`` after the
        first chunk and keeps reading until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from stator.runtime.config import RuntimeConfig
from stator.runtime.request_plane.base import RequestContext
from stator.runtime.runtime import DistributedRuntime

ENDPOINT = "dyn://e2e.worker.generate"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=["server", "client"])
    p.add_argument("--dir", required=True, help="discovery directory")
    p.add_argument("--ttl", type=float, default=2.0)
    p.add_argument("--marker-dir", default="")
    p.add_argument("--period-ms", type=float, default=10.0)
    p.add_argument("--request-id", default="r")
    return p.parse_args()


async def serve(rt: DistributedRuntime, args: argparse.Namespace) -> None:
    async def handler(req: dict[str, Any], ctx: RequestContext) -> AsyncIterator[dict[str, int]]:
        n = 0
        try:
            while req.get("n") is None or n < req["n"]:
                yield {"i": n}
                n += 1
                await asyncio.sleep(args.period_ms / 1000)
        except asyncio.CancelledError:
            if args.marker_dir:
                (Path(args.marker_dir) / f"cancelled-{ctx.request_id}").write_text(str(n))
            raise

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await rt.endpoint(ENDPOINT).serve(handler)
    print(f"READY {rt.instance_id}", flush=True)
    await stop.wait()
    await rt.shutdown(drain_timeout_s=5.0)


async def call(rt: DistributedRuntime, args: argparse.Namespace) -> None:
    client = await rt.endpoint(ENDPOINT).client()
    await client.wait_for_instances(timeout_s=10.0)
    first = True
    async for _chunk in client.generate({"n": None}, request_id=args.request_id):
        if first:
            print("STREAMING", flush=True)
            first = False


async def main() -> int:
    args = parse_args()
    config = RuntimeConfig(discovery_backend="file", discovery_dir=args.dir, lease_ttl_s=args.ttl)
    rt = await DistributedRuntime.create(config)
    try:
        await (serve if args.role == "server" else call)(rt, args)
    finally:
        await rt.shutdown(drain_timeout_s=1.0)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
