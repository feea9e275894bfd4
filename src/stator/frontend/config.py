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

from stator.errors import AddressError, ConfigError
from stator.flags import add_flag, bounded
from stator.router.config import RouterConfig, add_router_args, router_config_from_args
from stator.runtime.address import EndpointAddress
from stator.runtime.config import RuntimeConfig, add_runtime_args, runtime_config_from_args


@dataclass(frozen=True, slots=True)
class FrontendConfig:
    """Frontend settings. ``http_port`` 0 = an ephemeral port (tests).

    ``request_timeout_s``: seconds to wait for each engine chunk (None = no limit).
    ``router_endpoint``: ``dyn://ns.comp.ep`` of a standalone router (``python -m stator.router``)
    to send requests through instead of routing here ("" = route in this process).
    """

    http_host: str = "0.0.0.0"
    http_port: int = 8000
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    router: RouterConfig = field(default_factory=RouterConfig)
    request_timeout_s: float | None = None
    log_level: str = "info"
    router_endpoint: str = ""


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
    add_flag(
        g,
        "--router-endpoint",
        default="",
        help="route through this standalone router (dyn://ns.comp.ep) instead of in-process",
    )
    add_runtime_args(parser)
    add_router_args(parser)
    return parser


def parse_config(argv: Sequence[str] | None = None) -> FrontendConfig:
    """Parse flags into a ``FrontendConfig``.

    Raises:
        SystemExit: a bad flag value (status 2, the flag named).
        ConfigError: a router setting out of range, or a bad ``--router-endpoint`` (names the
            flag).
    """
    args = build_parser().parse_args(argv)
    if args.router_endpoint:
        try:
            EndpointAddress.parse(args.router_endpoint)
        except AddressError as exc:
            raise ConfigError("--router-endpoint", exc.message) from None
    return FrontendConfig(
        http_host=args.http_host,
        http_port=args.http_port,
        runtime=runtime_config_from_args(args),
        router=router_config_from_args(args),
        request_timeout_s=args.request_timeout_s,
        log_level=args.log_level,
        router_endpoint=args.router_endpoint,
    )
