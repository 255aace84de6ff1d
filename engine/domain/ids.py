"""Deterministic aggregate ids: replaying the same commands yields the same ids."""

from uuid import UUID, uuid5

NAMESPACE = UUID("6f6b1b8e-5d0c-4c55-9b1e-0c15c1ce0001")


def aggregate_id(kind: str, *parts: str) -> UUID:
    return uuid5(NAMESPACE, ":".join((kind, *parts)))
