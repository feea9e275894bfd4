"""The ``tcp`` request plane: length-prefixed msgpack frames, many streams per connection.

``TcpRequestPlaneServer`` hosts handlers; ``TcpRequestPlaneClient`` opens streams to them. The
wire format is in ``framing``; flow control is a per-stream credit window counted in chunks.
"""

from __future__ import annotations

from stator.runtime.request_plane.tcp_address import format_tcp_address, parse_tcp_address
from stator.runtime.request_plane.tcp_client import DEFAULT_WINDOW, TcpRequestPlaneClient
from stator.runtime.request_plane.tcp_server import TcpRequestPlaneServer

__all__ = [
    "DEFAULT_WINDOW",
    "TcpRequestPlaneClient",
    "TcpRequestPlaneServer",
    "format_tcp_address",
    "parse_tcp_address",
]
