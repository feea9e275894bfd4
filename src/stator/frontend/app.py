"""The FastAPI application: OpenAI routes, health, metrics.

Hot paths avoid pydantic: bodies are read raw and decoded with msgspec, responses are returned
as ready bytes (``Response``, ``SSEResponse``, ``DeferredResponse``). ``/openapi.json`` is
FastAPI's, with the request bodies described by msgspec's JSON Schema of the request structs.

Routes: ``POST /v1/chat/completions``, ``POST /v1/completions``, ``GET /v1/models``,
``GET /v1/models/{id}``, ``GET /health`` (models and their live worker ids), ``GET /live``,
``GET /metrics`` (Prometheus text).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import msgspec
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from starlette.responses import Response

import stator
from stator.errors import StatorError
from stator.frontend.chat import prepare_chat
from stator.frontend.completions import prepare_completion
from stator.frontend.errors import error_response, install_error_handlers
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

_ENCODER = msgspec.json.Encoder()
UNKNOWN_MODEL_LABEL = "unknown"


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
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _add_generate_routes(app: FastAPI, models: ModelRegistry, metrics: FrontendMetrics) -> None:
    @app.post("/v1/chat/completions", tags=["openai"], summary="Create a chat completion")
    async def chat_completions(request: Request) -> Response:
        return await _generate(prepare_chat, request, models, metrics, "chat_completions")

    @app.post("/v1/completions", tags=["openai"], summary="Create a completion")
    async def completions(request: Request) -> Response:
        return await _generate(prepare_completion, request, models, metrics, "completions")


async def _generate(
    prepare: Prepare,
    request: Request,
    models: ModelRegistry,
    metrics: FrontendMetrics,
    endpoint: str,
) -> Response:
    arrival = Arrival.now()
    body = await request.body()
    try:
        job = await prepare(body, models, metrics, arrival)
    except StatorError as exc:
        metrics.count_request(UNKNOWN_MODEL_LABEL, endpoint, False, exc.status_code)
        return error_response(exc)
    try:
        await job.run.start()
    except StatorError as exc:
        job.run.finish(exc.status_code)
        return error_response(exc)
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
