"""Wire format of the ``nats`` event plane (pure functions, no sockets).

A topic of a component is the subject ``{namespace}.{component}.{topic}``, each part sanitised
to one NATS token (characters outside ``[A-Za-z0-9_-]`` become ``_``). A message body is the
publisher's instance id as 8 bytes big-endian followed by the payload unchanged: the same
layout as the zmq plane's frames (``zmq_wire``), in one body because NATS messages have one.
"""

from __future__ import annotations

import re
from typing import Final

INSTANCE_ID_BYTES: Final = 8
"""Width of the instance-id prefix (unsigned, big-endian)."""

_UNSAFE: Final = re.compile(r"[^A-Za-z0-9_-]")


def subject_token(part: str) -> str:
    """``part`` as one NATS subject token (``.``, ``*``, ``>``, spaces ... become ``_``).

    Raises:
        ValueError: ``part`` is empty.
    """
    if not part:
        raise ValueError("an event-plane subject part may not be empty")
    return _UNSAFE.sub("_", part)


def event_subject(namespace: str, component: str, topic: str) -> str:
    """``{namespace}.{component}.{topic}``, sanitised (see ``subject_token``)."""
    return ".".join(subject_token(p) for p in (namespace, component, topic))


def encode_event(instance_id: int, payload: bytes) -> bytes:
    """8-byte big-endian ``instance_id`` + ``payload``.

    Raises:
        ValueError: ``instance_id`` is negative or does not fit in 64 bits.
    """
    if not 0 <= instance_id < 2 ** (8 * INSTANCE_ID_BYTES):
        raise ValueError(f"instance id {instance_id} does not fit in an unsigned 64-bit prefix")
    return instance_id.to_bytes(INSTANCE_ID_BYTES, "big") + payload


def decode_event(body: bytes) -> tuple[int, bytes] | None:
    """``(instance_id, payload)``, or ``None`` if the body is too short to hold the id."""
    if len(body) < INSTANCE_ID_BYTES:
        return None
    return int.from_bytes(body[:INSTANCE_ID_BYTES], "big"), body[INSTANCE_ID_BYTES:]
