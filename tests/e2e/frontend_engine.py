"""An engine process for the frontend e2e tests: the scripted engine served through the runtime.

Serves ``dyn://dynamo.{name}.generate`` with the tiny model's card over ``file`` discovery
(``--discovery-dir``), answering with ``tests.frontend_fakes.ScriptedEngine``. Prints
``READY {instance_id}``; SIGTERM shuts it down gracefully (exit 0). Run from the repository root
with it on ``PYTHONPATH``: ``python -m tests.e2e.frontend_engine ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path

from stator.frontend.tokenizer import Tokenizer
from stator.runtime.config import RuntimeConfig
from stator.runtime.runtime import DistributedRuntime
from tests.frontend_fakes import ScriptedEngine, serve_engine, tiny_card


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--discovery-dir", required=True)
    p.add_argument("--model-dir", required=True)
    p.add_argument("--name", default="tiny")
    p.add_argument("--ttl", type=float, default=2.0)
    return p.parse_args()


async def main(args: argparse.Namespace) -> None:
    config = RuntimeConfig(
        discovery_backend="file", discovery_dir=args.discovery_dir, lease_ttl_s=args.ttl
    )
    runtime = await DistributedRuntime.create(config)
    engine = ScriptedEngine(Tokenizer.from_dir(args.model_dir))
    card = tiny_card(Path(args.model_dir), args.name)
    await serve_engine(runtime, f"dyn://dynamo.{args.name}.generate", engine, card)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"READY {runtime.instance_id}", flush=True)
    await stop.wait()
    await runtime.shutdown(drain_timeout_s=2.0)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
