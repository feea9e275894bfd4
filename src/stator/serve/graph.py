"""The deployment graph: which components run, how many replicas, with which flags.

A graph comes from ``stator serve`` flags or a YAML file (``stator serve -f graph.yaml``)::

    namespace: dynamo              # optional
    components:
      - name: frontend
        kind: frontend             # frontend | mocker | vllm | router
        args: {http-port: 8000, router-mode: kv}
      - name: tiny
        kind: mocker
        replicas: 1                # processes; a mocker process runs --num-workers workers
        args: {model-path: /models/tiny, model-name: tiny, num-workers: 2}
      - name: big
        kind: vllm
        python: .venv-vllm/bin/python   # optional: the interpreter with vLLM installed
        args: {model: /models/big, served-model-name: big}

``args`` maps flag names (without ``--``) to values; ``true`` → bare flag, ``false`` →
``--no-flag``, a list → the flag repeated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from stator.errors import ConfigError

COMPONENT_MODULES: dict[str, str] = {
    "frontend": "stator.frontend",
    "mocker": "stator.mocker",
    "vllm": "stator.vllm",
    "router": "stator.router",
}


@dataclass(frozen=True, slots=True)
class ComponentSpec:
    """One component: ``replicas`` processes of ``python -m COMPONENT_MODULES[kind] argv``.

    ``python``: the interpreter to run it with (``None``: the one running ``stator serve``); vLLM
    workers usually live in their own virtual environment.
    """

    name: str
    kind: str
    argv: tuple[str, ...] = ()
    replicas: int = 1
    python: str | None = None

    @property
    def module(self) -> str:
        """The Python module started with ``python -m``."""
        return COMPONENT_MODULES[self.kind]


@dataclass(frozen=True, slots=True)
class Graph:
    """A deployment. Exactly one frontend; its HTTP port is where ``serve`` waits for readiness."""

    components: tuple[ComponentSpec, ...]
    namespace: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def frontend(self) -> ComponentSpec:
        """The frontend component (validated to exist)."""
        return next(c for c in self.components if c.kind == "frontend")


def args_to_argv(args: dict[str, Any], where: str) -> list[str]:
    """``{"http-port": 8000, "foo": True, "bar": False}`` → ``["--http-port", "8000", "--foo",
    "--no-bar"]``.

    Raises:
        ConfigError: a value is a mapping or None (``where`` names the component).
    """
    argv: list[str] = []
    for key, value in args.items():
        flag = "--" + str(key).lstrip("-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, list):
            for item in value:
                argv += [flag, str(item)]
        elif value is None or isinstance(value, dict):
            raise ConfigError(where, f"args.{key}: expected a scalar or a list, got {value!r}")
        else:
            argv += [flag, str(value)]
    return argv


def load_graph(path: str | Path) -> Graph:
    """Read and validate a YAML graph file.

    Raises:
        ConfigError: unreadable file, bad YAML, unknown kind, bad replicas, no/many frontends.
    """
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigError("-f", f"cannot read graph file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError("-f", f"graph file {path} is not valid YAML: {exc}") from None
    return graph_from_dict(data, str(path))


def graph_from_dict(data: Any, source: str = "graph") -> Graph:
    """Validate a parsed graph mapping (see module docstring). Raises ``ConfigError``."""
    if not isinstance(data, dict) or not isinstance(data.get("components"), list):
        raise ConfigError("-f", f"{source}: expected a mapping with a 'components' list")
    components = tuple(
        _component(item, f"{source}: components[{i}]") for i, item in enumerate(data["components"])
    )
    _check_names(components, source)
    env = data.get("env") or {}
    if not isinstance(env, dict):
        raise ConfigError("-f", f"{source}: env must be a mapping")
    namespace = data.get("namespace")
    return Graph(components, None if namespace is None else str(namespace), _str_dict(env))


def _component(item: Any, where: str) -> ComponentSpec:
    if not isinstance(item, dict):
        raise ConfigError("-f", f"{where}: expected a mapping")
    kind = item.get("kind")
    if kind not in COMPONENT_MODULES:
        raise ConfigError("-f", f"{where}: kind must be one of {sorted(COMPONENT_MODULES)}")
    replicas = item.get("replicas", 1)
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 1:
        raise ConfigError("-f", f"{where}: replicas must be an integer >= 1, got {replicas!r}")
    args = item.get("args") or {}
    if not isinstance(args, dict):
        raise ConfigError("-f", f"{where}: args must be a mapping of flag → value")
    name = str(item.get("name") or kind)
    python = item.get("python")
    if python is not None and not isinstance(python, str):
        raise ConfigError("-f", f"{where}: python must be a path to an interpreter")
    return ComponentSpec(name, kind, tuple(args_to_argv(args, where)), replicas, python)


def _check_names(components: tuple[ComponentSpec, ...], source: str) -> None:
    names = [c.name for c in components]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError("-f", f"{source}: duplicate component names {dupes}")
    num_frontends = sum(c.kind == "frontend" for c in components)
    if num_frontends != 1:
        raise ConfigError("-f", f"{source}: needs exactly one frontend, found {num_frontends}")


def _str_dict(data: dict[Any, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in data.items()}
