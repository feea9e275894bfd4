"""``RouterConfig``: the router's settings, from ``--router-*`` flags and ``STATOR_*`` env vars.

Flag names and defaults follow Dynamo's frontend (``python -m dynamo.frontend``):
``--router-mode`` defaults to ``round-robin`` as in Dynamo; ``--router-kv-overlap-score-weight``
1.0; ``--router-temperature`` 0.0; ``--router-ttl-secs`` 120 (approximate mode's block TTL);
``--active-decode-blocks-threshold`` is a fraction (0..1) of a worker's total KV blocks and
``--active-prefill-tokens-threshold`` a literal token count, both off unless set (Dynamo's
request-rejection guide). Older unprefixed spellings still parse, with a deprecation warning.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from stator.errors import ConfigError
from stator.flags import add_bool_flag, add_flag, bounded

RouterMode = Literal["kv", "round-robin", "random", "power-of-two", "least-loaded", "direct"]
QueuePolicy = Literal["fcfs", "wspt"]
ROUTER_MODES: tuple[str, ...] = get_args(RouterMode)
QUEUE_POLICIES: tuple[str, ...] = get_args(QueuePolicy)
DEFAULT_ROUTER_MODE: RouterMode = "round-robin"  # Dynamo frontend default


@dataclass(frozen=True, slots=True)
class RouterConfig:
    """Router settings. Units: ``router_ttl_secs`` seconds; thresholds as documented below.

    ``router_kv_events``: False = approximate mode (the router records its own decisions as
    cached blocks for ``router_ttl_secs``). ``active_decode_blocks_threshold``: a worker is busy
    when its active decode blocks exceed this fraction of its total blocks (None = off).
    ``active_prefill_tokens_threshold``: busy when its active prefill tokens exceed this count
    (None = off). ``kv_cache_block_size``: tokens per block; None = take it from the model card.
    ``router_max_queue_size``: requests allowed to wait in the admission queue (0 = no queue:
    reject as soon as every worker is busy).

    Raises:
        ConfigError: a value out of range, naming its flag.
    """

    router_mode: RouterMode = DEFAULT_ROUTER_MODE
    router_kv_overlap_score_weight: float = 1.0
    router_temperature: float = 0.0
    router_kv_events: bool = True
    router_ttl_secs: float = 120.0
    router_queue_policy: QueuePolicy = "fcfs"
    router_max_queue_size: int = 0
    active_decode_blocks_threshold: float | None = None
    active_prefill_tokens_threshold: int | None = None
    kv_cache_block_size: int | None = None

    def __post_init__(self) -> None:
        _check(self.router_mode in ROUTER_MODES, "--router-mode", f"one of {ROUTER_MODES}")
        _check(
            self.router_queue_policy in QUEUE_POLICIES,
            "--router-queue-policy",
            f"one of {QUEUE_POLICIES}",
        )
        _check(self.router_kv_overlap_score_weight >= 0, "--router-kv-overlap-score-weight", ">= 0")
        _check(self.router_temperature >= 0, "--router-temperature", ">= 0")
        _check(self.router_ttl_secs > 0, "--router-ttl-secs", "> 0")
        _check(self.router_max_queue_size >= 0, "--router-max-queue-size", ">= 0")
        frac = self.active_decode_blocks_threshold
        _check(frac is None or 0 <= frac <= 1, "--active-decode-blocks-threshold", "in [0, 1]")
        tokens = self.active_prefill_tokens_threshold
        _check(tokens is None or tokens >= 0, "--active-prefill-tokens-threshold", ">= 0")
        size = self.kv_cache_block_size
        _check(size is None or size >= 1, "--kv-cache-block-size", ">= 1")


def _check(ok: bool, flag: str, expected: str) -> None:
    if not ok:
        raise ConfigError(flag, f"must be {expected}")


def add_router_args(parser: argparse.ArgumentParser) -> None:
    """Add the router flags to ``parser`` (group "router"). See ``router_config_from_args``."""
    g = parser.add_argument_group("router")
    add_flag(
        g,
        "--router-mode",
        default=DEFAULT_ROUTER_MODE,
        choices=list(ROUTER_MODES),
        help="how a worker is picked per request",
    )
    add_flag(
        g,
        "--router-kv-overlap-score-weight",
        default=1.0,
        type=bounded(float, lo=0.0),
        deprecated=["--kv-overlap-score-weight"],
        help="weight of prefill cost against decode load in kv mode",
    )
    add_flag(
        g,
        "--router-temperature",
        default=0.0,
        type=bounded(float, lo=0.0),
        help="softmax temperature of kv-mode selection (0 = always the lowest cost)",
    )
    add_bool_flag(
        g,
        "--router-kv-events",
        default=True,
        help="use workers' KV events; --no-router-kv-events = approximate mode",
    )
    g.add_argument(
        "--no-kv-events",
        dest="router_kv_events",
        nargs=0,
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
        action=_deprecated_const(False, "--no-kv-events", "--no-router-kv-events"),
    )
    g.add_argument(
        "--kv-events",
        dest="router_kv_events",
        nargs=0,
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
        action=_deprecated_const(True, "--kv-events", "--router-kv-events"),
    )
    _add_limits(g)


def _add_limits(g: argparse._ArgumentGroup) -> None:
    add_flag(
        g,
        "--router-ttl-secs",
        default=120.0,
        type=bounded(float, lo=1e-3),
        deprecated=["--router-ttl"],
        help="approximate mode: seconds a routed prefix is assumed cached",
    )
    add_flag(
        g,
        "--router-queue-policy",
        default="fcfs",
        choices=list(QUEUE_POLICIES),
        help="admission queue order: fcfs (priority, then arrival) or wspt (shortest work)",
    )
    add_flag(
        g,
        "--router-max-queue-size",
        default=0,
        type=bounded(int, lo=0),
        help="requests that may wait while every worker is busy (0 = reject at once)",
    )
    add_flag(
        g,
        "--active-decode-blocks-threshold",
        default=None,
        type=bounded(float, lo=0.0, hi=1.0),
        deprecated=["--busy-threshold"],
        help="busy when active decode blocks exceed this fraction of total blocks (off if unset)",
    )
    add_flag(
        g,
        "--active-prefill-tokens-threshold",
        default=None,
        type=bounded(int, lo=0),
        help="busy when active prefill tokens exceed this count (off if unset)",
    )
    add_flag(
        g,
        "--kv-cache-block-size",
        default=None,
        type=bounded(int, lo=1),
        help="tokens per KV block (default: the model card's)",
    )


def router_config_from_args(args: argparse.Namespace) -> RouterConfig:
    """Build the config from flags parsed by a parser set up with ``add_router_args``.

    Raises:
        ConfigError: a value out of range (naming the flag).
    """
    return RouterConfig(
        router_mode=args.router_mode,
        router_kv_overlap_score_weight=args.router_kv_overlap_score_weight,
        router_temperature=args.router_temperature,
        router_kv_events=args.router_kv_events,
        router_ttl_secs=args.router_ttl_secs,
        router_queue_policy=args.router_queue_policy,
        router_max_queue_size=args.router_max_queue_size,
        active_decode_blocks_threshold=args.active_decode_blocks_threshold,
        active_prefill_tokens_threshold=args.active_prefill_tokens_threshold,
        kv_cache_block_size=args.kv_cache_block_size,
    )


def parse_router_config(argv: Sequence[str]) -> RouterConfig:
    """Parse router flags alone (tests, tools). Bad values exit with status 2 naming the flag."""
    parser = argparse.ArgumentParser(prog="router")
    add_router_args(parser)
    return router_config_from_args(parser.parse_args(list(argv)))


def _deprecated_const(value: bool, old: str, new: str) -> type[argparse.Action]:
    class DeprecatedConst(argparse.Action):
        def __call__(
            self,
            parser: argparse.ArgumentParser,
            namespace: argparse.Namespace,
            values: Any,
            option_string: str | None = None,
        ) -> None:
            print(f"warning: {old} is deprecated; use {new}", file=sys.stderr)
            setattr(namespace, self.dest, value)

    return DeprecatedConst
