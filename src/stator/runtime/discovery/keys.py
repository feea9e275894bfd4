"""The key layout in discovery (DESIGN.md, "Discovery")."""

from __future__ import annotations

from stator.runtime.address import EndpointAddress

INSTANCES_ROOT = "v1/instances"
MODEL_CARDS_ROOT = "v1/mdc"
EVENT_CHANNELS_ROOT = "v1/event_channels"


def instance_key(address: EndpointAddress, instance_id: int) -> str:
    """``v1/instances/{ns}/{comp}/{ep}/{instance_id}`` → how to reach the instance."""
    return f"{INSTANCES_ROOT}/{address.path}/{instance_id:x}"


def instances_prefix(address: EndpointAddress) -> str:
    """Prefix of every instance of one endpoint (trailing ``/`` included)."""
    return f"{INSTANCES_ROOT}/{address.path}/"


def model_card_key(address: EndpointAddress, instance_id: int) -> str:
    """``v1/mdc/{ns}/{comp}/{ep}/{instance_id}`` → the instance's model card."""
    return f"{MODEL_CARDS_ROOT}/{address.path}/{instance_id:x}"


def model_cards_prefix(namespace: str | None = None) -> str:
    """Prefix of every model card (of one namespace, or of all)."""
    return f"{MODEL_CARDS_ROOT}/" if namespace is None else f"{MODEL_CARDS_ROOT}/{namespace}/"


def event_channel_key(namespace: str, component: str, topic: str, instance_id: int) -> str:
    """``v1/event_channels/{ns}/{comp}/{topic}/{instance_id}`` → a publisher's address."""
    return f"{EVENT_CHANNELS_ROOT}/{namespace}/{component}/{topic}/{instance_id:x}"


def event_channels_prefix(namespace: str, component: str, topic: str) -> str:
    """Prefix of every publisher of ``topic`` in one component."""
    return f"{EVENT_CHANNELS_ROOT}/{namespace}/{component}/{topic}/"


def instance_id_from_key(key: str) -> int:
    """The instance id (hex, last path segment) of an instance/mdc/event-channel key.

    Raises:
        ValueError: the last segment is not hex.
    """
    return int(key.rsplit("/", 1)[-1], 16)
