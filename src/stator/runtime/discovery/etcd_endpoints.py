"""``--etcd-endpoints`` values: ``http://host:port`` URLs (pure parsing, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from stator.errors import ConfigError

DEFAULT_ETCD_PORT: Final = 2379
"""etcd's client port (IANA-registered)."""

FLAG: Final = "--etcd-endpoints"


@dataclass(frozen=True, slots=True)
class EtcdEndpoint:
    """One etcd member's client address. ``host`` keeps IPv6 brackets (``[::1]``), as gRPC
    targets need them."""

    host: str
    port: int

    @property
    def url(self) -> str:
        """``http://host:port``."""
        return f"http://{self.host}:{self.port}"


def parse_etcd_endpoint(text: str) -> EtcdEndpoint:
    """``http://10.0.0.5:2379``, ``10.0.0.5:2379`` or ``etcd.local`` (port 2379) → endpoint.

    Raises:
        ConfigError: (``--etcd-endpoints``) empty, TLS (``https``, not supported yet), another
            scheme, a path, or a bad port.
    """
    text = text.strip()
    if not text:
        raise ConfigError(FLAG, "empty endpoint")
    parts = urlsplit(text if "://" in text else f"http://{text}")
    if parts.scheme == "https":
        raise ConfigError(FLAG, f"{text!r}: TLS (https) is not supported yet; use http://")
    if parts.scheme != "http":
        raise ConfigError(FLAG, f"{text!r}: scheme must be http://")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(FLAG, f"{text!r}: expected http://host:port, without a path")
    try:
        port = parts.port or DEFAULT_ETCD_PORT
    except ValueError:
        raise ConfigError(FLAG, f"{text!r}: bad port") from None
    host = parts.hostname
    if not host:
        raise ConfigError(FLAG, f"{text!r}: no host")
    return EtcdEndpoint(f"[{host}]" if ":" in host else host, port)


def parse_etcd_endpoints(endpoints: tuple[str, ...] | list[str]) -> list[EtcdEndpoint]:
    """Parse every endpoint (see ``parse_etcd_endpoint``).

    Raises:
        ConfigError: no endpoint, or a bad one.
    """
    if not endpoints:
        raise ConfigError(FLAG, "no etcd endpoint given")
    return [parse_etcd_endpoint(e) for e in endpoints]
