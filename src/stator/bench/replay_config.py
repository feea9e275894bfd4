"""Flags of ``stator bench replay`` → ``LiveReplayConfig``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

from stator.bench.synthetic import SyntheticSpec
from stator.flags import add_flag, bounded


@dataclass(frozen=True, slots=True)
class LiveReplayConfig:
    """What to replay against which URL. ``trace`` is None with ``synthetic``."""

    url: str
    model: str
    trace: str | None
    synthetic: SyntheticSpec | None
    trace_block_size: int
    max_requests: int | None
    arrival_speedup_ratio: float
    length_factor: int
    duplication_factor: int
    vocab_size: int
    seed: int
    timeout_s: float
    report_json: str | None
    plot: str | None
    progress: bool


def build_parser() -> argparse.ArgumentParser:
    """The ``stator bench replay`` parser."""
    p = argparse.ArgumentParser(
        prog="stator bench replay",
        description="Replay a Mooncake-format trace (or a synthetic workload) against an "
        "OpenAI-compatible URL on a fixed schedule and report TTFT, ITL, latency, throughput "
        "and the cached-token ratio.",
    )
    add_flag(p, "--url", default="http://127.0.0.1:8000", help="base URL (without /v1)")
    add_flag(p, "--model", default=None, help="model name (default: the first of /v1/models)")
    add_flag(p, "--trace", default=None, help="Mooncake-format JSONL trace")
    add_flag(p, "--trace-block-size", default=64, type=bounded(int, lo=1))
    add_flag(p, "--max-requests", default=None, type=bounded(int, lo=1))
    add_flag(p, "--arrival-speedup-ratio", default=1.0, type=bounded(float, lo=1e-6))
    add_flag(p, "--trace-length-factor", default=1, type=bounded(int, lo=1))
    add_flag(p, "--trace-duplication-factor", default=1, type=bounded(int, lo=1))
    add_flag(p, "--vocab-size", default=4096, type=bounded(int, lo=2),
             help="prompt token ids are drawn from [0, vocab-size)")  # fmt: skip
    add_flag(p, "--seed", default=0, type=int)
    add_flag(p, "--request-timeout", default=600.0, type=bounded(float, lo=1.0))
    add_flag(p, "--report-json", default=None, help="write the JSON report here")
    add_flag(p, "--plot", default=None, help="draw TTFT/ITL distributions to this PNG")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--compare", nargs=2, metavar=("A.json", "B.json"), default=None,
                   help="print two reports side by side and exit")  # fmt: skip
    _add_synthetic_args(p)
    return p


def _add_synthetic_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("synthetic workload (--synthetic instead of --trace)")
    g.add_argument("--synthetic", action="store_true", help="generate the workload")
    d = SyntheticSpec()
    add_flag(g, "--synthetic-num-requests", default=d.num_requests, type=bounded(int, lo=1))
    add_flag(g, "--synthetic-request-rate", default=d.request_rate, type=bounded(float, lo=1e-6))
    add_flag(g, "--synthetic-isl", default=d.isl, type=bounded(int, lo=1))
    add_flag(g, "--synthetic-osl", default=d.osl, type=bounded(int, lo=1))
    add_flag(g, "--synthetic-prefix-groups", default=d.num_prefix_groups, type=bounded(int, lo=1))
    add_flag(g, "--synthetic-prefix-ratio", default=d.prefix_ratio,
             type=bounded(float, lo=0.0, hi=1.0))  # fmt: skip


def config_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> LiveReplayConfig:
    """Validate combinations; ``parser.error`` (exit 2, flag named) on a bad one."""
    if bool(args.trace) == bool(args.synthetic):
        parser.error("give exactly one of --trace FILE or --synthetic")
    synthetic = None
    if args.synthetic:
        synthetic = SyntheticSpec(
            args.synthetic_num_requests, args.synthetic_request_rate, args.synthetic_isl,
            args.synthetic_osl, args.synthetic_prefix_groups, args.synthetic_prefix_ratio,
            args.seed,
        )  # fmt: skip
    return LiveReplayConfig(
        url=args.url.rstrip("/").removesuffix("/v1"),
        model=args.model or "",
        trace=args.trace,
        synthetic=synthetic,
        trace_block_size=args.trace_block_size,
        max_requests=args.max_requests,
        arrival_speedup_ratio=args.arrival_speedup_ratio,
        length_factor=args.trace_length_factor,
        duplication_factor=args.trace_duplication_factor,
        vocab_size=args.vocab_size,
        seed=args.seed,
        timeout_s=args.request_timeout,
        report_json=args.report_json,
        plot=args.plot,
        progress=not args.no_progress,
    )


def parse(argv: Sequence[str]) -> tuple[argparse.Namespace, argparse.ArgumentParser]:
    """Parse ``argv`` with ``build_parser()``."""
    parser = build_parser()
    return parser.parse_args(list(argv)), parser
