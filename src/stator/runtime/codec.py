"""msgpack encoding of request-plane payloads: one encoder, one cached decoder per type."""

from __future__ import annotations

from typing import Any

import msgspec

from stator import errors
from stator.errors import InvalidRequestError, RemoteHandlerError, StatorError


class Codec:
    """Encodes any msgspec-supported value; decodes into a requested type (``None``: Any).

    Decoders are built once per type and reused (building one costs far more than a decode).
    """

    def __init__(self) -> None:
        self._encoder = msgspec.msgpack.Encoder()
        self._decoders: dict[Any, msgspec.msgpack.Decoder[Any]] = {}

    def encode(self, value: object) -> bytes:
        """msgpack bytes of ``value`` (Structs, dicts, lists, str, int, float, bytes, None ...).

        Raises:
            TypeError: ``value`` is not msgpack-encodable.
        """
        return self._encoder.encode(value)

    def decoder(self, type_: Any = None) -> msgspec.msgpack.Decoder[Any]:
        """The cached decoder for ``type_`` (``None``: plain Python objects)."""
        decoder = self._decoders.get(type_)
        if decoder is None:
            decoder = msgspec.msgpack.Decoder(Any if type_ is None else type_)
            self._decoders[type_] = decoder
        return decoder

    def decode_request(self, payload: bytes, type_: Any = None) -> Any:
        """Decode a request payload.

        Raises:
            InvalidRequestError: the payload does not decode into ``type_`` (the message says why).
        """
        try:
            return self.decoder(type_).decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            raise InvalidRequestError(f"bad request payload: {e}") from e


def with_remote_status(error: RemoteHandlerError) -> RemoteHandlerError:
    """Give ``error`` the HTTP status of the remote exception when it is a stator error class.

    A handler that raises e.g. ``InvalidRequestError`` reaches the caller as a
    ``RemoteHandlerError`` with ``remote_type="InvalidRequestError"`` and ``status_code=400``.
    """
    cls = getattr(errors, error.remote_type, None)
    if isinstance(cls, type) and issubclass(cls, StatorError):
        error.status_code = cls.status_code
    return error
