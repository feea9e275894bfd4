"""``FrontendService``: runtime + model registry + model watcher + HTTP server, started together.

Used by ``python -m stator.frontend`` and in-process by tests and benchmarks. The HTTP server is
uvicorn with ``httptools`` on the running loop (uvloop when ``__main__`` runs it). The listening
socket is bound before the server starts, so ``--http-port 0`` yields a known port at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

import uvicorn

from stator.frontend.app import create_app
from stator.frontend.config import FrontendConfig
from stator.frontend.metrics import FrontendMetrics
from stator.frontend.models import ModelRegistry
from stator.frontend.watcher import ModelWatcher
from stator.protocols.model_card import ModelCard
from stator.router.base import EngineRouter
from stator.router.config import RouterConfig
from stator.router.factory import make_router_core
from stator.router.live import LiveRouter
from stator.router.remote import RemoteRouter
from stator.runtime.address import EndpointAddress
from stator.runtime.discovery.mem import MemStore
from stator.runtime.runtime import DistributedRuntime

log = logging.getLogger(__name__)

GRACEFUL_SHUTDOWN_S = 5.0
"""Seconds in-flight HTTP requests get to finish when the server stops."""


class FrontendService:
    """The whole frontend. ``runtime``: an existing runtime to use (it is not shut down by
    ``stop``); otherwise one is created from ``config.runtime`` (``mem_store`` for ``mem``)."""

    def __init__(
        self,
        config: FrontendConfig,
        *,
        runtime: DistributedRuntime | None = None,
        mem_store: MemStore | None = None,
    ) -> None:
        self.config = config
        self.runtime = runtime
        self._owns_runtime = runtime is None
        self._mem_store = mem_store
        self.registry = ModelRegistry()
        self.metrics = FrontendMetrics()
        self.app = create_app(self.registry, self.metrics)
        self.watcher: ModelWatcher | None = None
        self._server: uvicorn.Server | None = None
        self._serve_task: asyncio.Task[None] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server."""
        host = self.config.http_host
        host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Connect the runtime, start following model cards, and start serving HTTP.

        Raises:
            OSError: the HTTP port cannot be bound.
            ConfigError / TransportError: the runtime cannot start.
        """
        if self.runtime is None:
            self.runtime = await DistributedRuntime.create(
                self.config.runtime, mem_store=self._mem_store
            )
        self.watcher = ModelWatcher(
            self.runtime.discovery, self.registry, self.make_router, self.config.runtime.namespace
        )
        await self.watcher.start()
        sock = _bind(self.config.http_host, self.config.http_port)
        self.port = sock.getsockname()[1]
        self._server = uvicorn.Server(
            uvicorn.Config(
                self.app,
                http="httptools",
                lifespan="off",
                log_level=self.config.log_level,
                access_log=False,
                timeout_graceful_shutdown=int(GRACEFUL_SHUTDOWN_S),
            )
        )
        # ``_serve`` is ``serve`` without uvicorn's signal capture: the owner of the process
        # (``__main__``) handles SIGINT/SIGTERM and calls ``request_stop``.
        self._serve_task = asyncio.create_task(self._server._serve(sockets=[sock]))
        while not self._server.started:
            if self._serve_task.done():
                await self._serve_task
                raise OSError(f"HTTP server on port {self.port} did not start")
            await asyncio.sleep(0.01)
        log.info("frontend listening on %s", self.url)

    def make_router(self, card: ModelCard, address: EndpointAddress) -> EngineRouter:
        """The router for a model: a ``RemoteRouter`` with ``--router-endpoint``, else a
        ``LiveRouter`` in the configured mode, with the card's block size unless
        ``--kv-cache-block-size`` is set."""
        assert self.runtime is not None
        if self.config.router_endpoint:
            return RemoteRouter(
                self.runtime,
                EndpointAddress.parse(self.config.router_endpoint),
                address,
                request_timeout_s=self.config.request_timeout_s,
            )
        router_config = self.config.router
        core = make_router_core(router_config, block_size=_block_size(router_config, card))
        return LiveRouter(
            self.runtime,
            address,
            core,
            router_config,
            request_timeout_s=self.config.request_timeout_s,
        )

    async def wait(self) -> None:
        """Return when the HTTP server stops (``stop()`` or a signal)."""
        if self._serve_task is not None:
            await self._serve_task

    def request_stop(self) -> None:
        """Ask the HTTP server to stop (safe from a signal handler)."""
        if self._server is not None:
            self._server.should_exit = True

    async def stop(self) -> None:
        """Stop HTTP, the watcher, the routers, and the runtime if this service made it."""
        if self._server is not None and self._serve_task is not None:
            self._server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._serve_task
            self._serve_task = None
        if self.watcher is not None:
            await self.watcher.close()
        await self.registry.close()
        if self.runtime is not None and self._owns_runtime:
            await self.runtime.shutdown(drain_timeout_s=1.0)


def _block_size(router_config: RouterConfig, card: ModelCard) -> int:
    configured = router_config.kv_cache_block_size
    return configured if configured is not None else card.kv_cache_block_size


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio only sets TCP_NODELAY on accepted sockets whose proto is TCP;
    # without it, small responses wait ~40 ms for delayed ACKs (uvloop sets it regardless).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock
