"""The nats request plane on a real nats-server: the backend-neutral tests of
``test_tcp_request_plane`` (re-run here with nats fixtures), then NATS-specific behaviour:
no responders, instance loss, client loss, flow control, limits."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import pytest

from stator.bench import runtime_bench
from stator.errors import (
    InstanceLostError,
    InvalidRequestError,
    NoInstanceError,
    StreamCancelledError,
    TransportError,
)
from stator.runtime.request_plane.base import RequestContext
from stator.runtime.request_plane.nats import (
    NatsRequestPlaneClient,
    NatsRequestPlaneServer,
    parse_nats_address,
)
from stator.testing.services import free_port
from tests.integration import test_tcp_request_plane as neutral
from tests.integration.test_tcp_request_plane import EP, Probe, collect, count_to, register
from tests.service_fixtures import NATS_MISSING, require_binary

# The backend-neutral tests, collected again in this module with the nats fixtures below.
test_empty_stream_ends_cleanly = neutral.test_empty_stream_ends_cleanly
test_handler_sees_payload_and_request_id = neutral.test_handler_sees_payload_and_request_id
test_client_aclose_cancels_the_handler = neutral.test_client_aclose_cancels_the_handler
test_breaking_out_of_the_loop_cancels_the_handler = (
    neutral.test_breaking_out_of_the_loop_cancels_the_handler
)
test_cancelling_the_consumer_task_cancels_the_handler = (
    neutral.test_cancelling_the_consumer_task_cancels_the_handler
)
test_handler_error_raises_remote_handler_error = (
    neutral.test_handler_error_raises_remote_handler_error
)
test_handler_stator_error_keeps_its_status_code = (
    neutral.test_handler_stator_error_keeps_its_status_code
)
test_handler_yielding_non_bytes_is_a_remote_error = (
    neutral.test_handler_yielding_non_bytes_is_a_remote_error
)
test_unknown_endpoint_raises_no_instance = neutral.test_unknown_endpoint_raises_no_instance
test_unregistered_endpoint_refuses_new_requests = (
    neutral.test_unregistered_endpoint_refuses_new_requests
)
test_chunk_timeout_raises_and_cancels_the_handler = (
    neutral.test_chunk_timeout_raises_and_cancels_the_handler
)


@pytest.fixture
async def server(nats_url: str) -> AsyncIterator[NatsRequestPlaneServer]:
    srv = NatsRequestPlaneServer(nats_url)
    srv.register(EP, count_to)
    await srv.start()
    yield srv
    await srv.stop(drain_timeout_s=0.5)


@pytest.fixture
async def client(nats_url: str) -> AsyncIterator[NatsRequestPlaneClient]:
    cli = NatsRequestPlaneClient(nats_url)
    yield cli
    await cli.close()


async def until(condition: object, timeout_s: float = 3.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.01)


async def test_stream_returns_every_chunk_in_order(
    server: NatsRequestPlaneServer, client: NatsRequestPlaneClient
) -> None:
    address = server.transport_address
    chunks = await collect(client.stream(address, EP, b"3000", request_id="r"))
    assert chunks == [str(i).encode() for i in range(3000)]
    assert address.startswith("nats://127.0.0.1:")
    assert parse_nats_address(address).startswith("stator.rp.")


async def test_many_concurrent_streams(
    server: NatsRequestPlaneServer, client: NatsRequestPlaneClient
) -> None:
    counts = [1 + (i * 37) % 500 for i in range(50)]
    results = await asyncio.gather(
        *(
            collect(client.stream(server.transport_address, EP, b"%d" % n, request_id=f"r{i}"))
            for i, n in enumerate(counts)
        )
    )
    assert [len(r) for r in results] == counts
    assert all(r == [str(i).encode() for i in range(len(r))] for r in results)
    assert client.num_streams == 0 and server.num_inflight == 0


async def test_stopped_server_has_no_responders(
    nats_url: str, client: NatsRequestPlaneClient
) -> None:
    srv = NatsRequestPlaneServer(nats_url)
    srv.register(EP, count_to)
    await srv.start()
    address = srv.transport_address
    assert len(await collect(client.stream(address, EP, b"2", request_id="r"))) == 2
    await srv.stop()
    start = time.monotonic()
    with pytest.raises(NoInstanceError, match="no responders"):
        await collect(client.stream(address, EP, b"2", request_id="r"))
    assert time.monotonic() - start < 1.0  # NATS answers at once, no timeout involved


async def test_server_stop_mid_stream_raises_stream_cancelled(
    nats_url: str, client: NatsRequestPlaneClient
) -> None:
    srv = NatsRequestPlaneServer(nats_url)
    probe = Probe(delay_s=0.01)
    path = register(srv, probe)
    await srv.start()
    stream = client.stream(srv.transport_address, path, b"", request_id="r")
    await anext(stream)
    stopping = asyncio.create_task(srv.stop(drain_timeout_s=0.1))
    with pytest.raises(StreamCancelledError, match="server stopping"):
        async for _ in stream:
            pass
    await stopping
    assert probe.saw_cancel


async def test_graceful_stop_drains_and_refuses_new_streams(
    nats_url: str, client: NatsRequestPlaneClient
) -> None:
    srv = NatsRequestPlaneServer(nats_url)
    probe = Probe(delay_s=0.01, num_chunks=30)
    path = register(srv, probe)
    await srv.start()
    address = srv.transport_address
    stream = client.stream(address, path, b"", request_id="r")
    first = await anext(stream)
    stopping = asyncio.create_task(srv.stop(drain_timeout_s=10.0))
    await asyncio.sleep(0.02)
    with pytest.raises(NoInstanceError):
        await collect(client.stream(address, path, b"", request_id="late"))
    rest = await collect(stream)
    await stopping
    assert [first, *rest] == [b"%d" % i for i in range(30)]
    assert not probe.saw_cancel


async def test_dead_server_is_an_instance_lost_error_within_two_seconds(
    nats_url: str, client: NatsRequestPlaneClient
) -> None:
    """The server's NATS connection vanishes without a goodbye (as when its process is
    SIGKILLed): the client's liveness probe finds no responders."""
    srv = NatsRequestPlaneServer(nats_url)
    probe = Probe(delay_s=30.0)  # silent after the start: only the probe can tell
    path = register(srv, probe)
    await srv.start()
    stream = client.stream(srv.transport_address, path, b"", request_id="r")
    waiting = asyncio.create_task(collect(stream))
    await asyncio.wait_for(probe.started.wait(), 2.0)
    assert srv._nc is not None
    await srv._nc.close()  # the connection dies; no Cancel or End is ever sent
    died_at = time.monotonic()
    with pytest.raises(InstanceLostError, match="no responders"):
        await asyncio.wait_for(waiting, 5.0)
    assert time.monotonic() - died_at < 2.0  # generous bound: two probe intervals
    await srv.stop(drain_timeout_s=0)


