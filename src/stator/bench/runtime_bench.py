"""``stator bench runtime``: request-plane round-trip latency and streaming throughput.

One server and one client run in this process (one event loop, uvloop when installed) on
loopback. The handler plays a minimal engine: it decodes a msgspec ``PreprocessedRequest`` and
streams ``max_tokens`` msgspec-encoded ``LLMEngineOutput`` chunks of one token each; the client
decodes every chunk. Measured:

- ``rtt_p50_us`` / ``rtt_p99_us``: wall time (µs) of a one-chunk request, from calling
  ``stream`` to the end of the stream, over ``--num-requests`` sequential requests.
- ``stream_chunks_per_s``: chunks per second of one ``--stream-chunks`` chunk stream (the median
  of ``--stream-repeats`` runs).

Targets (issue 2): p50 < 200 µs and >= 100,000 chunks/s for a 10,000-chunk stream. A request
plane is picked by ``--request-plane``; each kind is a factory in ``PLANES``. ``nats`` goes through
the NATS server at ``--nats-server``, or through a nats-server started on a free loopback port for
the run when that flag is not given.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from stator.protocols.engine import LLMEngineOutput, PreprocessedRequest, StopConditions
from stator.runtime.request_plane.base import (
    RequestContext,
    RequestPlaneClient,
    RequestPlaneServer,
)
from stator.runtime.request_plane.tcp import TcpRequestPlaneClient, TcpRequestPlaneServer

if TYPE_CHECKING:
    from stator.testing.services import NatsServer

ENDPOINT = "bench/runtime/generate"
NUM_PROMPT_TOKENS = 128
"""Prompt length (tokens) of every benchmark request."""

PlaneFactory = Callable[
    [argparse.Namespace], Awaitable[tuple[RequestPlaneServer, RequestPlaneClient]]
]


async def _tcp_plane(args: argparse.Namespace) -> tuple[RequestPlaneServer, RequestPlaneClient]:
    server = TcpRequestPlaneServer("127.0.0.1", 0)
    return server, TcpRequestPlaneClient()


async def _nats_plane(args: argparse.Namespace) -> tuple[RequestPlaneServer, RequestPlaneClient]:
    from stator.runtime.request_plane.nats import NatsRequestPlaneClient, NatsRequestPlaneServer

    return NatsRequestPlaneServer(args.nats_server), NatsRequestPlaneClient(args.nats_server)


PLANES: dict[str, PlaneFactory] = {"tcp": _tcp_plane, "nats": _nats_plane}
"""Request-plane kind → factory of an unstarted (server, client) pair (given the flags)."""


@dataclass(frozen=True, slots=True)
class RuntimeBenchResult:
    """Benchmark figures: latencies in µs, throughput in chunks/s."""

    rtt_p50_us: float
    rtt_p99_us: float
    stream_chunks_per_s: float
    request_plane: str
    event_loop: str
    num_requests: int
    stream_chunks: int


async def engine_handler(payload: bytes, ctx: RequestContext) -> AsyncIterator[bytes]:
    """A zero-cost engine: one ``LLMEngineOutput`` chunk per output token, the last one
    carrying ``finish_reason="length"``."""
    request = msgspec.msgpack.decode(payload, type=PreprocessedRequest)
    encode = msgspec.msgpack.encode
    num_tokens = request.stop_conditions.max_tokens or 1
    for i in range(num_tokens - 1):
        yield encode(LLMEngineOutput(token_ids=[i % 32000]))
    yield encode(LLMEngineOutput(token_ids=[num_tokens % 32000], finish_reason="length"))


def make_request(max_tokens: int) -> bytes:
    """An encoded ``PreprocessedRequest`` with a ``NUM_PROMPT_TOKENS`` prompt."""
    request = PreprocessedRequest(
        token_ids=list(range(1000, 1000 + NUM_PROMPT_TOKENS)),
        model="bench",
        stop_conditions=StopConditions(max_tokens=max_tokens, ignore_eos=True),
    )
    return msgspec.msgpack.encode(request)


async def _call(client: RequestPlaneClient, address: str, payload: bytes) -> int:
    """Run one request to the end; return the number of output tokens."""
    decoder = msgspec.msgpack.Decoder(LLMEngineOutput)
    num_tokens = 0
    async for chunk in client.stream(address, ENDPOINT, payload, request_id="bench"):
        num_tokens += len(decoder.decode(chunk).token_ids)
    return num_tokens


async def measure_rtt_us(
    client: RequestPlaneClient, address: str, num_requests: int
) -> list[float]:
    """Round-trip times (µs) of ``num_requests`` sequential one-chunk requests."""
    payload = make_request(1)
    samples = []
    for _ in range(num_requests):
        start = time.perf_counter_ns()
        await _call(client, address, payload)
        samples.append((time.perf_counter_ns() - start) / 1000)
    return samples


async def measure_stream_chunks_per_s(
    client: RequestPlaneClient, address: str, num_chunks: int
) -> float:
    """Chunks per second of one ``num_chunks``-chunk stream."""
    payload = make_request(num_chunks)
    start = time.perf_counter()
    num_tokens = await _call(client, address, payload)
    elapsed_s = time.perf_counter() - start
    if num_tokens != num_chunks:
        raise RuntimeError(f"stream returned {num_tokens} tokens, expected {num_chunks}")
    return num_chunks / elapsed_s


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-quantile (0..1) by the nearest-rank method."""
    ordered = sorted(samples)
    rank = max(1, min(len(ordered), round(q * len(ordered) + 0.5)))
    return ordered[rank - 1]


