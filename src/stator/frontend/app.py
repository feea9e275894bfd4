"""The FastAPI application: OpenAI routes, health, metrics.

Hot paths avoid pydantic: bodies are read raw and decoded with msgspec, responses are returned
as ready bytes (``Response``, ``SSEResponse``, ``DeferredResponse``). ``/openapi.json`` is
FastAPI's, with the request bodies described by msgspec's JSON Schema of the request structs.

Routes: ``POST /v1/chat/completions``, ``POST /v1/completions``, ``GET /v1/models``,
``GET /v1/models/{id}``, ``GET /health`` (models and their live worker ids), ``GET /live``,
``GET /metrics`` (Prometheus text, with the routers' ``stator_frontend_router_*`` state),
``GET /debug/router`` (each model's router snapshot: indexed blocks, booked load, events).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import msgspec
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

import stator
from stator.errors import InvalidRequestError, StatorError
from stator.frontend.chat import prepare_chat
from stator.frontend.completions import prepare_completion
from stator.frontend.errors import as_stator_error, error_response, install_error_handlers
from stator.frontend.generation import Arrival, RequestRun
from stator.frontend.metrics import CONTENT_TYPE, FrontendMetrics
from stator.frontend.models import ModelRegistry
from stator.frontend.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    ModelList,
    ModelObject,
)
from stator.frontend.respond import Result
from stator.frontend.sse import DeferredResponse, SSEResponse
from stator.router.debug import RouterCollector, RouterDebugState, model_router_states

_ENCODER = msgspec.json.Encoder()
UNKNOWN_MODEL_LABEL = "unknown"
MAX_BODY_BYTES = 64 * 1024 * 1024
"""Largest accepted request body (bytes)."""


class Job(Protocol):
    """What ``prepare_chat``/``prepare_completion`` return."""

    run: RequestRun

    @property
    def stream(self) -> bool: ...

    def events(self) -> Any: ...

    async def collect(self) -> Result: ...


Prepare = Callable[[bytes, ModelRegistry, FrontendMetrics, Arrival], Awaitable[Job]]


def create_app(models: ModelRegistry, metrics: FrontendMetrics | None = None) -> FastAPI:
    """The frontend app over ``models``; ``metrics`` defaults to a fresh registry.

    The caller owns ``models`` (starting watchers, closing routers); the app only reads it.
    ``app.state.models`` and ``app.state.metrics`` are set for tests and tools.
    """
    metrics = metrics if metrics is not None else FrontendMetrics()
    app = FastAPI(title="stator", version=_version(), docs_url=None, redoc_url=None)
    app.state.models = models
    app.state.metrics = metrics
    install_error_handlers(app)
    _add_generate_routes(app, models, metrics)
    _add_model_routes(app, models)
    _add_ops_routes(app, models, metrics)
    _add_router_debug(app, models, metrics)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _add_generate_routes(app: FastAPI, models: ModelRegistry, metrics: FrontendMetrics) -> None:
    """The two generation routes, served by ``GenerateFastPath`` (a pure ASGI middleware that
    skips Starlette's routing and exception layers); the FastAPI routes below document them in
    ``/openapi.json`` and answer only if the middleware is bypassed."""
    app.add_middleware(GenerateFastPath, models=models, metrics=metrics)

    @app.post("/v1/chat/completions", tags=["openai"], summary="Create a chat completion")
    async def chat_completions(request: Request) -> Response:
        arrival, body = Arrival.now(), await request.body()
        return await generate(prepare_chat, body, arrival, models, metrics, "chat_completions")

    @app.post("/v1/completions", tags=["openai"], summary="Create a completion")
    async def completions(request: Request) -> Response:
        arrival, body = Arrival.now(), await request.body()
        return await generate(prepare_completion, body, arrival, models, metrics, "completions")


class GenerateFastPath:
    """ASGI middleware answering ``POST /v1/chat/completions`` and ``POST /v1/completions``
    directly; everything else goes to the wrapped app. Bodies over ``MAX_BODY_BYTES`` get 413."""

    def __init__(self, app: ASGIApp, models: ModelRegistry, metrics: FrontendMetrics) -> None:
        self.app = app
        self.routes: dict[str, tuple[Prepare, str]] = {
            "/v1/chat/completions": (prepare_chat, "chat_completions"),
            "/v1/completions": (prepare_completion, "completions"),
        }
        self.models = models
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        route = self.routes.get(scope["path"]) if scope["type"] == "http" else None
        if route is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        arrival = Arrival.now()
        try:
            body = await read_body(receive, MAX_BODY_BYTES)
        except StatorError as exc:
            response: Response = error_response(exc)
        except ClientDisconnect:
            return
        else:
            prepare, endpoint = route
            response = await generate(prepare, body, arrival, self.models, self.metrics, endpoint)
        await response(scope, receive, send)


async def read_body(receive: Receive, limit: int) -> bytes:
    """The request body (all ``http.request`` messages).

    Raises:
        PayloadTooLargeError: more than ``limit`` bytes (HTTP 413).
        ClientDisconnect: the client left first.
    """
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"request body exceeds {limit} bytes")
        parts.append(chunk)
        if not message.get("more_body", False):
            return parts[0] if len(parts) == 1 else b"".join(parts)


class PayloadTooLargeError(InvalidRequestError):
    """A request body over the size limit (HTTP 413)."""

    status_code = 413


async def generate(
    prepare: Prepare,
    body: bytes,
    arrival: Arrival,
    models: ModelRegistry,
    metrics: FrontendMetrics,
    endpoint: str,
) -> Response:
    """Preprocess, route and start a generation request; the response streams or collects it.

    Errors before the response starts become OpenAI error responses (4xx/5xx).
    """
    try:
        job = await prepare(body, models, metrics, arrival)
    except Exception as exc:
        error = as_stator_error(exc)
        metrics.count_request(UNKNOWN_MODEL_LABEL, endpoint, False, error.status_code)
        return error_response(error)
    try:
        await job.run.start()
    except Exception as exc:
        error = as_stator_error(exc)
        job.run.finish(error.status_code)
        return error_response(error)
    if job.stream:
        return SSEResponse(job.events())
    return DeferredResponse(job.collect)


def _add_model_routes(app: FastAPI, models: ModelRegistry) -> None:
    @app.get("/v1/models", tags=["openai"], summary="List models")
    async def list_models() -> Response:
        data = [ModelObject(id=m.name, created=m.created) for m in models.models()]
        return _json(ModelList(data=data))

    @app.get("/v1/models/{model_id:path}", tags=["openai"], summary="Retrieve a model")
    async def retrieve_model(model_id: str) -> Response:
        try:
            model = models.get(model_id)
        except StatorError as exc:
            return error_response(exc)
        return _json(ModelObject(id=model.name, created=model.created))


def _add_ops_routes(app: FastAPI, models: ModelRegistry, metrics: FrontendMetrics) -> None:
    @app.get("/health", tags=["ops"], summary="Models and their live instances")
    async def health() -> Response:
        served = models.health()
        body = {
            "status": "healthy" if any(served.values()) else "no_instances",
            "models": {name: {"instances": ids} for name, ids in served.items()},
            "instances": sorted({i for ids in served.values() for i in ids}),
        }
        return _json(body)

    @app.get("/live", tags=["ops"], summary="Liveness")
    async def live() -> Response:
        return _json({"status": "live"})

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)


def _add_router_debug(app: FastAPI, models: ModelRegistry, metrics: FrontendMetrics) -> None:
    def states() -> list[tuple[str, RouterDebugState]]:
        return model_router_states((m.name, m.router) for m in models.models())

    with contextlib.suppress(ValueError):  # already registered (metrics shared by two apps)
        metrics.registry.register(RouterCollector(states))

    @app.get("/debug/router", tags=["ops"], summary="Router state per model")
    async def debug_router() -> Response:
        return _json({"models": {name: state.to_dict() for name, state in states()}})


def _json(value: object) -> Response:
    return Response(_ENCODER.encode(value), media_type="application/json")


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema plus msgspec's schemas of the two request bodies."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
    (chat, completion), components = msgspec.json.schema_components(
        [ChatCompletionRequest, CompletionRequest], ref_template="#/components/schemas/{name}"
    )
    schema.setdefault("components", {}).setdefault("schemas", {}).update(components)
    for path, body in (("/v1/chat/completions", chat), ("/v1/completions", completion)):
        schema["paths"][path]["post"]["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body}},
        }
    app.openapi_schema = schema
    return schema


def _version() -> str:
    return str(getattr(stator, "__version__", "0"))
