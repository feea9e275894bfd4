"""The standalone router (``python -m stator.router``): one model's routing as a service.

It follows the workers of one endpoint (``--endpoint dyn://ns.comp.ep``, or ``--model-name``
→ ``dyn://{ns}.backend.{model-specific name}``) with the same ``LiveRouter`` and router core the
frontend embeds (every ``--router-*`` flag applies; the mode defaults to ``kv`` as in Dynamo's
standalone router), and serves:

- ``--router-endpoint`` (default ``dyn://{namespace}.router.generate``, Dynamo's name): a
  ``PreprocessedRequest`` in, the chosen worker's ``LLMEngineOutput`` chunks out, the first one a
  ``RoutedEngineOutput`` naming the worker (``stator.router.wire``). Errors keep their class
  (503 busy / no worker, 404 unknown pinned worker). A frontend started with
  ``--router-endpoint`` sends its requests here instead of routing them itself.
- ``{namespace}.{component}.debug_state`` beside it: one ``RouterDebugState`` dict (indexed blocks,
  booked load and event counters per worker).

The block size is ``--kv-cache-block-size`` or, when unset, the ``kv_cache_block_size`` of the
first model card registered at the worker endpoint (waited for).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from stator.errors import (
    AddressError,
    ConfigError,
    NoInstanceError,
    RemoteHandlerError,
    StatorError,
)
from stator.flags import add_flag, bounded, env_name
from stator.protocols.engine import LLMEngineOutput, PreprocessedRequest
from stator.protocols.model_card import ModelCard
from stator.router.config import RouterConfig, add_router_args, router_config_from_args
from stator.router.factory import make_router_core
from stator.router.live import LiveRouter
from stator.router.remote import typed_remote_error
from stator.router.wire import RoutedEngineOutput, RoutingData, with_routing_data
from stator.runtime.address import EndpointAddress, model_endpoint_name
from stator.runtime.config import RuntimeConfig, add_runtime_args, runtime_config_from_args
from stator.runtime.discovery import keys
from stator.runtime.discovery.base import WatchEventKind
from stator.runtime.endpoint import ServedEndpoint
from stator.runtime.instance import decode_model_card
from stator.runtime.request_plane.base import RequestContext
from stator.runtime.runtime import DistributedRuntime

log = logging.getLogger(__name__)

DEFAULT_ROUTER_COMPONENT = "router"
DEFAULT_ROUTER_ENDPOINT = "generate"
DEBUG_ENDPOINT = "debug_state"
WORKER_COMPONENT = "backend"
"""Component of aggregated workers' endpoints (DESIGN.md; ``--model-name`` resolves into it)."""
STANDALONE_ROUTER_MODE = "kv"
"""Default ``--router-mode`` of the standalone router (Dynamo's standalone router is KV-aware)."""


@dataclass(frozen=True, slots=True)
class StandaloneRouterConfig:
    """Settings of one standalone router process.

    ``worker_endpoint``: the workers it routes to; ``router_endpoint``: what it serves;
    ``request_timeout_s``: limit on the wait for each worker chunk (None = none);
    ``card_timeout_s``: how long to wait for a worker's model card when the block size is not
    given (None = forever).
    """

    worker_endpoint: EndpointAddress
    router_endpoint: EndpointAddress
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    router: RouterConfig = field(default_factory=lambda: RouterConfig(router_mode="kv"))
    request_timeout_s: float | None = None
    card_timeout_s: float | None = None
    log_level: str = "info"


