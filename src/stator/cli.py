"""The ``stator`` console script: a thin dispatcher to each subcommand's own ``main(argv)``.

Subcommands import lazily so ``stator schema`` does not pay for FastAPI or numpy.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

# subcommand path → (module, help). "bench runtime" is the two-word subcommand.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "schema": ("stator.protocols.schema_cli", "print the wire protocol's JSON Schema"),
    "serve": ("stator.serve.__main__", "start a local deployment (frontend, router, workers)"),
    "replay": ("stator.mocker.replay_cli", "offline trace replay through simulated workers"),
    "frontend": ("stator.frontend.__main__", "run the OpenAI-compatible frontend"),
    "mocker": ("stator.mocker.__main__", "run mocker engine workers"),
    "router": ("stator.router.__main__", "run a standalone router"),
    "bench runtime": ("stator.bench.runtime_bench", "request-plane latency and throughput"),
    "bench frontend": ("stator.bench.frontend_bench", "frontend overhead with an instant engine"),
    "bench indexer": ("stator.bench.indexer_bench", "KV indexer operations/s and latency"),
    "bench replay": ("stator.bench.replay", "replay a trace against an OpenAI-compatible URL"),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``stator SUBCOMMAND [args]``; returns the subcommand's exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    key = " ".join(args[:2]) if " ".join(args[:2]) in SUBCOMMANDS else args[0]
    if key not in SUBCOMMANDS:
        print(f"stator: unknown subcommand {args[0]!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[key][0])
    rest = args[len(key.split()) :]
    result = module.main(rest)
    return int(result or 0)


def _usage() -> str:
    lines = ["usage: stator SUBCOMMAND [options]", "", "subcommands:"]
    lines += [f"  {name:<16} {text}" for name, (_, text) in SUBCOMMANDS.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
