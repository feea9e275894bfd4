"""``stator serve`` flags → a ``Graph`` plus the runtime flags shared by every component."""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import dataclass
from typing import Any

from stator.errors import ConfigError
from stator.flags import add_flag, bounded
from stator.runtime.config import add_runtime_args
from stator.serve.graph import ComponentSpec, Graph, load_graph

DEFAULT_MODEL_NAME = "stator-tiny-llama"  # served name of the built-in tiny test model
# Flags of the frontend that `stator serve` forwards to it (all other extra flags go to workers).
FRONTEND_FLAG_PREFIXES = ("--router-", "--no-router-", "--active-", "--kv-cache-block-size")
RUNTIME_FLAGS = (
    "namespace", "discovery_backend", "discovery_dir", "etcd_endpoints", "request_plane",
    "nats_server", "event_plane", "advertise_host", "lease_ttl_s",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """What ``stator serve`` runs. ``common_argv``: runtime flags for every component."""

    graph: Graph
    common_argv: tuple[str, ...]
    http_url: str
    private_dir: str | None
    ready_timeout_s: float
    num_models: int


def build_parser() -> argparse.ArgumentParser:
    """The ``stator serve`` parser. Flags it does not know are split between the frontend
    (``--router-*``, ``--active-*``) and the engine workers (everything else)."""
    p = argparse.ArgumentParser(
        prog="stator serve",
        description="Start a local deployment: frontend + router + engine workers.",
    )
    add_flag(p, "-f", dest="graph_file", default=None, help="YAML graph file (see docs)")
    add_flag(p, "--engine", default="mocker", choices=["mocker", "vllm"])
    add_flag(p, "--num-workers", default=2, type=bounded(int, lo=1, hi=1024))
    add_flag(p, "--model-path", default=None, help="model dir (default: the tiny test model)")
    add_flag(p, "--model-name", default=None, help="served model name (default: dir name)")
    add_flag(p, "--http-host", default="127.0.0.1")
    add_flag(p, "--http-port", default=8000, type=bounded(int, lo=0, hi=65535))
    add_flag(p, "--router-mode", default="kv", help="kv | round-robin | random | ...")
    add_flag(p, "--ready-timeout", default=180.0, type=bounded(float, lo=1.0))
    add_flag(
        p,
        "--vllm-python",
        default=None,
        help="interpreter for --engine vllm workers (default: .venv-vllm/bin/python if present)",
    )
    add_runtime_args(p)
    return p


def serve_config_from_argv(argv: list[str], default_model_path: Any) -> ServeConfig:
    """Parse ``argv``. ``default_model_path()`` is called only when no model is given.

    Raises:
        SystemExit: a bad flag (argparse names it).
        ConfigError: a bad graph file.
    """
    args, extra = build_parser().parse_known_args(argv)
    _reject_stray_positionals(extra)
    private_dir = _private_discovery_dir(args)
    if args.graph_file:
        if extra:
            raise ConfigError(extra[0], "unknown flag (with -f, put component flags in the graph)")
        graph = _with_http_flags(load_graph(args.graph_file), args)
        num_models = sum(c.kind in ("mocker", "vllm") for c in graph.components)
    else:
        graph = _graph_from_flags(args, extra, default_model_path)
        num_models = 1
    validate_component_flags(graph, _runtime_argv(args))
    port = _frontend_port(graph, args.http_port)
    host = args.http_host if args.http_host not in ("0.0.0.0", "::") else "127.0.0.1"
    return ServeConfig(
        graph=graph,
        common_argv=tuple(_runtime_argv(args)),
        http_url=f"http://{host}:{port}",
        ready_timeout_s=args.ready_timeout,
        num_models=num_models,
        private_dir=private_dir,
    )


def _graph_from_flags(args: argparse.Namespace, extra: list[str], default_model: Any) -> Graph:
    frontend_extra, engine_extra = split_extra_flags(extra)
    model_path = args.model_path or str(default_model())
    fallback_name = DEFAULT_MODEL_NAME if not args.model_path else model_path
    model_name = args.model_name or os.path.basename(os.path.normpath(fallback_name))
    frontend = ComponentSpec(
        "frontend",
        "frontend",
        ("--http-host", args.http_host, "--http-port", str(args.http_port),
         "--router-mode", args.router_mode, *frontend_extra),
    )  # fmt: skip
    engine_argv = ["--model-path", model_path, "--model-name", model_name]
    if args.engine == "mocker":
        engine_argv += ["--num-workers", str(args.num_workers)]
        workers = ComponentSpec("mocker", "mocker", (*engine_argv, *engine_extra))
    else:
        vllm_argv = ("--model", model_path, "--served-model-name", model_name, *engine_extra)
        python = _vllm_python(args.vllm_python)
        workers = ComponentSpec("vllm", "vllm", vllm_argv, args.num_workers, python)
    return Graph((workers, frontend))


def validate_component_flags(graph: Graph, common_argv: list[str]) -> None:
    """Parse each frontend and mocker component's flags with that component's own parser, so a
    bad flag fails ``stator serve`` at start (argparse exit 2, flag named) instead of killing a
    child later. Other kinds (vllm, router) validate in their own process."""
    for spec in graph.components:
        argv = [*common_argv, *spec.argv]
        if spec.kind == "frontend":
            from stator.frontend.config import parse_config

            parse_config(argv)
        elif spec.kind == "mocker":
            from stator.mocker.worker_config import build_parser as mocker_parser
            from stator.mocker.worker_config import config_from_args

            try:
                config_from_args(mocker_parser().parse_args(argv))
            except ConfigError as exc:
                raise ConfigError(exc.flag, f"component {spec.name}: {exc.message}") from None


def _vllm_python(flag_value: str | None) -> str | None:
    """``--vllm-python``, else ``.venv-vllm/bin/python`` when it exists, else ``None``.

    Raises:
        ConfigError: ``--vllm-python`` is not an executable file.
    """
    if flag_value is None:
        default = os.path.join(".venv-vllm", "bin", "python")
        return os.path.abspath(default) if os.access(default, os.X_OK) else None
    if not os.access(flag_value, os.X_OK):
        raise ConfigError("--vllm-python", f"{flag_value} is not an executable interpreter")
    return flag_value


def split_extra_flags(extra: list[str]) -> tuple[list[str], list[str]]:
    """Split unknown flags (each with its values) into (frontend flags, engine flags)."""
    frontend: list[str] = []
    engine: list[str] = []
    target = engine
    for token in extra:
        if token.startswith("-"):
            target = frontend if token.startswith(FRONTEND_FLAG_PREFIXES) else engine
        target.append(token)
    return frontend, engine


def _private_discovery_dir(args: argparse.Namespace) -> str | None:
    """``file`` discovery without ``--discovery-dir`` gets a fresh directory of its own."""
    if args.discovery_backend == "mem":
        raise ConfigError(
            "--discovery-backend", "mem serves one process; stator serve needs file or etcd"
        )
    if args.discovery_backend != "file" or args.discovery_dir:
        return None
    args.discovery_dir = tempfile.mkdtemp(prefix="stator-serve-")
    return str(args.discovery_dir)


def _with_http_flags(graph: Graph, args: argparse.Namespace) -> Graph:
    """Give the graph's frontend ``--http-host``/``--http-port`` from the flags if it has none."""
    fe = graph.frontend
    added: list[str] = []
    for flag, value in (("--http-host", args.http_host), ("--http-port", args.http_port)):
        if flag not in fe.argv:
            added += [flag, str(value)]
    new_fe = ComponentSpec(fe.name, fe.kind, (*fe.argv, *added), fe.replicas)
    comps = tuple(new_fe if c is fe else c for c in graph.components)
    return Graph(comps, graph.namespace, graph.env)


def _reject_stray_positionals(extra: list[str]) -> None:
    if extra and not extra[0].startswith("-"):
        raise ConfigError(extra[0], "unexpected argument (flags start with --)")


def _frontend_port(graph: Graph, default: int) -> int:
    argv = list(graph.frontend.argv)
    if "--http-port" in argv:
        try:
            return int(argv[argv.index("--http-port") + 1])
        except (ValueError, IndexError):
            raise ConfigError("--http-port", "frontend http-port must be an integer") from None
    return default


def _runtime_argv(args: argparse.Namespace) -> list[str]:
    argv: list[str] = []
    for dest in RUNTIME_FLAGS:
        flag = "--lease-ttl" if dest == "lease_ttl_s" else "--" + dest.replace("_", "-")
        argv += [flag, str(getattr(args, dest))] if getattr(args, dest) != "" else []
    return argv
