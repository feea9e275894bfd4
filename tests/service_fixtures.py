"""Fixtures for the scale-out backends: real ``etcd`` and ``nats-server`` on free loopback ports.

Imported by ``tests/integration/conftest.py`` and ``tests/e2e/conftest.py``. The session-scoped
servers are shared by every test of a run (each test wipes etcd's keys first, see
``etcd_url``); tests that restart a server make their own with ``EtcdServer``/``NatsServer``.
Without the binaries (``scripts/bootstrap.sh --with-services`` installs them) the tests that
need them are skipped with the reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from stator.testing.services import EtcdServer, NatsServer, ServiceError, find_binary

ETCD_MISSING = "etcd is not installed (scripts/bootstrap.sh --with-services)"
NATS_MISSING = "nats-server is not installed (scripts/bootstrap.sh --with-services)"


def require_binary(name: str, reason: str) -> None:
    """Skip the test when ``name`` is not on the PATH; fail instead when
    ``STATOR_REQUIRE_SERVICES=1`` (CI installs the services, so a skip there would hide a gap)."""
    if find_binary(name) is None:
        if os.environ.get("STATOR_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{reason}; STATOR_REQUIRE_SERVICES=1 forbids skipping")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """One etcd for the session (data in a tmp dir), stopped by PID at the end."""
    require_binary("etcd", ETCD_MISSING)
    server = EtcdServer(tmp_path_factory.mktemp("etcd"))
    try:
        server.start()
    except ServiceError as exc:
        pytest.fail(str(exc))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """One nats-server for the session, stopped by PID at the end."""
    require_binary("nats-server", NATS_MISSING)
    server = NatsServer(tmp_path_factory.mktemp("nats"))
    try:
        server.start()
    except ServiceError as exc:
        pytest.fail(str(exc))
    yield server
    server.stop()


@pytest.fixture
async def etcd_url(etcd_server: EtcdServer) -> str:
    """The session etcd's URL, with every key deleted first (tests see an empty store)."""
    await wipe_etcd(etcd_server.url)
    return etcd_server.url


@pytest.fixture
def nats_url(nats_server: NatsServer) -> str:
    """The session nats-server's URL."""
    return nats_server.url


@pytest.fixture
def restartable_etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    """An etcd of this test only (it may stop and start it), stopped by PID at the end."""
    require_binary("etcd", ETCD_MISSING)
    server = EtcdServer(tmp_path / "etcd")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def restartable_nats(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server of this test only (it may stop and start it), stopped by PID at the end."""
    require_binary("nats-server", NATS_MISSING)
    server = NatsServer(tmp_path / "nats")
    server.start()
    yield server
    server.stop()


async def wipe_etcd(url: str) -> None:
    """Delete every key of the etcd at ``url``."""
    import aetcd

    host, port = url.removeprefix("http://").rsplit(":", 1)
    async with aetcd.Client(host, int(port), timeout=5) as client:
        await client.delete_range(b"\0", b"\0")