async def run_bench(args: argparse.Namespace) -> RuntimeBenchResult:
    """Start the plane, warm up, measure, stop."""
    server, client = await PLANES[args.request_plane](args)
    server.register(ENDPOINT, engine_handler)
    await server.start()
    try:
        address = server.transport_address
        await measure_rtt_us(client, address, args.warmup)
        rtts = await measure_rtt_us(client, address, args.num_requests)
        rates = [
            await measure_stream_chunks_per_s(client, address, args.stream_chunks)
            for _ in range(args.stream_repeats)
        ]
    finally:
        await client.close()
        await server.stop(drain_timeout_s=1.0)
    return RuntimeBenchResult(
        rtt_p50_us=round(percentile(rtts, 0.50), 1),
        rtt_p99_us=round(percentile(rtts, 0.99), 1),
        stream_chunks_per_s=round(statistics.median(rates)),
        request_plane=args.request_plane,
        event_loop=type(asyncio.get_running_loop()).__module__.split(".")[0],
        num_requests=args.num_requests,
        stream_chunks=args.stream_chunks,
    )


def _loop_factory(kind: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if kind == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if kind == "uvloop":
            raise
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def build_parser() -> argparse.ArgumentParser:
    """Flags of ``stator bench runtime``."""
    parser = argparse.ArgumentParser(prog="stator bench runtime", description=__doc__)
    parser.add_argument("--request-plane", default="tcp", choices=sorted(PLANES))
    parser.add_argument("--num-requests", type=_positive, default=2000)
    parser.add_argument("--warmup", type=_positive, default=200, help="unmeasured requests")
    parser.add_argument("--stream-chunks", type=_positive, default=10_000)
    parser.add_argument("--stream-repeats", type=_positive, default=5)
    parser.add_argument("--event-loop", default="auto", choices=["auto", "uvloop", "asyncio"])
    parser.add_argument(
        "--nats-server",
        default="",
        help="NATS URL for --request-plane nats (default: start a local nats-server for the run)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


@contextlib.contextmanager
def _local_nats_server() -> Iterator[NatsServer]:
    """A nats-server on a free loopback port for this run (``ServiceError`` if not installed)."""
    from stator.testing.services import NatsServer

    with tempfile.TemporaryDirectory(prefix="stator-bench-nats-") as workdir:
        server = NatsServer(Path(workdir))
        server.start()
        try:
            yield server
        finally:
            server.stop()


def format_result(result: RuntimeBenchResult) -> str:
    """Human-readable lines."""
    return "\n".join(
        [
            f"request plane {result.request_plane} on loopback, one process ({result.event_loop})",
            f"round trip, one-chunk request ({result.num_requests} requests): "
            f"p50 {result.rtt_p50_us:.1f} us, p99 {result.rtt_p99_us:.1f} us",
            f"streaming, {result.stream_chunks}-chunk stream: "
            f"{result.stream_chunks_per_s:,.0f} chunks/s",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print text, or one JSON object with ``--json``. Returns 0."""
    args = build_parser().parse_args(argv)
    with contextlib.ExitStack() as stack:
        if args.request_plane == "nats" and not args.nats_server:
            args.nats_server = stack.enter_context(_local_nats_server()).url
        with asyncio.Runner(loop_factory=_loop_factory(args.event_loop)) as runner:
            result = runner.run(run_bench(args))
    print(json.dumps(asdict(result)) if args.json else format_result(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
