"""Wire types of the standalone router's ``generate`` endpoint (``python -m stator.router``).

The router streams the chosen worker's ``LLMEngineOutput`` chunks back unchanged, except that the
first chunk is a ``RoutedEngineOutput``: the same fields plus ``routing_data`` naming the worker
it picked (Dynamo's standalone router forwards the same information as ``routing_data``). Structs
are encoded as msgpack maps and msgspec ignores unknown keys, so a caller that decodes every chunk
as plain ``LLMEngineOutput`` still works; the frontend's ``RemoteRouter`` decodes
``RoutedEngineOutput`` to learn the worker for ``nvext.worker_id``.
"""

from __future__ import annotations

import msgspec

from stator.protocols.engine import LLMEngineOutput


class RoutingData(msgspec.Struct, omit_defaults=True, kw_only=True):
    """Where the router sent a request: ``worker_id`` (the worker's runtime instance id) and
    ``overlap_blocks`` (prompt blocks the router expected cached there; 0 outside kv mode)."""

    worker_id: int
    overlap_blocks: int = 0


class RoutedEngineOutput(LLMEngineOutput, omit_defaults=True, kw_only=True):
    """An ``LLMEngineOutput`` chunk with the routing decision (first chunk of a routed stream;
    ``routing_data`` is None on later chunks)."""

    routing_data: RoutingData | None = None


def with_routing_data(chunk: LLMEngineOutput, routing: RoutingData) -> RoutedEngineOutput:
    """A copy of ``chunk`` carrying ``routing`` (field values are shared, not copied)."""
    fields = {f: getattr(chunk, f) for f in LLMEngineOutput.__struct_fields__}
    return RoutedEngineOutput(**fields, routing_data=routing)
