"""JSON Schema of the wire protocol (``stator schema``)."""

from __future__ import annotations

from typing import Any

import msgspec

from stator.protocols import PROTOCOL_VERSION
from stator.protocols.engine import LLMEngineOutput, PreprocessedRequest
from stator.protocols.kv_events import KvCacheDump, KvEventBatch, LoadMetrics
from stator.protocols.model_card import ModelCard

WIRE_TYPES: tuple[type[msgspec.Struct], ...] = (
    PreprocessedRequest,
    LLMEngineOutput,
    KvEventBatch,
    KvCacheDump,
    LoadMetrics,
    ModelCard,
)


def wire_schema() -> dict[str, Any]:
    """Return one JSON Schema document covering every wire type, tagged with the version."""
    components, refs = _components()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "stator wire protocol",
        "version": PROTOCOL_VERSION,
        "anyOf": refs,
        "$defs": components,
    }


def _components() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    schemas, components = msgspec.json.schema_components(WIRE_TYPES, ref_template="#/$defs/{name}")
    return components, list(schemas)
