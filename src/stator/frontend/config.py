"""``FrontendConfig``: the frontend's settings from CLI flags and ``STATOR_*`` env vars.

Flags: ``--http-host`` (default ``0.0.0.0``) and ``--http-port`` (default 8000) as Dynamo's
frontend; the runtime flags (``--namespace``, ``--discovery-backend``, ``--request-plane``,
``--event-plane`` ...) from ``stator.runtime.config``; the router flags (``--router-mode`` ...)
from ``stator.router.config``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field

from stator.flags import add_flag, bounded
from stator.router.config import RouterConfig, add_router_args, router_config_from_args
from stator.runtime.config import RuntimeConfig, add_runtime_args, runtime_config_from_args


@dataclass(frozen=True, slots=True)
class FrontendConfig:
    """Frontend settings. ``http_port`` 0 = an ephemeral port (tests).

    ``request_timeout_s``: seconds to wait for each engine chunk (None = no limit).
    """

    http_host: str = "0.0.0.0"
    http_port: int = 8000
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    router: RouterConfig = field(default_factory=RouterConfig)
    request_timeout_s: float | None = None
    log_level: str = "info"


def build_parser(prog: str = "python -m stator.frontend") -> argparse.ArgumentParser:
    """The frontend's argument parser (HTTP, runtime and router flags)."""
    parser = argparse.ArgumentParser(prog=prog, description="OpenAI-compatible HTTP frontend")
    g = parser.add_argument_group("http")
    add_flag(g, "--http-host", default="0.0.0.0", help="address to listen on")
    add_flag(
        g, "--http-port", default=8000, type=bounded(int, lo=0, hi=65535), help="port (0 = any)"
    )
    add_flag(
        g,
        "--request-timeout",
        dest="request_timeout_s",
        default=None,
        type=bounded(float, lo=0.001),
        help="seconds to wait for each engine response chunk (default: no limit)",
    )
    add_flag(
        g,
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log verbosity",
    )
    add_runtime_args(parser)
    add_router_args(parser)
    return parser


def parse_config(argv: Sequence[str] | None = None) -> FrontendConfig:
    """Parse flags into a ``FrontendConfig``.

    Raises:
        SystemExit: a bad flag value (status 2, the flag named).
        ConfigError: a router setting out of range (names the flag).
    """
    args = build_parser().parse_args(argv)
    return FrontendConfig(
        http_host=args.http_host,
        http_port=args.http_port,
        runtime=runtime_config_from_args(args),
        router=router_config_from_args(args),
        request_timeout_s=args.request_timeout_s,
        log_level=args.log_level,
    )
