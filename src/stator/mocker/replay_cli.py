"""``stator replay``: offline replay of a Mooncake trace through N simulated workers.

    stator replay --trace TRACE.jsonl --num-workers 8 --router-mode round-robin \\
        --trace-block-size 512 --report-json report.json

Prints the summary as JSON on stdout (Dynamo's replay report keys) and writes
``{"summary": ..., "config": ...}`` to ``--report-json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stator.bench.trace import MOONCAKE_BLOCK_SIZE, load_mooncake_trace
from stator.errors import ConfigError
from stator.flags import add_bool_flag, add_flag, bounded
from stator.mocker.config import MockerConfig, add_engine_args
from stator.mocker.replay import ReplayOptions, run_replay
from stator.router.config import ROUTER_MODES
from stator.router.factory import make_router_core


def build_parser() -> argparse.ArgumentParser:
    """The ``stator replay`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="stator replay", description="offline trace replay through simulated workers"
    )
    add_flag(parser, "--trace", required=True, help="Mooncake-format JSONL trace")
    add_flag(parser, "--num-workers", default=1, type=bounded(int, lo=1),
             help="simulated workers")  # fmt: skip
    add_flag(parser, "--router-mode", default="round-robin", choices=list(ROUTER_MODES),
             help="routing policy")  # fmt: skip
    add_flag(parser, "--trace-block-size", default=MOONCAKE_BLOCK_SIZE, type=bounded(int, lo=1),
             help="tokens per trace hash id (input lengths scale by it / 512)")  # fmt: skip
    add_flag(parser, "--arrival-speedup-ratio", default=1.0, type=bounded(float, lo=1e-9),
             help="divide arrival timestamps by this")  # fmt: skip
    add_flag(parser, "--max-requests", default=None, type=bounded(int, lo=1),
             help="replay only the first K requests")  # fmt: skip
    add_flag(parser, "--seed", default=0, type=int, help="seed of prompt and output token ids")
    add_flag(parser, "--report-json", default=None, help="write the report here")
    add_bool_flag(parser, "--fuse-decode-steps", default=True,
                  help="simulate runs of decode-only steps at once (same result)")  # fmt: skip
    engine = parser.add_argument_group("engine")
    add_engine_args(engine)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the replay; returns the exit status (2 for a bad flag or trace)."""
    args = build_parser().parse_args(argv)
    try:
        config = MockerConfig.from_args(args)
        requests = load_mooncake_trace(
            args.trace,
            trace_block_size=args.trace_block_size,
            max_requests=args.max_requests,
            arrival_speedup_ratio=args.arrival_speedup_ratio,
        )
        router = make_router_core(args.router_mode, config.block_size, args.seed)
    except ConfigError as exc:
        print(f"stator replay: error: {exc}", file=sys.stderr)
        return 2
    options = ReplayOptions(
        num_workers=args.num_workers,
        trace_block_size=args.trace_block_size,
        seed=args.seed,
        record_kv_events=args.router_mode == "kv",
        fuse_decode_steps=args.fuse_decode_steps,
    )
    result, wall_ms = run_replay(requests, config, router, options)
    summary = result.summary(wall_ms)
    report = {"summary": summary, "config": _config_dict(args, config)}
    if args.report_json:
        Path(args.report_json).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


def _config_dict(args: argparse.Namespace, config: MockerConfig) -> dict[str, Any]:
    return {
        "trace": str(args.trace),
        "num_workers": args.num_workers,
        "router_mode": args.router_mode,
        "trace_block_size": args.trace_block_size,
        "arrival_speedup_ratio": args.arrival_speedup_ratio,
        "max_requests": args.max_requests,
        "seed": args.seed,
        "engine": dataclasses.asdict(config),
    }


if __name__ == "__main__":
    sys.exit(main())
