"""A row projection: which rows an event touches, and how it changes them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from projections.tables import Key, Rows, Table


class RowProjection(ABC):
    name: ClassVar[str]
    tables: ClassVar[tuple[Table, ...]]
    # The kinds of event that change its rows: the runner decodes and hands it no other.
    events: ClassVar[tuple[type, ...]] = (object,)

    @abstractmethod
    def keys(self, event: Any) -> Iterable[tuple[Table, Key]]:
        """The rows `apply` will read for this event, fetched for a whole batch at once."""

    def creates(self, event: Any) -> Iterable[tuple[Table, Key]]:
        """Rows `apply` always writes for this event without reading them first (a creation):
        a later event of the same batch that reads them needs nothing loaded."""
        return ()

    @abstractmethod
    def apply(self, event: Any, rows: Rows) -> None:
        """Change rows to reflect one event. Pure: no clock, no I/O."""


_UNKNOWN = object()


def kind_among(*kinds: type) -> Callable[[Any], type | None]:
    """The first of `kinds` an event is an instance of (None: none of them), worked out once
    per class of event: `isinstance` on the domain's event classes costs ~0.8 µs (their
    metaclass), and a rebuild asked it about ten times an event."""
    known: dict[type, Any] = {}

    def kind(event: Any) -> type | None:
        cls = type(event)
        found = known.get(cls, _UNKNOWN)
        if found is _UNKNOWN:
            found = known[cls] = next((k for k in kinds if issubclass(cls, k)), None)
        return found  # type: ignore[no-any-return]
    return kind
