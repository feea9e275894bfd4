"""DistributedRuntime over loopback in one process (mem discovery, tcp request plane)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import msgspec
import pytest

from stator.errors import (
    ConfigError,
    InstanceLostError,
    InvalidRequestError,
    NoInstanceError,
    RemoteHandlerError,
    RequestTimeoutError,
)
from stator.protocols.model_card import ModelCard
from stator.runtime.config import RuntimeConfig
from stator.runtime.discovery import keys
from stator.runtime.discovery.mem import MemStore
from stator.runtime.instance import decode_instance, decode_model_card
from stator.runtime.request_plane.base import RequestContext
from stator.runtime.runtime import DistributedRuntime

ADDRESS = "dyn://test.worker.generate"


class Req(msgspec.Struct):
    prompt: str
    n: int


class Resp(msgspec.Struct):
    index: int
    text: str
    instance_id: int


MakeRuntime = Callable[..., Awaitable[DistributedRuntime]]


@pytest.fixture
async def make_runtime() -> AsyncIterator[MakeRuntime]:
    """Runtimes over one MemStore, each playing one process; all shut down at the end."""
    store = MemStore()
    made: list[DistributedRuntime] = []

    async def make(**overrides: object) -> DistributedRuntime:
        config = RuntimeConfig(discovery_backend="mem", **overrides)  # type: ignore[arg-type]
        rt = await DistributedRuntime.create(config, mem_store=store)
        made.append(rt)
        return rt

    yield make
    for rt in made:
        await rt.shutdown(drain_timeout_s=1.0)


def echo_handler(rt: DistributedRuntime) -> Callable[[Req, RequestContext], AsyncIterator[Resp]]:
    async def handler(req: Req, ctx: RequestContext) -> AsyncIterator[Resp]:
        for i in range(req.n):
            yield Resp(index=i, text=f"{req.prompt}-{i}", instance_id=rt.instance_id)

    return handler


async def collect(stream: AsyncIterator[Resp]) -> list[Resp]:
    return [chunk async for chunk in stream]


async def wait_until(cond: Callable[[], bool], timeout_s: float = 3.0) -> None:
    async def poll() -> None:
        while not cond():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout_s)


async def test_serve_and_stream_typed_structs(make_runtime: MakeRuntime) -> None:
    server, caller = await make_runtime(), await make_runtime()
    await server.endpoint(ADDRESS).serve(
        echo_handler(server), request_type=Req, metadata={"role": "agg"}
    )
    client = await caller.endpoint("test.worker.generate").client()
    assert client.instance_ids() == [server.instance_id]
    chunks = await collect(client.generate(Req("hi", 3), response_type=Resp))
    assert chunks == [Resp(i, f"hi-{i}", server.instance_id) for i in range(3)]
    [info] = client.instances()
    assert info.metadata == {"role": "agg"}
    assert info.address.startswith("tcp://127.0.0.1:")


async def test_untyped_request_and_response(make_runtime: MakeRuntime) -> None:
    server, caller = await make_runtime(), await make_runtime()

    async def handler(req: dict[str, int], ctx: RequestContext) -> AsyncIterator[object]:
        yield {"sum": req["a"] + req["b"], "id": ctx.request_id}
        yield [1, 2]
        yield b"raw"

    await server.endpoint(ADDRESS).serve(handler)
    client = await caller.endpoint(ADDRESS).client()
    out = [c async for c in client.generate({"a": 1, "b": 2}, request_id="r-1")]
    assert out == [{"sum": 3, "id": "r-1"}, [1, 2], b"raw"]


async def test_round_robin_alternates_between_two_instances(make_runtime: MakeRuntime) -> None:
    a, b, caller = await make_runtime(), await make_runtime(), await make_runtime()
    for rt in (a, b):
        await rt.endpoint(ADDRESS).serve(echo_handler(rt), request_type=Req)
    client = await caller.endpoint(ADDRESS).client()
    await wait_until(lambda: len(client.instance_ids()) == 2)
    served_by = []
    for _ in range(4):
        [chunk] = await collect(client.generate(Req("x", 1), response_type=Resp))
        served_by.append(chunk.instance_id)
    assert sorted(served_by) == sorted([a.instance_id, b.instance_id] * 2)
    assert served_by[0] != served_by[1] and served_by[:2] == served_by[2:]
    for _ in range(4):
        [chunk] = await collect(client.random(Req("x", 1), Resp))
        assert chunk.instance_id in (a.instance_id, b.instance_id)


async def test_direct_routes_to_the_given_instance(make_runtime: MakeRuntime) -> None:
    a, b, caller = await make_runtime(), await make_runtime(), await make_runtime()
    for rt in (a, b):
        await rt.endpoint(ADDRESS).serve(echo_handler(rt), request_type=Req)
    client = await caller.endpoint(ADDRESS).client()
    await wait_until(lambda: len(client.instance_ids()) == 2)
    for _ in range(3):
        [chunk] = await collect(client.direct(Req("x", 1), b.instance_id, Resp))
        assert chunk.instance_id == b.instance_id
    [chunk] = await collect(client.generate(Req("x", 1), Resp, instance_id=a.instance_id))
    assert chunk.instance_id == a.instance_id
    with pytest.raises(NoInstanceError, match="not live"):
        await collect(client.direct(Req("x", 1), 12345, Resp))


async def test_removed_instance_leaves_the_selection(make_runtime: MakeRuntime) -> None:
    a, b, caller = await make_runtime(), await make_runtime(), await make_runtime()
    served_a = await a.endpoint(ADDRESS).serve(echo_handler(a), request_type=Req)
    await b.endpoint(ADDRESS).serve(echo_handler(b), request_type=Req)
    client = await caller.endpoint(ADDRESS).client()
    await wait_until(lambda: len(client.instance_ids()) == 2)
    changes: list[tuple[list[int], list[int]]] = []
    client.on_change(lambda added, removed: changes.append((added, removed)))
    await served_a.stop()
    await wait_until(lambda: client.instance_ids() == [b.instance_id])
    assert changes == [([], [a.instance_id])]
    for _ in range(3):
        [chunk] = await collect(client.generate(Req("x", 1), Resp))
        assert chunk.instance_id == b.instance_id
    with pytest.raises(NoInstanceError):
        await collect(client.direct(Req("x", 1), a.instance_id, Resp))


async def test_unreachable_instance_is_skipped_until_it_reregisters(
    make_runtime: MakeRuntime,
) -> None:
    a, b, caller = await make_runtime(), await make_runtime(), await make_runtime()
    await a.endpoint(ADDRESS).serve(echo_handler(a), request_type=Req)
    await b.endpoint(ADDRESS).serve(echo_handler(b), request_type=Req)
    client = await caller.endpoint(ADDRESS).client()
    await wait_until(lambda: len(client.instance_ids()) == 2)
    assert a._server is not None
    await a._server.stop(drain_timeout_s=0)  # a is unreachable but still registered
    failures = 0
    for _ in range(4):
        try:
            [chunk] = await collect(client.generate(Req("x", 1), Resp))
            assert chunk.instance_id == b.instance_id
        except (NoInstanceError, InstanceLostError):
            failures += 1
    assert failures == 1  # one failed attempt, then a is skipped
    assert client.instance_ids() == sorted([a.instance_id, b.instance_id])
    assert client.instance_ids_avail() == [b.instance_id]
    # registering a again (a new PUT of its key) makes it selectable again
    key = keys.instance_key(client.address, a.instance_id)
    record = await a.discovery.get(key)
    assert record is not None
    await a.discovery.put(key, record)
    await wait_until(lambda: len(client.instance_ids_avail()) == 2)


async def test_no_instance_errors(make_runtime: MakeRuntime) -> None:
    caller = await make_runtime()
    client = await caller.endpoint(ADDRESS).client()
    assert client.instance_ids() == []
    with pytest.raises(NoInstanceError):
        await collect(client.generate(Req("x", 1), Resp))
    with pytest.raises(NoInstanceError, match=r"within 0\.1 s"):
        await client.wait_for_instances(timeout_s=0.1)


async def test_wait_for_instances_sees_a_late_server(make_runtime: MakeRuntime) -> None:
    server, caller = await make_runtime(), await make_runtime()
    client = await caller.endpoint(ADDRESS).client()
    waiter = asyncio.create_task(client.wait_for_instances(timeout_s=5.0))
    await asyncio.sleep(0.05)
    await server.endpoint(ADDRESS).serve(echo_handler(server), request_type=Req)
    assert await waiter == [server.instance_id]


async def test_handler_errors_propagate_typed(make_runtime: MakeRuntime) -> None:
    server, caller = await make_runtime(), await make_runtime()

    async def handler(req: Req, ctx: RequestContext) -> AsyncIterator[Resp]:
        yield Resp(0, "first", 0)
        if req.prompt == "bad":
            raise InvalidRequestError("prompt may not be 'bad'", param="prompt")
        raise RuntimeError("engine exploded")

    await server.endpoint(ADDRESS).serve(handler, request_type=Req)
    client = await caller.endpoint(ADDRESS).client()
    got: list[Resp] = []
    with pytest.raises(RemoteHandlerError) as info:
        async for chunk in client.generate(Req("bad", 1), Resp):
            got.append(chunk)
    assert got == [Resp(0, "first", 0)]
    assert info.value.remote_type == "InvalidRequestError"
    assert info.value.status_code == 400
    assert "may not be 'bad'" in str(info.value)
    with pytest.raises(RemoteHandlerError) as info:
        await collect(client.generate(Req("ok", 1), Resp))
    assert (info.value.remote_type, info.value.status_code) == ("RuntimeError", 500)
    assert "engine exploded" in str(info.value)


async def test_undecodable_request_is_a_400(make_runtime: MakeRuntime) -> None:
    server, caller = await make_runtime(), await make_runtime()
    await server.endpoint(ADDRESS).serve(echo_handler(server), request_type=Req)
    client = await caller.endpoint(ADDRESS).client()
    with pytest.raises(RemoteHandlerError) as info:
        await collect(client.generate({"prompt": 5}, Resp))
    assert info.value.status_code == 400
    assert "prompt" in str(info.value)
    with pytest.raises(InvalidRequestError):
        await collect(client.generate(object(), Resp))


async def test_per_chunk_timeout(make_runtime: MakeRuntime) -> None:
    server, caller = await make_runtime(), await make_runtime()

    async def stalls(req: Req, ctx: RequestContext) -> AsyncIterator[Resp]:
        yield Resp(0, "one", 0)
        await asyncio.Event().wait()
        yield Resp(1, "never", 0)

    await server.endpoint(ADDRESS).serve(stalls, request_type=Req)
    client = await caller.endpoint(ADDRESS).client()
    stream = client.generate(Req("x", 1), Resp, timeout_s=0.2)
    assert (await anext(stream)).text == "one"
    with pytest.raises(RequestTimeoutError):
        await anext(stream)


async def test_client_close_cancels_the_handler(make_runtime: MakeRuntime) -> None:
    server, caller = await make_runtime(), await make_runtime()
    cancelled = asyncio.Event()

    async def endless(req: Req, ctx: RequestContext) -> AsyncIterator[Resp]:
        try:
            i = 0
            while True:
                yield Resp(i, "tick", 0)
                i += 1
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    await server.endpoint(ADDRESS).serve(endless, request_type=Req)
    client = await caller.endpoint(ADDRESS).client()
    stream = client.generate(Req("x", 1), Resp)
    assert (await anext(stream)).index == 0
    await stream.aclose()  # type: ignore[attr-defined]
    await asyncio.wait_for(cancelled.wait(), 3.0)
    await wait_until(lambda: server._server is not None and server._server.num_inflight == 0)


async def test_model_card_is_registered_and_removed(make_runtime: MakeRuntime) -> None:
    server = await make_runtime()
    card = ModelCard(
        name="Qwen/Qwen2.5-7B", tokenizer_path="tok", kv_cache_block_size=16, context_length=4096
    )
    served = await server.endpoint(ADDRESS).serve(
        echo_handler(server), request_type=Req, model_card=card
    )
    address = served.address
    mdc = await server.discovery.get(keys.model_card_key(address, server.instance_id))
    assert mdc is not None and decode_model_card(mdc) == card
    record = await server.discovery.get(keys.instance_key(address, server.instance_id))
    assert record is not None and decode_instance(record).instance_id == server.instance_id
    await served.stop()
    assert await server.discovery.get_prefix(keys.model_cards_prefix()) == []
    assert await server.discovery.get_prefix(keys.instances_prefix(address)) == []


async def test_serving_the_same_endpoint_twice_is_an_error(make_runtime: MakeRuntime) -> None:
    server = await make_runtime()
    await server.endpoint(ADDRESS).serve(echo_handler(server), request_type=Req)
    with pytest.raises(Exception, match="already served"):
        await server.endpoint(ADDRESS).serve(echo_handler(server), request_type=Req)


async def test_graceful_shutdown_drains_then_deregisters(make_runtime: MakeRuntime) -> None:
    server, caller = await make_runtime(), await make_runtime()
    release = asyncio.Event()

    async def slow(req: Req, ctx: RequestContext) -> AsyncIterator[Resp]:
        yield Resp(0, "before", server.instance_id)
        await release.wait()
        for i in range(1, req.n):
            yield Resp(i, "after", server.instance_id)

    await server.endpoint(ADDRESS).serve(slow, request_type=Req)
    client = await caller.endpoint(ADDRESS).client()
    stream = client.generate(Req("x", 5), Resp)
    assert (await anext(stream)).index == 0
    shutdown = asyncio.create_task(server.shutdown(drain_timeout_s=10.0))
    # Deregistered first: callers stop picking this instance while it drains.
    await wait_until(lambda: client.instance_ids() == [])
    assert not shutdown.done()
    release.set()
    rest = await collect(stream)
    assert [c.index for c in rest] == [1, 2, 3, 4]
    await asyncio.wait_for(shutdown, 5.0)
    assert await caller.discovery.get_prefix("v1/") == []


async def test_shutdown_cancels_streams_past_the_drain_timeout(make_runtime: MakeRuntime) -> None:
    server, caller = await make_runtime(), await make_runtime()

    async def forever(req: Req, ctx: RequestContext) -> AsyncIterator[Resp]:
        yield Resp(0, "x", 0)
        await asyncio.Event().wait()
        yield Resp(1, "never", 0)

    await server.endpoint(ADDRESS).serve(forever, request_type=Req)
    client = await caller.endpoint(ADDRESS).client()
    stream = client.generate(Req("x", 1), Resp)
    await anext(stream)
    await asyncio.wait_for(server.shutdown(drain_timeout_s=0.2), 5.0)
    with pytest.raises(Exception) as info:
        await anext(stream)
    assert type(info.value).__name__ in ("StreamCancelledError", "InstanceLostError")


async def test_events_through_the_runtime(make_runtime: MakeRuntime) -> None:
    pub_rt, sub_rt = await make_runtime(), await make_runtime()
    sub = await sub_rt.event_subscriber("test", "worker", "kv-events")
    pub = await pub_rt.event_publisher("test", "worker", "kv-events")
    received: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()

    async def consume() -> None:
        async for item in sub:
            received.put_nowait(item)

    consumer = asyncio.create_task(consume())
    for _ in range(100):  # ZMQ slow joiner: publish until the subscription is through
        await pub.publish(b"hello")
        await asyncio.sleep(0.05)
        if not received.empty():
            break
    consumer.cancel()
    got = received.get_nowait()
    assert got == (pub_rt.instance_id, b"hello")


async def test_file_discovery_runtime_in_one_process(tmp_path: Path) -> None:
    config = RuntimeConfig(discovery_backend="file", discovery_dir=str(tmp_path), lease_ttl_s=2.0)
    server = await DistributedRuntime.create(config)
    caller = await DistributedRuntime.create(config)
    try:
        await server.endpoint(ADDRESS).serve(echo_handler(server), request_type=Req)
        client = await caller.endpoint(ADDRESS).client()
        assert await client.wait_for_instances(2.0) == [server.instance_id]
        chunks = await collect(client.generate(Req("f", 2), Resp))
        assert [c.text for c in chunks] == ["f-0", "f-1"]
        await server.shutdown(drain_timeout_s=1.0)
        await wait_until(lambda: client.instance_ids() == [])
    finally:
        await server.shutdown()
        await caller.shutdown()


@pytest.mark.parametrize(
    ("field", "flag"),
    [
        ("discovery_backend", "--discovery-backend"),
        ("request_plane", "--request-plane"),
        ("event_plane", "--event-plane"),
    ],
)
async def test_unavailable_backends_are_config_errors(
    field: str, flag: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stator.runtime import factory

    value = "etcd" if field == "discovery_backend" else "nats"
    module = {"discovery_backend": "discovery.etcd", "request_plane": "request_plane.nats"}
    # a build without the optional backend (its client library missing): importing it fails
    monkeypatch.setitem(
        sys.modules, f"stator.runtime.{module.get(field, 'event_plane.nats')}", None
    )
    settings: dict[str, object] = {"discovery_backend": "mem", field: value}
    config = RuntimeConfig(**settings)  # type: ignore[arg-type]
    build = {
        "discovery_backend": lambda: factory.make_discovery(config),
        "request_plane": lambda: factory.make_request_plane_server(config),
        "event_plane": lambda: factory.make_event_plane(
            config, factory.make_discovery(RuntimeConfig(discovery_backend="mem"))
        ),
    }[field]
    with pytest.raises(ConfigError, match="not yet supported") as info:
        build()
    assert info.value.flag == flag
