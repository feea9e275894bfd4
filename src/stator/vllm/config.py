"""Flags of ``python -m stator.vllm`` and the settings they make.

The command line is split in two (``split_args``): the flags below are stator's, Dynamo's names
(``--model``, ``--namespace``, ``--endpoint``, ``--is-prefill-worker`` ...); everything else goes
unchanged to vLLM's own engine-argument parser (``--max-model-len``, ``--block-size``,
``--enable-prefix-caching``, ``-O3``, ``--dtype`` ...). ``--model``, ``--tokenizer`` and
``--served-model-name`` are read by both. This module does not import vLLM.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from stator.errors import AddressError, ConfigError
from stator.flags import add_bool_flag, add_flag, bounded
from stator.runtime.address import EndpointAddress, model_endpoint_name
from stator.runtime.config import RuntimeConfig, add_runtime_args, runtime_config_from_args

WorkerRole = Literal["aggregated", "prefill", "decode"]
DEFAULT_COMPONENT = "backend"
"""Component of aggregated and decode workers (Dynamo's ``dynamo.backend.generate``)."""
PREFILL_COMPONENT = "prefill"
"""Component of prefill workers (Dynamo's ``dynamo.prefill.generate``), so prefill and decode
workers of one namespace never share an endpoint."""
PLAIN_ENDPOINT = "generate"
DUMP_ENDPOINT = "kv_dump"
DEFAULT_CANARY_WAIT_S = 10.0


@dataclass(frozen=True, slots=True)
class VllmWorkerConfig:
    """Settings of one vLLM worker process.

    ``model``: path or Hugging Face id given to vLLM; ``served_model_name``: the name clients
    use (default: ``model``). ``endpoint``: the generate endpoint served. ``engine_argv``: the
    flags for vLLM's parser (``--model`` etc. included). ``kv_events_endpoint``: where vLLM's
    ZMQ KV-event publisher binds (``""``: a private ``ipc://`` socket in a temp dir).
    ``metrics_port``: worker HTTP port for ``/metrics`` and ``/health`` (None: off, 0: any).
    ``canary_wait_s``: idle seconds before a one-token health check request.
    """

    model: str
    served_model_name: str
    tokenizer: str | None
    role: WorkerRole
    endpoint: EndpointAddress
    runtime: RuntimeConfig
    engine_argv: tuple[str, ...]
    enable_kv_events: bool = True
    kv_events_endpoint: str = ""
    metrics_port: int | None = None
    health_check: bool = True
    canary_wait_s: float = DEFAULT_CANARY_WAIT_S
    drain_timeout_s: float = 5.0

    @property
    def dump_endpoint(self) -> EndpointAddress:
        """``{ns}.{component}.kv_dump``: the gap-recovery endpoint beside ``endpoint``."""
        return EndpointAddress(self.endpoint.namespace, self.endpoint.component, DUMP_ENDPOINT)


def build_parser() -> argparse.ArgumentParser:
    """stator's part of the command line (vLLM's flags are not here; see ``split_args``)."""
    p = argparse.ArgumentParser(
        prog="python -m stator.vllm",
        description="A stator worker running vLLM's AsyncLLM in-process. Flags not listed here "
        "go to vLLM's engine arguments (see `vllm serve --help`).",
        allow_abbrev=False,
    )
    add_flag(p, "--model", required=True, help="model path or Hugging Face id (vLLM --model)")
    add_flag(p, "--tokenizer", default=None, help="tokenizer path or id (default: the model)")
    add_flag(p, "--served-model-name", default=None, help="name clients use (default: --model)")
    _add_endpoint_args(p.add_argument_group("endpoint"))
    _add_worker_args(p.add_argument_group("worker"))
    add_runtime_args(p)
    return p


def _add_endpoint_args(g: argparse._ArgumentGroup) -> None:
    add_flag(
        g,
        "--component-name",
        default=None,
        help=f"component (default: {DEFAULT_COMPONENT!r}; {PREFILL_COMPONENT!r} for prefill)",
    )
    add_flag(
        g,
        "--endpoint-name",
        default=None,
        help="endpoint (default: generate_{model slug}_{hash8} aggregated, else generate)",
    )
    add_flag(g, "--endpoint", default="", help="dyn://ns.comp.ep: overrides the three above")
    add_flag(
        g,
        "--is-prefill-worker",
        action="store_true",
        default=False,
        help="serve prefill only (max_tokens=1, returns kv_transfer_params)",
    )
    add_flag(
        g,
        "--is-decode-worker",
        action="store_true",
        default=False,
        help="decode worker of a disaggregated deployment",
    )


def _add_worker_args(g: argparse._ArgumentGroup) -> None:
    add_bool_flag(
        g, "--enable-kv-events", default=True, help="relay vLLM's KV-cache events to the KV router"
    )
    add_flag(
        g,
        "--kv-events-publisher-type",
        default=None,
        choices=["zmq", "nats"],
        help="event plane carrying the relayed KV events (default: --event-plane)",
    )
    add_flag(
        g,
        "--kv-events-endpoint",
        default="",
        help="ZMQ endpoint vLLM's KV-event publisher binds (default: private ipc socket)",
    )
    add_flag(
        g,
        "--metrics-port",
        default=None,
        type=bounded(int, lo=0, hi=65535),
        help="port for /metrics and /health (0: any free port; default: off)",
    )
    add_bool_flag(
        g, "--health-check", default=True, help="send a one-token canary request when idle"
    )
    add_flag(
        g,
        "--canary-wait-time",
        dest="canary_wait_s",
        default=DEFAULT_CANARY_WAIT_S,
        type=bounded(float, lo=0.1),
        help="idle seconds before a canary request",
    )
    add_flag(
        g,
        "--drain-timeout",
        dest="drain_timeout_s",
        default=5.0,
        type=bounded(float, lo=0.0),
        help="seconds in-flight requests get on SIGTERM",
    )


def split_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """Parse stator's flags out of ``argv``; return them and the rest (for vLLM), in order.

    Raises:
        SystemExit: a bad stator flag value (status 2, the flag named).
    """
    return build_parser().parse_known_args(list(argv))


def config_from_args(args: argparse.Namespace, rest: Sequence[str]) -> VllmWorkerConfig:
    """Build the worker settings from ``split_args``'s result.

    Raises:
        ConfigError: conflicting or malformed flags, naming the flag.
    """
    role = _role(args)
    runtime = runtime_config_from_args(args)
    if args.kv_events_publisher_type is not None:
        runtime = _with_event_plane(runtime, args.kv_events_publisher_type)
    served = args.served_model_name or args.model
    return VllmWorkerConfig(
        model=args.model,
        served_model_name=served,
        tokenizer=args.tokenizer,
        role=role,
        endpoint=_endpoint(args, runtime.namespace, served, role),
        runtime=runtime,
        engine_argv=tuple(engine_argv(args, rest)),
        enable_kv_events=args.enable_kv_events,
        kv_events_endpoint=args.kv_events_endpoint,
        metrics_port=args.metrics_port,
        health_check=args.health_check,
        canary_wait_s=args.canary_wait_s,
        drain_timeout_s=args.drain_timeout_s,
    )


def parse_config(argv: Sequence[str]) -> VllmWorkerConfig:
    """``config_from_args(*split_args(argv))``."""
    return config_from_args(*split_args(argv))


def engine_argv(args: argparse.Namespace, rest: Sequence[str]) -> list[str]:
    """vLLM's flags: ``--model`` (and ``--tokenizer`` / ``--served-model-name`` when given)
    first, then ``rest`` unchanged (so a repeated flag in ``rest`` wins, as in argparse)."""
    out = ["--model", args.model]
    if args.tokenizer:
        out += ["--tokenizer", args.tokenizer]
    if args.served_model_name:
        out += ["--served-model-name", args.served_model_name]
    return out + list(rest)


def _role(args: argparse.Namespace) -> WorkerRole:
    if args.is_prefill_worker and args.is_decode_worker:
        raise ConfigError("--is-prefill-worker", "cannot be combined with --is-decode-worker")
    if args.is_prefill_worker:
        return "prefill"
    return "decode" if args.is_decode_worker else "aggregated"


def _endpoint(
    args: argparse.Namespace, namespace: str, served: str, role: WorkerRole
) -> EndpointAddress:
    if args.endpoint:
        try:
            return EndpointAddress.parse(args.endpoint)
        except AddressError as exc:
            raise ConfigError("--endpoint", exc.message) from exc
    component = args.component_name or (
        PREFILL_COMPONENT if role == "prefill" else DEFAULT_COMPONENT
    )
    name = args.endpoint_name or (
        model_endpoint_name(served) if role == "aggregated" else PLAIN_ENDPOINT
    )
    try:
        return EndpointAddress.parse(f"{namespace}.{component}.{name}")
    except AddressError as exc:
        flag = {"namespace": "--namespace", "component": "--component-name"}
        raise ConfigError(flag.get(exc.param or "", "--endpoint-name"), exc.message) from exc


def _with_event_plane(runtime: RuntimeConfig, kind: str) -> RuntimeConfig:
    if kind not in ("zmq", "nats"):
        raise ConfigError("--kv-events-publisher-type", f"expected zmq or nats, got {kind!r}")
    return replace(runtime, event_plane="nats" if kind == "nats" else "zmq")
