"""The ``nats`` request plane: requests and response streams over NATS subjects.

``NatsRequestPlaneServer`` hosts handlers under a per-instance subject prefix;
``NatsRequestPlaneClient`` opens streams to them. Subjects and message bodies are in
``nats_subjects`` (the frames are the tcp plane's, see ``framing``); the flow control is the same
per-stream credit window counted in chunks.
"""

from __future__ import annotations

from stator.runtime.request_plane.nats_client import DEFAULT_WINDOW, NatsRequestPlaneClient
from stator.runtime.request_plane.nats_server import NatsRequestPlaneServer
from stator.runtime.request_plane.nats_subjects import format_nats_address, parse_nats_address

__all__ = [
    "DEFAULT_WINDOW",
    "NatsRequestPlaneClient",
    "NatsRequestPlaneServer",
    "format_nats_address",
    "parse_nats_address",
]
