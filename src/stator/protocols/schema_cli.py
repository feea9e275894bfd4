"""``stator schema``: print the wire protocol's JSON Schema."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from stator.protocols.schema import wire_schema


def main(argv: Sequence[str] | None = None) -> int:
    """Print the JSON Schema (``--compact`` for one line)."""
    parser = argparse.ArgumentParser(prog="stator schema", description=__doc__)
    parser.add_argument("--compact", action="store_true", help="one line, no indentation")
    args = parser.parse_args(argv)
    print(json.dumps(wire_schema(), indent=None if args.compact else 2, sort_keys=True))
    return 0
