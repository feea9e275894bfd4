"""Backend factories: build discovery, request plane and event plane from a ``RuntimeConfig``.

The only place that maps backend names to classes, so adding ``etcd`` discovery or the ``nats``
planes changes this module and nothing that calls it. Optional backends are imported lazily by
module path; until their module exists (or its client library is installed) choosing them
raises ``ConfigError`` naming the flag. Expected seams for later backends:

- ``stator.runtime.discovery.etcd.EtcdDiscovery(endpoints: tuple[str, ...], lease_ttl_s: float)``
- ``stator.runtime.request_plane.nats.NatsRequestPlaneServer(server_url: str)`` and
  ``NatsRequestPlaneClient(server_url: str)``
- ``stator.runtime.event_plane.nats.NatsEventPlane(server_url: str)``
"""

from __future__ import annotations

import importlib
from typing import Any

from stator.errors import ConfigError
from stator.runtime.config import RuntimeConfig
from stator.runtime.discovery.base import Discovery
from stator.runtime.discovery.mem import MemStore
from stator.runtime.event_plane.base import EventPlane
from stator.runtime.request_plane.base import RequestPlaneClient, RequestPlaneServer


def make_discovery(config: RuntimeConfig, mem_store: MemStore | None = None) -> Discovery:
    """An unstarted discovery for ``config.discovery_backend``.

    ``mem``: over ``mem_store`` (a fresh private store when ``None``: only this runtime sees
    it); ``file``: in ``config.resolved_discovery_dir()``; ``etcd``: at ``config.etcd_endpoints``.
    TTL: ``config.lease_ttl_s``.

    Raises:
        ConfigError: (``--discovery-backend``) unknown backend, or one not available here.
    """
    backend = config.discovery_backend
    if backend == "mem":
        from stator.runtime.discovery.mem import MemDiscovery

        return MemDiscovery(mem_store if mem_store is not None else MemStore(), config.lease_ttl_s)
    if backend == "file":
        from stator.runtime.discovery.file import FileDiscovery

        return FileDiscovery(config.resolved_discovery_dir(), config.lease_ttl_s)
    if backend == "etcd":
        cls = _optional_backend("--discovery-backend", "etcd", "discovery.etcd", "EtcdDiscovery")
        obj = cls(config.etcd_endpoints, config.lease_ttl_s)
        if isinstance(obj, Discovery):
            return obj
        raise _not_a(obj, Discovery)
    raise ConfigError("--discovery-backend", f"unknown backend {backend!r} (mem, file, etcd)")


def make_request_plane_server(config: RuntimeConfig) -> RequestPlaneServer:
    """An unstarted request-plane server (``tcp``: ``advertise_host``, ephemeral port).

    Raises:
        ConfigError: (``--request-plane``) unknown or unavailable plane.
    """
    if config.request_plane == "tcp":
        from stator.runtime.request_plane.tcp import TcpRequestPlaneServer

        return TcpRequestPlaneServer(config.advertise_host, 0)
    if config.request_plane == "nats":
        cls = _optional_backend(
            "--request-plane", "nats", "request_plane.nats", "NatsRequestPlaneServer"
        )
        obj = cls(config.nats_server)
        if isinstance(obj, RequestPlaneServer):
            return obj
        raise _not_a(obj, RequestPlaneServer)
    raise ConfigError("--request-plane", f"unknown plane {config.request_plane!r} (tcp, nats)")


def make_request_plane_client(config: RuntimeConfig) -> RequestPlaneClient:
    """A request-plane client for ``config.request_plane``.

    Raises:
        ConfigError: (``--request-plane``) unknown or unavailable plane.
    """
    if config.request_plane == "tcp":
        from stator.runtime.request_plane.tcp import TcpRequestPlaneClient

        return TcpRequestPlaneClient()
    if config.request_plane == "nats":
        cls = _optional_backend(
            "--request-plane", "nats", "request_plane.nats", "NatsRequestPlaneClient"
        )
        obj = cls(config.nats_server)
        if isinstance(obj, RequestPlaneClient):
            return obj
        raise _not_a(obj, RequestPlaneClient)
    raise ConfigError("--request-plane", f"unknown plane {config.request_plane!r} (tcp, nats)")


def make_event_plane(config: RuntimeConfig, discovery: Discovery) -> EventPlane:
    """The event plane for ``config.event_plane`` (``zmq`` finds publishers via ``discovery``).

    Raises:
        ConfigError: (``--event-plane``) unknown or unavailable plane.
    """
    if config.event_plane == "zmq":
        from stator.runtime.event_plane.zmq import ZmqEventPlane

        return ZmqEventPlane(discovery, config.advertise_host)
    if config.event_plane == "nats":
        cls = _optional_backend("--event-plane", "nats", "event_plane.nats", "NatsEventPlane")
        obj = cls(config.nats_server)
        if isinstance(obj, EventPlane):
            return obj
        raise _not_a(obj, EventPlane)
    raise ConfigError("--event-plane", f"unknown plane {config.event_plane!r} (zmq, nats)")


def _optional_backend(flag: str, name: str, module: str, attr: str) -> Any:
    """The class ``attr`` of ``stator.runtime.{module}``, or ``ConfigError`` naming ``flag``."""
    try:
        mod = importlib.import_module(f"stator.runtime.{module}")
    except ImportError as e:
        raise ConfigError(
            flag,
            f"{name!r} is not installed or not yet supported in this build ({e}); "
            f"use the embedded backends (discovery mem|file, request plane tcp, event plane zmq)",
        ) from e
    return getattr(mod, attr)


def _not_a(obj: object, base: type) -> TypeError:
    return TypeError(f"{type(obj).__name__} does not implement {base.__name__}")
