"""``python -m stator.vllm``: a stator worker running vLLM's ``AsyncLLM`` in this process.

Flags: see ``stator.vllm.config`` (stator's) and ``vllm serve --help`` (vLLM's engine flags, passed
through). Prints the endpoint at start and one ``stator.vllm ready`` line once it serves.
SIGTERM/SIGINT stop it gracefully (deregister, drain for ``--drain-timeout`` s, stop the engine).
Exit status: 0 after a stop, 2 for a bad flag, 1 if the worker fails to start.

vLLM starts its engine core in child processes (``spawn`` on some platforms), which re-import the
main module: everything runs under the ``__main__`` guard.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Sequence

from stator.errors import ConfigError, StatorError
from stator.runtime.process import event_loop_factory, on_stop_signals
from stator.vllm.config import VllmWorkerConfig, build_parser, config_from_args, split_args

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, run the worker until SIGTERM/SIGINT; return the exit status."""
    args, rest = split_args(sys.argv[1:] if argv is None else argv)
    try:
        config = config_from_args(args, rest)
    except ConfigError as exc:
        build_parser().error(str(exc))  # exits 2
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    print(
        f"stator.vllm: starting {config.role} worker for {config.served_model_name!r} "
        f"at endpoint {config.endpoint}",
        flush=True,
    )
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        return runner.run(run(config))


async def run(config: VllmWorkerConfig) -> int:
    """Start the worker, print where it serves, wait for a stop signal, stop it."""
    from stator.vllm.worker import VllmWorker

    started = time.monotonic()
    try:
        worker = await VllmWorker.start(config)
    except StatorError as exc:
        print(f"stator.vllm: error: {exc}", file=sys.stderr, flush=True)
        return 1
    stop = asyncio.Event()
    on_stop_signals(stop.set)
    card = worker.card
    blocks = card.runtime_config.total_kv_blocks if card else None
    print(
        f"stator.vllm ready in {time.monotonic() - started:.1f} s: instance {worker.instance_id} "
        f"serving {config.endpoint} (model {config.served_model_name!r}, {config.role}, "
        f"{blocks} KV blocks)",
        flush=True,
    )
    if worker.metrics is not None:
        host = config.runtime.advertise_host
        print(
            f"stator.vllm metrics: http://{host}:{worker.metrics.port}/metrics and /health",
            flush=True,
        )
    try:
        await stop.wait()
    finally:
        await worker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