def build_parser(prog: str = "python -m stator.router") -> argparse.ArgumentParser:
    """The standalone router's argument parser (its own, runtime and router flags)."""
    parser = argparse.ArgumentParser(prog=prog, description="standalone KV-aware router")
    g = parser.add_argument_group("standalone router")
    add_flag(g, "--endpoint", default="", help="workers' endpoint, dyn://ns.comp.ep")
    add_flag(
        g,
        "--model-name",
        default="",
        help="route to this model's workers: dyn://{namespace}.backend.{model-specific name}",
    )
    add_flag(
        g,
        "--router-endpoint",
        default="",
        help="endpoint to serve (default: dyn://{namespace}.router.generate)",
    )
    add_flag(
        g,
        "--request-timeout",
        dest="request_timeout_s",
        default=None,
        type=bounded(float, lo=0.001),
        help="seconds to wait for each worker response chunk (default: no limit)",
    )
    add_flag(
        g,
        "--model-card-timeout",
        dest="card_timeout_s",
        default=None,
        type=bounded(float, lo=0.0),
        help="seconds to wait for a worker's model card (block size) (default: forever)",
    )
    add_flag(
        g,
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log verbosity",
    )
    add_runtime_args(parser)
    add_router_args(parser)
    if env_name("--router-mode") not in os.environ:
        parser.set_defaults(router_mode=STANDALONE_ROUTER_MODE)
    return parser


def config_from_args(args: argparse.Namespace) -> StandaloneRouterConfig:
    """Build the settings from parsed flags.

    Raises:
        ConfigError: no or a bad ``--endpoint`` / ``--model-name``, a bad
            ``--router-endpoint``, or a router setting out of range (the flag is named).
    """
    runtime = runtime_config_from_args(args)
    return StandaloneRouterConfig(
        worker_endpoint=_worker_endpoint(args.endpoint, args.model_name, runtime.namespace),
        router_endpoint=_router_endpoint(args.router_endpoint, runtime.namespace),
        runtime=runtime,
        router=router_config_from_args(args),
        request_timeout_s=args.request_timeout_s,
        card_timeout_s=args.card_timeout_s,
        log_level=args.log_level,
    )


def parse_config(argv: Sequence[str] | None = None) -> StandaloneRouterConfig:
    """Parse flags (bad values exit with status 2 naming the flag; see ``config_from_args``)."""
    return config_from_args(build_parser().parse_args(argv))


def _worker_endpoint(endpoint: str, model_name: str, namespace: str) -> EndpointAddress:
    if endpoint and model_name:
        raise ConfigError("--endpoint", "give --endpoint or --model-name, not both")
    if model_name:
        text = f"{namespace}.{WORKER_COMPONENT}.{model_endpoint_name(model_name)}"
        return _parse(text, "--namespace")
    if not endpoint:
        raise ConfigError("--endpoint", "the workers' endpoint (or --model-name) is required")
    return _parse(endpoint, "--endpoint")


def _router_endpoint(endpoint: str, namespace: str) -> EndpointAddress:
    if endpoint:
        return _parse(endpoint, "--router-endpoint")
    return _parse(
        f"{namespace}.{DEFAULT_ROUTER_COMPONENT}.{DEFAULT_ROUTER_ENDPOINT}", "--namespace"
    )


def _parse(text: str, flag: str) -> EndpointAddress:
    try:
        return EndpointAddress.parse(text)
    except AddressError as exc:
        raise ConfigError(flag, exc.message) from exc


async def wait_for_model_card(
    runtime: DistributedRuntime, address: EndpointAddress, timeout_s: float | None = None
) -> ModelCard:
    """The first valid model card registered at ``address`` (waits for one to appear).

    Raises:
        NoInstanceError: none within ``timeout_s`` seconds.
    """
    prefix = f"{keys.MODEL_CARDS_ROOT}/{address.path}/"
    watch = runtime.discovery.watch_prefix(prefix)
    try:
        async with asyncio.timeout(timeout_s):
            async for event in watch:
                if event.kind is WatchEventKind.PUT and event.value:
                    try:
                        return decode_model_card(event.value)
                    except StatorError as exc:
                        log.warning("ignoring model card %s: %s", event.key, exc.message)
    except TimeoutError:
        pass
    finally:
        aclose = getattr(watch, "aclose", None)
        if aclose is not None:
            await aclose()
    raise NoInstanceError(f"no model card at {address} within {timeout_s} s")


