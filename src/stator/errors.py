"""The one exception hierarchy of stator.

``StatorError`` is the root. ``ClientError`` subclasses map to HTTP 4xx, ``ServerError``
subclasses to 5xx; the frontend maps them to OpenAI's ``{"error": {...}}`` body in one place
using ``status_code``, ``error_type`` and ``code``. ``TransportError`` subclasses are raised by the
request plane and tell apart "no instance", "instance lost mid-stream", "timed out" and
"cancelled". ``ConfigError`` is raised at start for a bad flag, naming it.
"""

from __future__ import annotations


class StatorError(Exception):
    """Root of all stator errors. ``status_code`` is the HTTP status it maps to."""

    status_code: int = 500
    error_type: str = "internal_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class ClientError(StatorError):
    """The caller's fault: HTTP 4xx."""

    status_code = 400
    error_type = "invalid_request_error"


class InvalidRequestError(ClientError):
    """A malformed or out-of-range request (HTTP 400); ``param`` names the offending field."""


class ContextLengthError(InvalidRequestError):
    """The prompt (plus requested output) does not fit the model's context length (HTTP 400)."""

    code = "context_length_exceeded"


class NotFoundError(ClientError):
    """An unknown model or resource (HTTP 404)."""

    status_code = 404
    error_type = "not_found_error"
    code = "model_not_found"


class ConfigError(StatorError, ValueError):
    """A bad configuration value at start; the message names the flag (``--flag``)."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(f"{flag}: {message}", param=flag)
        self.flag = flag


class AddressError(InvalidRequestError, ValueError):
    """A ``dyn://namespace.component.endpoint`` address that does not parse; names the bad part."""


class ServerError(StatorError):
    """Our fault or a backend's: HTTP 5xx."""

    status_code = 500
    error_type = "internal_error"


class ServiceUnavailableError(ServerError):
    """Overloaded or nothing can serve now (HTTP 503); ``retry_after_s`` fills ``Retry-After``."""

    status_code = 503
    error_type = "service_unavailable"

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class TransportError(ServerError):
    """Base of request-plane failures."""

    status_code = 503
    error_type = "service_unavailable"


class NoInstanceError(TransportError):
    """No live instance serves the endpoint (or the requested instance id is unknown)."""

    status_code = 503
    code = "no_instance"


class InstanceLostError(TransportError):
    """The serving instance went away (connection dropped) before the stream ended."""

    status_code = 502
    error_type = "bad_gateway"
    code = "instance_lost"


class RequestTimeoutError(TransportError):
    """No response (first chunk, or next chunk) arrived within the allowed time."""

    status_code = 504
    error_type = "timeout"
    code = "timeout"


class StreamCancelledError(TransportError):
    """The stream was cancelled (by the client, or the server stopped the request)."""

    status_code = 499
    error_type = "cancelled"
    code = "cancelled"


class RemoteHandlerError(ServerError):
    """The remote handler raised; ``remote_type`` is the remote exception's class name."""

    def __init__(self, message: str, *, remote_type: str = "Exception", status_code: int = 500):
        super().__init__(message)
        self.remote_type = remote_type
        self.status_code = status_code
