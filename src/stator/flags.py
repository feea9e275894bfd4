"""Command-line flag helpers shared by every component's ``config.py``.

Every flag ``--some-flag`` may also be set with the env var ``STATOR_SOME_FLAG``; the command line
wins. Bad values fail at start with the flag named (argparse's ``argument --flag: ...`` message,
exit status 2). Old flag spellings are accepted with a deprecation warning naming the new flag.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def env_name(flag: str) -> str:
    """``--router-mode`` → ``STATOR_ROUTER_MODE``."""
    return "STATOR_" + flag.lstrip("-").replace("-", "_").upper()


def add_flag(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    flag: str,
    *,
    default: Any = None,
    help: str = "",
    deprecated: Sequence[str] = (),
    **kwargs: Any,
) -> None:
    """Add ``flag`` whose default may come from ``STATOR_*``; ``deprecated`` spellings warn.

    Raises:
        SystemExit: (at parse time) the env var holds a value the flag's ``type`` rejects.
    """
    env = env_name(flag)
    if env in os.environ:
        default = _from_env(flag, env, os.environ[env], kwargs)
    dest = kwargs.pop("dest", flag.lstrip("-").replace("-", "_"))
    parser.add_argument(flag, dest=dest, default=default, help=_help(help, env), **kwargs)
    for old in deprecated:
        parser.add_argument(
            old,
            dest=dest,
            default=argparse.SUPPRESS,
            help=argparse.SUPPRESS,
            action=_deprecated_action(kwargs.get("action"), old, flag),
            **{k: v for k, v in kwargs.items() if k != "action"},
        )


def add_bool_flag(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    flag: str,
    *,
    default: bool,
    help: str = "",
    deprecated: Sequence[str] = (),
) -> None:
    """``--flag/--no-flag`` boolean, default from ``STATOR_FLAG`` (1/0/true/false/yes/no)."""
    env = env_name(flag)
    if env in os.environ:
        default = parse_bool(os.environ[env], env)
    dest = flag.lstrip("-").replace("-", "_")
    parser.add_argument(
        flag,
        dest=dest,
        default=default,
        action=argparse.BooleanOptionalAction,
        help=_help(help, env),
    )
    for old in deprecated:
        parser.add_argument(
            old,
            dest=dest,
            default=argparse.SUPPRESS,
            help=argparse.SUPPRESS,
            action=_deprecated_action("store_true", old, flag),
            nargs=0,
        )


def parse_bool(text: str, name: str) -> bool:
    """Parse an env-var boolean. Raises ``SystemExit`` naming ``name`` for other text."""
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    sys.exit(f"error: {name}: expected a boolean (true/false), got {text!r}")


def bounded(kind: Callable[[str], T], *, lo: Any = None, hi: Any = None) -> Callable[[str], T]:
    """An argparse ``type`` that converts with ``kind`` and checks ``lo <= value <= hi``."""

    def convert(text: str) -> T:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {kind.__name__} value: {text!r}") from None
        if lo is not None and value < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, got {text}")
        if hi is not None and value > hi:
            raise argparse.ArgumentTypeError(f"must be <= {hi}, got {text}")
        return value

    convert.__name__ = kind.__name__
    return convert


def _from_env(flag: str, env: str, raw: str, kwargs: dict[str, Any]) -> Any:
    conv = kwargs.get("type")
    if conv is None:
        return raw
    try:
        return conv(raw)
    except (argparse.ArgumentTypeError, ValueError) as exc:
        sys.exit(f"error: {env} (for {flag}): {exc}")


def _help(text: str, env: str) -> str:
    return f"{text} [env: {env}]" if text else f"[env: {env}]"


def _deprecated_action(base: Any, old: str, new: str) -> type[argparse.Action]:
    class Deprecated(argparse.Action):
        def __call__(
            self,
            parser: argparse.ArgumentParser,
            namespace: argparse.Namespace,
            values: Any,
            option_string: str | None = None,
        ) -> None:
            print(f"warning: {old} is deprecated; use {new}", file=sys.stderr)
            setattr(namespace, self.dest, True if base == "store_true" else values)

    return Deprecated