class StandaloneRouter:
    """A running standalone router. Make with ``await StandaloneRouter.start(runtime, config)``;
    end with ``await stop()`` (the runtime stays the caller's)."""

    def __init__(self, runtime: DistributedRuntime, config: StandaloneRouterConfig) -> None:
        self.runtime = runtime
        self.config = config
        self.router: LiveRouter | None = None
        self.block_size = 0
        self._served: list[ServedEndpoint] = []

    @classmethod
    async def start(
        cls, runtime: DistributedRuntime, config: StandaloneRouterConfig
    ) -> StandaloneRouter:
        """Resolve the block size, start following the workers, then serve the endpoints.

        Raises:
            NoInstanceError: no model card within ``config.card_timeout_s`` (block size unset).
            ConfigError: a bad block size. ServerError: the endpoint is already served here.
        """
        self = cls(runtime, config)
        block_size = config.router.kv_cache_block_size
        if block_size is None:
            card = await wait_for_model_card(runtime, config.worker_endpoint, config.card_timeout_s)
            block_size = card.kv_cache_block_size
        self.block_size = block_size
        core = make_router_core(config.router, block_size=block_size)
        self.router = LiveRouter(
            runtime,
            config.worker_endpoint,
            core,
            config.router,
            request_timeout_s=config.request_timeout_s,
        )
        await self.router.start()
        try:
            generate = runtime.endpoint(config.router_endpoint)
            self._served.append(await generate.serve(self.generate, PreprocessedRequest))
            debug = runtime.endpoint(
                dataclasses.replace(config.router_endpoint, endpoint=DEBUG_ENDPOINT)
            )
            self._served.append(await debug.serve(self.debug_state))
        except BaseException:
            await self.stop()
            raise
        return self

    async def generate(
        self, request: PreprocessedRequest, ctx: RequestContext
    ) -> AsyncIterator[LLMEngineOutput]:
        """Route ``request`` and stream the worker's chunks (the first names the worker).

        Raises:
            NoInstanceError / ServiceUnavailableError / NotFoundError / TransportError /
            RemoteHandlerError: as ``LiveRouter.generate`` and the worker's stream.
        """
        router = self.router
        if router is None:
            raise NoInstanceError("the router is stopped")
        request = self._unique_id(router, request, ctx)
        try:
            stream = await router.generate(request)
        except RemoteHandlerError as exc:  # the worker's error, with its own class
            raise typed_remote_error(exc) from None
        routing = RoutingData(worker_id=stream.worker_id, overlap_blocks=stream.overlap_blocks)
        try:
            first = True
            async for chunk in stream:
                if first:
                    first = False
                    yield with_routing_data(chunk, routing)
                else:
                    yield chunk
            if first:
                yield RoutedEngineOutput(routing_data=routing)
        except RemoteHandlerError as exc:
            raise typed_remote_error(exc) from None
        finally:
            await stream.aclose()

    async def debug_state(self, request: Any, ctx: RequestContext) -> AsyncIterator[Any]:
        """Yield one ``RouterDebugState`` as a dict (the request is ignored)."""
        if self.router is None:
            raise NoInstanceError("the router is stopped")
        yield self.router.debug_state().to_dict()

    async def stop(self) -> None:
        """Unregister the endpoints, then close the router (cancels in-flight streams)."""
        for served in self._served:
            await served.stop()
        self._served.clear()
        if self.router is not None:
            await self.router.close()
            self.router = None

    @staticmethod
    def _unique_id(
        router: LiveRouter, request: PreprocessedRequest, ctx: RequestContext
    ) -> PreprocessedRequest:
        """``request`` with an id not booked yet (the router books load by request id; callers
        other than the frontend may send none or reuse one)."""
        rid = request.request_id or ctx.request_id
        if router.core.sequences.worker_of(rid) is not None:
            rid = f"{rid}-{uuid.uuid4().hex[:8]}"
        if rid == request.request_id:
            return request
        return msgspec.structs.replace(request, request_id=rid)
