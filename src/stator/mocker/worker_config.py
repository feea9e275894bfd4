"""Flags of ``python -m stator.mocker`` (Dynamo's mocker names) and the settings they make.

``build_parser()`` is public so ``stator serve`` can check flags it passes through. Engine flags
come from ``stator.mocker.config.add_engine_args``, runtime flags (``--namespace``,
``--discovery-backend`` ...) from ``stator.runtime.config.add_runtime_args``.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from stator.errors import AddressError, ConfigError
from stator.flags import add_flag, bounded
from stator.mocker.config import MockerConfig, add_engine_args
from stator.runtime.address import EndpointAddress, model_endpoint_name
from stator.runtime.config import RuntimeConfig, add_runtime_args, runtime_config_from_args

DEFAULT_COMPONENT = "backend"
"""Component of an aggregated worker's endpoint (DESIGN.md, worker ↔ router conventions)."""


@dataclass(frozen=True, slots=True)
class MockerProcessConfig:
    """Settings of one mocker process.

    ``model_path``: model directory (tokenizer, ``config.json``); ``model_name``: the served
    name. ``num_workers``: simulated workers in this process, each its own runtime instance.
    ``startup_time_s``: seconds to wait before registering (simulated model load).
    ``endpoint``: the generate endpoint every worker serves. ``engine``: engine settings from the
    flags (vocabulary and context length are filled in from the model later).
    """

    model_path: str
    model_name: str
    num_workers: int
    startup_time_s: float
    endpoint: EndpointAddress
    engine: MockerConfig
    runtime: RuntimeConfig


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m stator.mocker`` / ``stator mocker``."""
    p = argparse.ArgumentParser(
        prog="stator mocker",
        description="Simulated vLLM workers (no GPU) serving a model over the stator runtime.",
    )
    add_flag(
        p,
        "--model-path",
        default=None,
        help="model directory with tokenizer and config.json (default: the tiny test model)",
    )
    add_flag(p, "--model-name", default=None, help="served model name (default: directory name)")
    add_flag(
        p,
        "--num-workers",
        default=1,
        type=bounded(int, lo=1, hi=4096),
        help="simulated workers in this process, each its own instance",
    )
    add_flag(
        p,
        "--startup-time",
        dest="startup_time_s",
        default=0.0,
        type=bounded(float, lo=0.0),
        help="seconds to wait before registering (simulated model load)",
    )
    add_flag(
        p,
        "--endpoint",
        default="",
        help="endpoint to serve, dyn://ns.comp.ep "
        "(default: dyn://{namespace}.backend.{model-specific name})",
    )
    add_engine_args(p.add_argument_group("engine"))
    add_runtime_args(p)
    return p


def config_from_args(args: argparse.Namespace) -> MockerProcessConfig:
    """Build the process settings from parsed flags.

    The default model (no ``--model-path``) is the tiny test model, built on first use.

    Raises:
        ConfigError: a bad value, naming its flag (``--model-path``, ``--endpoint``, or an
            engine flag).
    """
    model_path = _model_path(args.model_path)
    model_name = args.model_name or os.path.basename(os.path.normpath(model_path))
    if not model_name:
        raise ConfigError("--model-name", "must not be empty")
    runtime = runtime_config_from_args(args)
    return MockerProcessConfig(
        model_path=model_path,
        model_name=model_name,
        num_workers=args.num_workers,
        startup_time_s=args.startup_time_s,
        endpoint=_endpoint(args.endpoint, runtime.namespace, model_name),
        engine=MockerConfig.from_args(args),
        runtime=runtime,
    )


def _model_path(flag_value: str | None) -> str:
    if flag_value is None:
        from stator.testing.tiny_model import ensure_tiny_model

        return str(ensure_tiny_model())
    path = Path(flag_value).expanduser()
    if not path.is_dir():
        raise ConfigError("--model-path", f"{flag_value!r} is not a directory")
    if not (path / "tokenizer.json").is_file():
        raise ConfigError("--model-path", f"{flag_value!r} has no tokenizer.json")
    return str(path.resolve())


def _endpoint(flag_value: str, namespace: str, model_name: str) -> EndpointAddress:
    if not flag_value:
        text = f"{namespace}.{DEFAULT_COMPONENT}.{model_endpoint_name(model_name)}"
        try:
            return EndpointAddress.parse(text)
        except AddressError as exc:
            raise ConfigError("--namespace", exc.message) from exc
    try:
        return EndpointAddress.parse(flag_value)
    except AddressError as exc:
        raise ConfigError("--endpoint", exc.message) from exc
