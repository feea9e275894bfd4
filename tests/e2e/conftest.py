"""E2e fixtures: real etcd and NATS servers for the scale-out backends."""

from tests.service_fixtures import (  # noqa: F401  (fixtures)
    etcd_server,
    etcd_url,
    nats_server,
    nats_url,
    restartable_etcd,
    restartable_nats,
)
