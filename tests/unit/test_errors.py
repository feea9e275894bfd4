"""The stator exception hierarchy: HTTP status, error type and code per class."""

from __future__ import annotations

import pytest

from stator import errors
from stator.errors import (
    AddressError,
    ClientError,
    ConfigError,
    ContextLengthError,
    InstanceLostError,
    InvalidRequestError,
    NoInstanceError,
    NotFoundError,
    RemoteHandlerError,
    RequestTimeoutError,
    ServerError,
    ServiceUnavailableError,
    StatorError,
    StreamCancelledError,
    TransportError,
)

INVALID = "invalid_request_error"

# (class, base, status_code, error_type, code)
TABLE: list[tuple[type[StatorError], type[StatorError], int, str, str | None]] = [
    (ClientError, StatorError, 400, INVALID, None),
    (InvalidRequestError, ClientError, 400, INVALID, None),
    (ContextLengthError, InvalidRequestError, 400, INVALID, "context_length_exceeded"),
    (NotFoundError, ClientError, 404, "not_found_error", "model_not_found"),
    (AddressError, InvalidRequestError, 400, INVALID, None),
    (ServerError, StatorError, 500, "internal_error", None),
    (ServiceUnavailableError, ServerError, 503, "service_unavailable", None),
    (TransportError, ServerError, 503, "service_unavailable", None),
    (NoInstanceError, TransportError, 503, "service_unavailable", "no_instance"),
    (InstanceLostError, TransportError, 502, "bad_gateway", "instance_lost"),
    (RequestTimeoutError, TransportError, 504, "timeout", "timeout"),
    (StreamCancelledError, TransportError, 499, "cancelled", "cancelled"),
    (RemoteHandlerError, ServerError, 500, "internal_error", None),
]


@pytest.mark.parametrize(("cls", "base", "status", "error_type", "code"), TABLE)
def test_class_maps_to_status_type_and_code(
    cls: type[StatorError], base: type[StatorError], status: int, error_type: str, code: str | None
) -> None:
    err = cls("boom")
    assert isinstance(err, base)
    assert (err.status_code, err.error_type, err.code) == (status, error_type, code)
    assert err.message == str(err) == "boom"


def test_every_public_error_class_is_in_the_table() -> None:
    public = {
        obj
        for obj in vars(errors).values()
        if isinstance(obj, type) and issubclass(obj, StatorError) and obj is not StatorError
    }
    assert public == {row[0] for row in TABLE} | {ConfigError}


def test_client_errors_are_4xx_and_server_errors_5xx() -> None:
    for cls, *_ in TABLE:
        err = cls("x")
        if isinstance(err, ClientError):
            assert 400 <= err.status_code < 500
        elif not isinstance(err, StreamCancelledError):  # 499: nginx's "client closed request"
            assert 500 <= err.status_code < 600


def test_invalid_request_names_the_offending_param() -> None:
    err = InvalidRequestError("max_tokens must be >= 1", param="max_tokens")
    assert err.param == "max_tokens"
    assert StatorError("x").param is None


def test_config_error_names_the_flag() -> None:
    err = ConfigError("--router-temperature", "must be >= 0, got -1")
    assert err.flag == err.param == "--router-temperature"
    assert str(err) == "--router-temperature: must be >= 0, got -1"
    assert isinstance(err, ValueError)  # argparse-style callers catch ValueError
    assert err.status_code == 500


def test_address_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="component"):
        raise AddressError("dyn://ns..ep: empty component")


def test_service_unavailable_carries_retry_after() -> None:
    assert ServiceUnavailableError("busy").retry_after_s == 1.0
    err = ServiceUnavailableError("all workers busy", retry_after_s=2.5)
    assert err.retry_after_s == 2.5
    assert err.status_code == 503


def test_remote_handler_error_carries_remote_type_and_status() -> None:
    default = RemoteHandlerError("handler failed")
    assert (default.remote_type, default.status_code) == ("Exception", 500)
    err = RemoteHandlerError("bad prompt", remote_type="InvalidRequestError", status_code=400)
    assert (err.remote_type, err.status_code) == ("InvalidRequestError", 400)
    assert RemoteHandlerError.status_code == 500  # the instance override does not leak
