"""The base of our aggregates: created at the time a command speaks of, never the wall clock."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Self

from eventsourcing.domain import Aggregate, CanInitAggregate

_CREATED: dict[type, type] = {}  # aggregate class -> its "created" event class


class Recorded(Aggregate):
    @classmethod
    def create(cls, at: datetime, **kwargs: Any) -> Self:
        created = _CREATED.get(cls)
        if created is None:
            # Each of our aggregates declares exactly one "created" event class.
            created = _CREATED[cls] = next(
                v for v in vars(cls).values()
                if isinstance(v, type) and issubclass(v, CanInitAggregate))
        return cls._create(created, timestamp=at, **kwargs)
