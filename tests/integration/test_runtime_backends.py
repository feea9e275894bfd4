"""``DistributedRuntime`` on the scale-out backends: the backend-neutral tests of
``test_runtime`` re-run with etcd discovery and/or the nats request and event planes (real
etcd and nats-server), plus mixes with the embedded backends."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from stator.runtime.config import RuntimeConfig
from stator.runtime.discovery.etcd import EtcdDiscovery
from stator.runtime.discovery.mem import MemStore
from stator.runtime.runtime import DistributedRuntime
from stator.testing.services import EtcdServer
from tests.integration import test_runtime as neutral
from tests.integration.test_runtime import ADDRESS, MakeRuntime, Req, Resp, collect, echo_handler
from tests.service_fixtures import wipe_etcd

# The backend-neutral tests, collected again in this module with the fixture below.
test_untyped_request_and_response = neutral.test_untyped_request_and_response
test_round_robin_alternates_between_two_instances = (
    neutral.test_round_robin_alternates_between_two_instances
)
test_direct_routes_to_the_given_instance = neutral.test_direct_routes_to_the_given_instance
test_removed_instance_leaves_the_selection = neutral.test_removed_instance_leaves_the_selection
test_no_instance_errors = neutral.test_no_instance_errors
test_wait_for_instances_sees_a_late_server = neutral.test_wait_for_instances_sees_a_late_server
test_handler_errors_propagate_typed = neutral.test_handler_errors_propagate_typed
test_undecodable_request_is_a_400 = neutral.test_undecodable_request_is_a_400
test_per_chunk_timeout = neutral.test_per_chunk_timeout
test_client_close_cancels_the_handler = neutral.test_client_close_cancels_the_handler
test_model_card_is_registered_and_removed = neutral.test_model_card_is_registered_and_removed
test_serving_the_same_endpoint_twice_is_an_error = (
    neutral.test_serving_the_same_endpoint_twice_is_an_error
)
test_graceful_shutdown_drains_then_deregisters = (
    neutral.test_graceful_shutdown_drains_then_deregisters
)
test_shutdown_cancels_streams_past_the_drain_timeout = (
    neutral.test_shutdown_cancels_streams_past_the_drain_timeout
)
test_events_through_the_runtime = neutral.test_events_through_the_runtime

BACKENDS = {
    "etcd+tcp+zmq": ("etcd", "tcp", "zmq"),
    "mem+nats+nats": ("mem", "nats", "nats"),
    "etcd+nats+nats": ("etcd", "nats", "nats"),
    "file+nats+zmq": ("file", "nats", "zmq"),
}


@pytest.fixture(params=list(BACKENDS))
def backends(request: pytest.FixtureRequest) -> tuple[str, str, str]:
    """``(discovery, request plane, event plane)``."""
    return BACKENDS[request.param]


@pytest.fixture
async def make_runtime(
    backends: tuple[str, str, str], request: pytest.FixtureRequest
) -> AsyncIterator[MakeRuntime]:
    """Runtimes on the chosen backends, each playing one process; all shut down at the end."""
    discovery, plane, events = backends
    settings: dict[str, object] = {
        "discovery_backend": discovery,
        "request_plane": plane,
        "event_plane": events,
    }
    if discovery == "file":
        settings["discovery_dir"] = str(request.getfixturevalue("tmp_path") / "discovery")
    if discovery == "etcd":
        etcd: EtcdServer = request.getfixturevalue("etcd_server")
        await wipe_etcd(etcd.url)
        settings["etcd_endpoints"] = (etcd.url,)
    if "nats" in (plane, events):
        settings["nats_server"] = request.getfixturevalue("nats_url")
    store = MemStore()
    made: list[DistributedRuntime] = []

    async def make(**overrides: object) -> DistributedRuntime:
        config = RuntimeConfig(**{**settings, **overrides})  # type: ignore[arg-type]
        rt = await DistributedRuntime.create(config, mem_store=store)
        made.append(rt)
        return rt

    yield make
    for rt in made:
        await rt.shutdown(drain_timeout_s=1.0)


async def test_serve_and_stream_over_the_chosen_plane(
    make_runtime: MakeRuntime, backends: tuple[str, str, str]
) -> None:
    server, caller = await make_runtime(), await make_runtime()
    await server.endpoint(ADDRESS).serve(echo_handler(server), request_type=Req)
    client = await caller.endpoint(ADDRESS).client()
    assert await client.wait_for_instances(3.0) == [server.instance_id]
    chunks = await collect(client.generate(Req("hi", 3), response_type=Resp))
    assert chunks == [Resp(i, f"hi-{i}", server.instance_id) for i in range(3)]
    [info] = client.instances()
    discovery, plane, _ = backends
    assert info.transport == plane
    assert info.address.startswith("tcp://" if plane == "tcp" else "nats://")
    assert isinstance(server.discovery, EtcdDiscovery) == (discovery == "etcd")
