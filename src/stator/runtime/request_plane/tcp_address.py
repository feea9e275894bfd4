"""``tcp://host:port`` transport addresses (IPv6 hosts in brackets: ``tcp://[::1]:9000``)."""

from __future__ import annotations

from typing import Final

from stator.errors import NoInstanceError

TCP_SCHEME: Final = "tcp://"


def format_tcp_address(host: str, port: int) -> str:
    """``("127.0.0.1", 9000)`` → ``"tcp://127.0.0.1:9000"``; IPv6 hosts get brackets."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{TCP_SCHEME}{host}:{port}"


def parse_tcp_address(address: str) -> tuple[str, int]:
    """``"tcp://127.0.0.1:9000"`` → ``("127.0.0.1", 9000)``.

    Raises ``NoInstanceError`` (the instance cannot be reached) naming the bad part.
    """
    if not address.startswith(TCP_SCHEME):
        raise NoInstanceError(f"transport address {address!r}: scheme must be {TCP_SCHEME!r}")
    host, sep, port_text = address[len(TCP_SCHEME) :].rpartition(":")
    if not sep or not host:
        raise NoInstanceError(f"transport address {address!r}: expected tcp://host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise NoInstanceError(f"transport address {address!r}: bad port {port_text!r}")
    return host, int(port_text)
