"""The tcp request plane over loopback: a real server and client in one process."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable

import pytest

from stator.bench import runtime_bench
from stator.errors import (
    ContextLengthError,
    InstanceLostError,
    NoInstanceError,
    RemoteHandlerError,
    RequestTimeoutError,
    StreamCancelledError,
)
from stator.runtime.request_plane.base import RequestContext
from stator.runtime.request_plane.tcp import TcpRequestPlaneClient, TcpRequestPlaneServer

EP = "dynamo/backend/generate"


async def count_to(payload: bytes, ctx: RequestContext) -> AsyncIterator[bytes]:
    """Yields ``b"0"``, ``b"1"`` ... up to the count given in the payload."""
    for i in range(int(payload)):
        yield str(i).encode()


class Probe:
    """A handler that records how far it got and how it ended."""

    def __init__(self, *, delay_s: float = 0.0, num_chunks: int = 100_000) -> None:
        self.delay_s = delay_s
        self.num_chunks = num_chunks
        self.num_produced = 0
        self.started = asyncio.Event()
        self.finished = asyncio.Event()
        self.ctx: RequestContext | None = None
        self.saw_cancel = False

    async def __call__(self, payload: bytes, ctx: RequestContext) -> AsyncIterator[bytes]:
        self.ctx = ctx
        self.started.set()
        try:
            for i in range(self.num_chunks):
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                self.num_produced += 1
                yield b"%d" % i
        except (asyncio.CancelledError, GeneratorExit):
            self.saw_cancel = True
            raise
        finally:
            self.finished.set()


@pytest.fixture
async def server() -> AsyncIterator[TcpRequestPlaneServer]:
    srv = TcpRequestPlaneServer()
    srv.register(EP, count_to)
    await srv.start()
    yield srv
    await srv.stop(drain_timeout_s=0.5)


@pytest.fixture
async def client() -> AsyncIterator[TcpRequestPlaneClient]:
    cli = TcpRequestPlaneClient()
    yield cli
    await cli.close()


async def collect(stream: AsyncIterator[bytes]) -> list[bytes]:
    return [chunk async for chunk in stream]


def register(server: TcpRequestPlaneServer, handler: Callable[..., AsyncIterator[bytes]]) -> str:
    path = f"ns/comp/ep{id(handler)}"
    server.register(path, handler)
    return path


async def test_stream_returns_every_chunk_in_order(
    server: TcpRequestPlaneServer, client: TcpRequestPlaneClient
) -> None:
    chunks = await collect(client.stream(server.transport_address, EP, b"1000", request_id="r"))
    assert chunks == [str(i).encode() for i in range(1000)]
    assert server.transport_address.startswith("tcp://127.0.0.1:")


async def test_empty_stream_ends_cleanly(
    server: TcpRequestPlaneServer, client: TcpRequestPlaneClient
) -> None:
    assert await collect(client.stream(server.transport_address, EP, b"0", request_id="r")) == []


async def test_handler_sees_payload_and_request_id(
    server: TcpRequestPlaneServer, client: TcpRequestPlaneClient
) -> None:
    async def echo(payload: bytes, ctx: RequestContext) -> AsyncIterator[bytes]:
        yield payload
        yield ctx.request_id.encode()

    path = register(server, echo)
    payload = bytes(range(256)) * 1000
    got = await collect(client.stream(server.transport_address, path, payload, request_id="id-7"))
    assert got == [payload, b"id-7"]


async def test_many_concurrent_streams_share_one_connection(
    server: TcpRequestPlaneServer, client: TcpRequestPlaneClient
) -> None:
    counts = [1 + (i * 37) % 500 for i in range(100)]
    results = await asyncio.gather(
        *(
            collect(client.stream(server.transport_address, EP, b"%d" % n, request_id=f"r{i}"))
            for i, n in enumerate(counts)
        )
    )
    assert [len(r) for r in results] == counts
    assert all(r == [str(i).encode() for i in range(len(r))] for r in results)
    assert client.num_connections == 1
    assert server.num_connections == 1


async def test_client_aclose_cancels_the_handler(
    server: TcpRequestPlaneServer, client: TcpRequestPlaneClient
) -> None:
    probe = Probe(delay_s=0.01)
    path = register(server, probe)
    stream = client.stream(server.transport_address, path, b"", request_id="r")
    got = [await anext(stream) for _ in range(3)]
    await stream.aclose()
    await asyncio.wait_for(probe.finished.wait(), 2.0)
    assert got == [b"0", b"1", b"2"]
    assert probe.saw_cancel
    assert probe.ctx is not None and probe.ctx.is_stopped()
    await _until(lambda: server.num_inflight == 0)


async def test_breaking_out_of_the_loop_cancels_the_handler(
    server: TcpRequestPlaneServer, client: TcpRequestPlaneClient
) -> None:
    """A consumer that just stops iterating (no ``aclose``) still cancels the handler once the
    generator is finalized."""
    probe = Probe(delay_s=0.01)
    path = register(server, probe)
    async for _ in client.stream(server.transport_address, path, b"", request_id="r"):
        break
    await asyncio.wait_for(probe.finished.wait(), 2.0)
    assert probe.saw_cancel


async def test_cancelling_the_consumer_task_cancels_the_handler(
    server: TcpRequestPlaneServer, client: TcpRequestPlaneClient
) -> None:
    probe = Probe(delay_s=0.01)
    path = register(server, probe)

    async def consume() -> None:
        async for _ in client.stream(server.transport_address, path, b"", request_id="r"):
            pass

    task = asyncio.create_task(consume())
    await asyncio.wait_for(probe.started.wait(), 2.0)
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(probe.finished.wait(), 2.0)
    assert probe.saw_cancel
    await _until(lambda: server.num_inflight == 0)


async def test_server_stop_mid_stream_raises_stream_cancelled(
    client: TcpRequestPlaneClient,
) -> None:
    srv = TcpRequestPlaneServer()
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


async def test_graceful_stop_drains_in_flight_streams(client: TcpRequestPlaneClient) -> None:
    srv = TcpRequestPlaneServer()
    probe = Probe(delay_s=0.01, num_chunks=30)
    path = register(srv, probe)
    await srv.start()
    address = srv.transport_address
    stream = client.stream(address, path, b"", request_id="r")
    first = await anext(stream)
    stopping = asyncio.create_task(srv.stop(drain_timeout_s=10.0))
    await asyncio.sleep(0.02)
    with pytest.raises(NoInstanceError):  # refused while draining
        await collect(client.stream(address, path, b"", request_id="late"))
    rest = await collect(stream)
    await stopping
    assert [first, *rest] == [b"%d" % i for i in range(30)]
    assert not probe.saw_cancel
    assert srv.num_inflight == 0


async def test_handler_error_raises_remote_handler_error(
    server: TcpRequestPlaneServer, client: TcpRequestPlaneClient
) -> None:
    async def failing(payload: bytes, ctx: RequestContext) -> AsyncIterator[bytes]:
        yield b"before"
        raise KeyError("no such thing")

    path = register(server, failing)
    got: list[bytes] = []
    with pytest.raises(RemoteHandlerError, match="no such thing") as info:
        async for chunk in client.stream(server.transport_address, path, b"", request_id="r"):
            got.append(chunk)
    assert got == [b"before"]
    assert info.value.remote_type == "KeyError"
    assert info.value.status_code == 500


async def test_handler_stator_error_keeps_its_status_code(
    server: TcpRequestPlaneServer, client: TcpRequestPlaneClient
) -> None:
    async def too_long(payload: bytes, ctx: RequestContext) -> AsyncIterator[bytes]:
        raise ContextLengthError("prompt of 9000 tokens exceeds 8192")
        yield b""

    path = register(server, too_long)
    with pytest.raises(RemoteHandlerError, match="exceeds 8192") as info:
        await collect(client.stream(server.transport_address, path, b"", request_id="r"))
    assert info.value.remote_type == "ContextLengthError"
    assert info.value.status_code == 400


async def test_handler_yielding_non_bytes_is_a_remote_error(
    server: TcpRequestPlaneServer, client: TcpRequestPlaneClient
) -> None:
    async def wrong(payload: bytes, ctx: RequestContext) -> AsyncIterator[bytes]:
        yield "text"  # type: ignore[misc]

    path = register(server, wrong)
    with pytest.raises(RemoteHandlerError) as info:
        await collect(client.stream(server.transport_address, path, b"", request_id="r"))
    assert info.value.remote_type == "TypeError"
    # the connection survived the bad handler
    again = await collect(client.stream(server.transport_address, EP, b"3", request_id="r"))
    assert len(again) == 3


async def test_unknown_endpoint_raises_no_instance(
    server: TcpRequestPlaneServer, client: TcpRequestPlaneClient
) -> None:
    with pytest.raises(NoInstanceError, match="ns/comp/missing"):
        await collect(
            client.stream(server.transport_address, "ns/comp/missing", b"", request_id="r")
        )


async def test_unregistered_endpoint_refuses_new_requests(
    server: TcpRequestPlaneServer, client: TcpRequestPlaneClient
) -> None:
    server.unregister(EP)
    with pytest.raises(NoInstanceError):
        await collect(client.stream(server.transport_address, EP, b"1", request_id="r"))


async def test_connect_refused_raises_no_instance(client: TcpRequestPlaneClient) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(NoInstanceError, match="cannot connect"):
        await collect(client.stream(f"tcp://127.0.0.1:{port}", EP, b"1", request_id="r"))


async def test_chunk_timeout_raises_and_cancels_the_handler(
    server: TcpRequestPlaneServer, client: TcpRequestPlaneClient
) -> None:
    probe = Probe(delay_s=30.0)
    path = register(server, probe)
    with pytest.raises(RequestTimeoutError):
        await collect(
            client.stream(server.transport_address, path, b"", request_id="r", timeout_s=0.2)
        )
    await asyncio.wait_for(probe.finished.wait(), 2.0)
    assert probe.saw_cancel


async def test_connection_drop_mid_stream_raises_instance_lost(
    client: TcpRequestPlaneClient,
) -> None:
    """A server that vanishes (here: a raw socket server that resets the connection once the
    request arrives) fails the stream with ``InstanceLostError`` promptly."""

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        writer.transport.abort()

    raw = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = raw.sockets[0].getsockname()[1]
    try:
        with pytest.raises(InstanceLostError):
            await asyncio.wait_for(
                collect(client.stream(f"tcp://127.0.0.1:{port}", EP, b"1", request_id="r")), 1.0
            )
        assert client.num_connections == 0
    finally:
        raw.close()
        await raw.wait_closed()


async def test_client_close_fails_open_streams(
    server: TcpRequestPlaneServer,
) -> None:
    cli = TcpRequestPlaneClient()
    probe = Probe(delay_s=0.01)
    path = register(server, probe)
    stream = cli.stream(server.transport_address, path, b"", request_id="r")
    await anext(stream)
    await cli.close()
    with pytest.raises(InstanceLostError):
        await collect(stream)
    await asyncio.wait_for(probe.finished.wait(), 2.0)


async def test_slow_consumer_suspends_producer_without_blocking_other_streams(
    server: TcpRequestPlaneServer,
) -> None:
    window = 16
    cli = TcpRequestPlaneClient(window=window)
    probe = Probe(num_chunks=100_000)
    path = register(server, probe)
    try:
        slow = cli.stream(server.transport_address, path, b"", request_id="slow")
        num_read = 0
        for _ in range(5):
            await anext(slow)
            num_read += 1
            await asyncio.sleep(0.05)  # slow consumer
        # the producer ran at most one window ahead of what was read
        assert window <= probe.num_produced <= num_read + window + 1
        # another stream on the same connection flows freely meanwhile
        other = await collect(cli.stream(server.transport_address, EP, b"5000", request_id="o"))
        assert len(other) == 5000
        assert cli.num_connections == 1
        produced_before = probe.num_produced
        await asyncio.sleep(0.1)
        assert probe.num_produced == produced_before  # still suspended
        # reading on resumes the producer
        for _ in range(3 * window):
            await anext(slow)
        assert probe.num_produced >= 3 * window
        await slow.aclose()
    finally:
        await cli.close()


async def test_unread_socket_suspends_producer_even_with_a_large_window(
    server: TcpRequestPlaneServer,
) -> None:
    """Credit counts chunks; big chunks are bounded by the transport's write buffer too: when the
    client stops reading its socket, the handler stops after the kernel buffers fill."""
    cli = TcpRequestPlaneClient(window=10_000)
    big = b"x" * (1 << 20)
    num_chunks = 200
    produced = 0

    async def big_chunks(payload: bytes, ctx: RequestContext) -> AsyncIterator[bytes]:
        nonlocal produced
        for _ in range(num_chunks):
            produced += 1
            yield big

    path = register(server, big_chunks)
    try:
        stream = cli.stream(server.transport_address, path, b"", request_id="r")
        await anext(stream)
        (conn,) = cli._connections.values()
        assert conn._transport is not None
        conn._transport.pause_reading()
        await asyncio.sleep(0.3)
        assert produced < num_chunks // 2  # kernel buffers hold a few MiB, not 200
        conn._transport.resume_reading()
        assert len(await collect(stream)) == num_chunks - 1
    finally:
        await cli.close()


def test_runtime_bench_prints_one_json_object(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--json", "--num-requests", "20", "--warmup", "5", "--stream-chunks", "300"]
    assert runtime_bench.main([*argv, "--stream-repeats", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["rtt_p50_us"] > 0
    assert result["rtt_p99_us"] >= result["rtt_p50_us"]
    assert result["stream_chunks_per_s"] > 0
    assert result["stream_chunks"] == 300


async def _until(condition: Callable[[], bool], timeout_s: float = 2.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)
