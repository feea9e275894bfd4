"""``python -m stator.mocker`` / ``stator mocker``: simulated vLLM workers for GPU-free serving.

One process runs ``--num-workers`` workers on one event loop (uvloop), each with its own
``DistributedRuntime`` (instance id, lease, request-plane server). After ``--startup-time`` s it
registers them and prints one line per worker (endpoint, instance id). SIGTERM or SIGINT stops
them gracefully (deregister, drain in-flight requests for a few seconds, drop leases); the exit
status is then 0. A bad flag exits with status 2 and a message naming it; heavy modules (numpy,
tokenizers, the runtime) are imported only after the flags parse, so that is fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from stator.errors import ConfigError, StatorError
from stator.mocker.worker_config import MockerProcessConfig, build_parser, config_from_args
from stator.runtime.process import event_loop_factory, on_stop_signals

if TYPE_CHECKING:
    from stator.mocker.worker import MockerWorker, WorkerSpec

SHUTDOWN_DRAIN_S = 3.0
"""Seconds in-flight requests get to finish on SIGTERM before they are cancelled."""


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, run the workers until SIGTERM/SIGINT; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
        spec = worker_spec(config)
    except ConfigError as exc:
        parser.error(str(exc))  # exits 2
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        return runner.run(run_workers(config, spec))


def worker_spec(config: MockerProcessConfig) -> WorkerSpec:
    """The spec every worker of the process gets: the engine sized to the model, the card.

    Raises:
        ConfigError: the model directory's tokenizer files are unreadable.
    """
    from stator.mocker.card import build_model_card, engine_for_model, load_model_info
    from stator.mocker.worker import WorkerSpec

    engine = engine_for_model(config.engine, load_model_info(config.model_path))
    return WorkerSpec(config.endpoint, engine, build_model_card(config, engine))


async def run_workers(config: MockerProcessConfig, spec: WorkerSpec) -> int:
    """Start the workers, wait for SIGTERM/SIGINT, stop them. Returns the exit status."""
    from stator.mocker.worker import MockerWorker
    from stator.runtime.discovery.mem import MemStore
    from stator.runtime.runtime import DistributedRuntime

    stop = asyncio.Event()
    on_stop_signals(stop.set)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), config.startup_time_s)
    if stop.is_set():
        return 0
    store = MemStore() if config.runtime.discovery_backend == "mem" else None
    workers: list[MockerWorker] = []
    try:
        for index in range(config.num_workers):
            runtime = await DistributedRuntime.create(config.runtime, mem_store=store)
            workers.append(await MockerWorker.start(runtime, spec))
            print(f"mocker worker {index}: instance {runtime.instance_id} serving {spec.endpoint}",
                  flush=True)  # fmt: skip
        ids = " ".join(str(w.instance_id) for w in workers)
        print(f"mocker ready: model {config.model_name!r} at {spec.endpoint} instances {ids}",
              flush=True)  # fmt: skip
        await stop.wait()
    except StatorError as exc:
        print(f"stator mocker: error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        await asyncio.gather(*(w.stop(SHUTDOWN_DRAIN_S) for w in workers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
