"""``dyn://namespace.component.endpoint`` addresses and model-specific endpoint names.

Names follow NVIDIA Dynamo: default namespace ``dynamo``; an aggregated worker serves
``generate_{slug}_{hash8}`` (DESIGN.md, "Model-specific endpoints").
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from stator.errors import AddressError

SCHEME = "dyn://"
DEFAULT_NAMESPACE = "dynamo"
_PART = re.compile(r"^[A-Za-z0-9_-]+$")
_SLUG_UNSAFE = re.compile(r"[^a-z0-9_-]")
_PART_NAMES = ("namespace", "component", "endpoint")


@dataclass(frozen=True, slots=True)
class EndpointAddress:
    """A fully qualified endpoint: ``namespace.component.endpoint``."""

    namespace: str
    component: str
    endpoint: str

    @classmethod
    def parse(cls, text: str) -> EndpointAddress:
        """Parse ``dyn://ns.comp.ep`` or ``ns.comp.ep``.

        Raises:
            AddressError: naming the missing or malformed part (namespace, component, endpoint).
        """
        body = text[len(SCHEME) :] if text.startswith(SCHEME) else text
        if "://" in body:
            raise AddressError(f"address {text!r}: scheme must be {SCHEME!r}", param="scheme")
        parts = body.split(".")
        if len(parts) != 3:
            raise AddressError(
                f"address {text!r}: expected namespace.component.endpoint, got {len(parts)} "
                f"part(s)",
                param=_PART_NAMES[min(len(parts), 3) - 1] if parts else "namespace",
            )
        for name, value in zip(_PART_NAMES, parts, strict=True):
            _check_part(text, name, value)
        return cls(*parts)

    def __str__(self) -> str:
        return f"{SCHEME}{self.namespace}.{self.component}.{self.endpoint}"

    @property
    def path(self) -> str:
        """``ns/comp/ep``: the key fragment used under discovery prefixes."""
        return f"{self.namespace}/{self.component}/{self.endpoint}"


def _check_part(text: str, name: str, value: str) -> None:
    if not value:
        raise AddressError(f"address {text!r}: {name} is empty", param=name)
    if not _PART.match(value):
        raise AddressError(
            f"address {text!r}: {name} {value!r} may only hold letters, digits, '_' and '-'",
            param=name,
        )


def model_endpoint_name(model_name: str, base: str = "generate") -> str:
    """Model-specific endpoint name ``{base}_{slug}_{hash8}``.

    ``slug``: the first 40 characters of ``model_name`` lower-cased, every character outside
    ``[a-z0-9_-]`` replaced by ``_``; ``hash8``: first 8 hex digits of sha256(``model_name``).
    Example: ``Qwen/Qwen2.5-7B-Instruct`` → ``generate_qwen_qwen2_5-7b-instruct_0311af13``.
    """
    slug = _SLUG_UNSAFE.sub("_", model_name[:40].lower())
    hash8 = hashlib.sha256(model_name.encode()).hexdigest()[:8]
    return f"{base}_{slug}_{hash8}"
