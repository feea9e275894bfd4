"""``RuntimeConfig``: which discovery, request plane and event plane a process uses."""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import dataclass
from typing import Literal

from stator.flags import add_flag, bounded
from stator.runtime.address import DEFAULT_NAMESPACE

DiscoveryBackend = Literal["mem", "file", "etcd"]
RequestPlaneKind = Literal["tcp", "nats"]
EventPlaneKind = Literal["zmq", "nats"]


def default_discovery_dir() -> str:
    """``$TMPDIR/stator-discovery-$UID``: shared by every stator process of this user."""
    return os.path.join(tempfile.gettempdir(), f"stator-discovery-{os.getuid()}")


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    """Backends and their settings. ``lease_ttl_s``: seconds until a dead process's keys go."""

    namespace: str = DEFAULT_NAMESPACE
    discovery_backend: DiscoveryBackend = "file"
    discovery_dir: str = ""
    etcd_endpoints: tuple[str, ...] = ("http://127.0.0.1:2379",)
    request_plane: RequestPlaneKind = "tcp"
    nats_server: str = "nats://127.0.0.1:4222"
    event_plane: EventPlaneKind = "zmq"
    advertise_host: str = "127.0.0.1"
    lease_ttl_s: float = 10.0

    def resolved_discovery_dir(self) -> str:
        """``discovery_dir`` or the default one."""
        return self.discovery_dir or default_discovery_dir()


def add_runtime_args(parser: argparse.ArgumentParser) -> None:
    """Add the runtime flags (``--namespace``, ``--discovery-backend`` ...) to ``parser``."""
    g = parser.add_argument_group("runtime")
    add_flag(g, "--namespace", default=DEFAULT_NAMESPACE, help="namespace of this deployment")
    add_flag(
        g,
        "--discovery-backend",
        default="file",
        choices=["mem", "file", "etcd"],
        deprecated=["--store-kv"],
        help="where instances and model cards are registered",
    )
    add_flag(g, "--discovery-dir", default="", help="directory for --discovery-backend file")
    add_flag(g, "--etcd-endpoints", default="http://127.0.0.1:2379", help="comma-separated URLs")
    add_flag(g, "--request-plane", default="tcp", choices=["tcp", "nats"])
    add_flag(g, "--nats-server", default="nats://127.0.0.1:4222", help="NATS URL")
    add_flag(g, "--event-plane", default="zmq", choices=["zmq", "nats"])
    add_flag(g, "--advertise-host", default="127.0.0.1", help="host others use to reach us")
    add_flag(
        g,
        "--lease-ttl",
        dest="lease_ttl_s",
        default=10.0,
        type=bounded(float, lo=1.0, hi=300.0),
        help="seconds before a dead process's registrations expire",
    )


def runtime_config_from_args(args: argparse.Namespace) -> RuntimeConfig:
    """Build the config from parsed flags (see ``add_runtime_args``)."""
    return RuntimeConfig(
        namespace=args.namespace,
        discovery_backend=args.discovery_backend,
        discovery_dir=args.discovery_dir,
        etcd_endpoints=tuple(e.strip() for e in args.etcd_endpoints.split(",") if e.strip()),
        request_plane=args.request_plane,
        nats_server=args.nats_server,
        event_plane=args.event_plane,
        advertise_host=args.advertise_host,
        lease_ttl_s=args.lease_ttl_s,
    )
