"""The one place that maps exceptions to OpenAI error responses.

Every error body is ``{"error": {"message", "type", "param", "code"}}``. ``stator.errors``
exceptions carry their status (``ClientError`` 4xx, ``ServerError`` 5xx); FastAPI's own
validation errors and Starlette's HTTP errors (unknown route 404, wrong method 405) are reshaped
the same way; anything else is a 500 whose message does not leak internals.
``ServiceUnavailableError`` adds ``Retry-After`` (seconds, rounded up).
"""

from __future__ import annotations

import logging
import math

import msgspec
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from stator.errors import InvalidRequestError, ServiceUnavailableError, StatorError
from stator.frontend.protocol import ErrorDetail, ErrorResponse

log = logging.getLogger(__name__)

_ENCODER = msgspec.json.Encoder()
_HTTP_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
}


def error_detail(exc: StatorError) -> ErrorDetail:
    """The OpenAI error object for a stator error."""
    return ErrorDetail(message=exc.message, type=exc.error_type, param=exc.param, code=exc.code)


def error_body(exc: StatorError) -> bytes:
    """``{"error": {...}}`` as JSON bytes."""
    return _ENCODER.encode(ErrorResponse(error=error_detail(exc)))


def error_response(exc: StatorError) -> Response:
    """The HTTP response for ``exc``: its status, the OpenAI body, ``Retry-After`` on 503s."""
    headers: dict[str, str] = {}
    if isinstance(exc, ServiceUnavailableError):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
    return Response(
        error_body(exc),
        status_code=exc.status_code,
        media_type="application/json",
        headers=headers,
    )


def as_stator_error(exc: BaseException) -> StatorError:
    """``exc`` itself when it is a ``StatorError``, else a generic 500 (details logged only)."""
    if isinstance(exc, StatorError):
        return exc
    log.error("unhandled error: %r", exc, exc_info=exc)
    return StatorError("Internal server error")


def install_error_handlers(app: FastAPI) -> None:
    """Register handlers so that every error the app returns has OpenAI's shape."""

    async def on_stator_error(_: Request, exc: Exception) -> Response:
        return error_response(as_stator_error(exc))

    async def on_validation_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {}
        loc = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        message = str(first.get("msg", "Invalid request"))
        return error_response(InvalidRequestError(message, param=loc or None))

    async def on_http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        body = ErrorResponse(
            error=ErrorDetail(
                message=str(exc.detail),
                type=_HTTP_TYPES.get(exc.status_code, "internal_error"),
                code=None,
            )
        )
        return Response(
            _ENCODER.encode(body),
            status_code=exc.status_code,
            media_type="application/json",
            headers=exc.headers,
        )

    app.add_exception_handler(StatorError, on_stator_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(Exception, on_stator_error)