async def test_dead_client_cancels_its_handlers(
    server: NatsRequestPlaneServer, nats_url: str
) -> None:
    cli = NatsRequestPlaneClient(nats_url)
    probe = Probe(num_chunks=1_000_000)  # blocks on credit once the client stops reading
    path = register(server, probe)
    stream = cli.stream(server.transport_address, path, b"", request_id="r")
    await anext(stream)
    assert cli._nc is not None
    await cli._nc.close()  # the client vanishes without cancelling
    await asyncio.wait_for(probe.finished.wait(), 6.0)
    assert probe.saw_cancel
    await until(lambda: server.num_inflight == 0)
    await cli.close()


async def test_slow_consumer_bounds_the_producer(
    server: NatsRequestPlaneServer, nats_url: str
) -> None:
    window = 16
    cli = NatsRequestPlaneClient(nats_url, window=window)
    probe = Probe(num_chunks=100_000)
    path = register(server, probe)
    try:
        slow = cli.stream(server.transport_address, path, b"", request_id="slow")
        for _ in range(5):
            await anext(slow)
            await asyncio.sleep(0.05)
        assert window <= probe.num_produced <= 5 + window + 1
        other = await collect(cli.stream(server.transport_address, EP, b"2000", request_id="o"))
        assert len(other) == 2000  # another stream flows meanwhile
        before = probe.num_produced
        await asyncio.sleep(0.1)
        assert probe.num_produced == before
        for _ in range(3 * window):
            await anext(slow)
        assert probe.num_produced >= 3 * window
        await slow.aclose()
    finally:
        await cli.close()


async def test_too_large_request_is_an_invalid_request(
    server: NatsRequestPlaneServer, client: NatsRequestPlaneClient
) -> None:
    with pytest.raises(InvalidRequestError, match="max_payload"):
        await collect(client.stream(server.transport_address, EP, b"x" * (2 << 20), request_id="r"))


async def test_too_large_chunk_is_a_remote_error(
    server: NatsRequestPlaneServer, client: NatsRequestPlaneClient
) -> None:
    async def huge(payload: bytes, ctx: RequestContext) -> AsyncIterator[bytes]:
        yield b"ok"
        yield b"x" * (2 << 20)

    path = register(server, huge)
    got: list[bytes] = []
    with pytest.raises(Exception, match="max_payload"):
        async for chunk in client.stream(server.transport_address, path, b"", request_id="r"):
            got.append(chunk)
    assert got == [b"ok"]


async def test_client_close_fails_open_streams(
    server: NatsRequestPlaneServer, nats_url: str
) -> None:
    cli = NatsRequestPlaneClient(nats_url)
    probe = Probe(delay_s=0.01)
    path = register(server, probe)
    stream = cli.stream(server.transport_address, path, b"", request_id="r")
    await anext(stream)
    await cli.close()
    with pytest.raises(InstanceLostError):
        await collect(stream)
    await asyncio.wait_for(probe.finished.wait(), 6.0)  # the server notices the client is gone


async def test_unreachable_nats() -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    cli = NatsRequestPlaneClient(url, connect_timeout_s=0.5)
    with pytest.raises(NoInstanceError, match=url):
        await collect(cli.stream(f"{url}#stator.rp.00ff", EP, b"1", request_id="r"))
    await cli.close()
    srv = NatsRequestPlaneServer(url, connect_timeout_s=0.5)
    with pytest.raises(TransportError, match="NATS is unreachable"):
        await srv.start()


async def test_bad_transport_address_is_no_instance(client: NatsRequestPlaneClient) -> None:
    with pytest.raises(NoInstanceError, match="expected nats://"):
        await collect(client.stream("tcp://127.0.0.1:1", EP, b"1", request_id="r"))


@pytest.mark.parametrize("own_server", [True, False])
def test_runtime_bench_on_nats_prints_one_json_object(
    capsys: pytest.CaptureFixture[str], request: pytest.FixtureRequest, own_server: bool
) -> None:
    """With ``--nats-server`` the bench uses that server; without, it starts one for the run."""
    argv = ["--json", "--request-plane", "nats", "--num-requests", "20", "--warmup", "5"]
    argv += ["--stream-chunks", "300", "--stream-repeats", "1"]
    if own_server:
        argv += ["--nats-server", request.getfixturevalue("nats_url")]
    else:
        require_binary("nats-server", NATS_MISSING)
    assert runtime_bench.main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["request_plane"] == "nats"
    assert 0 < result["rtt_p50_us"] <= result["rtt_p99_us"]
    assert result["stream_chunks_per_s"] > 0
