"""Read-model tables: plain rows with a key, the same shape in every store."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Protocol

import orjson

Row = dict[str, Any]
Key = tuple[Any, ...]


@dataclass(frozen=True, eq=False)
class Table:
    name: str
    key: tuple[str, ...]
    columns: dict[str, str]  # column -> "text" | "int" | "numeric"

    def __post_init__(self) -> None:
        # A row's key, read by one C call (a rebuild reads ~3 keys an event).
        get = itemgetter(*self.key)
        object.__setattr__(self, "_key_of", get if len(self.key) > 1 else
                           (lambda row: (get(row),)))

    def key_of(self, row: Row) -> Key:
        return self._key_of(row)  # type: ignore[attr-defined,no-any-return]


@dataclass
class Rows:
    """A batch's working set: rows loaded from the view, and the ones it changed."""

    loaded: dict[str, dict[Key, Row]]
    changed: dict[str, dict[Key, Row | None]] = field(default_factory=dict)

    # (Called a few times an event in a rebuild: no dict is made just to be looked up in.)
    def get(self, table: Table, key: Key) -> Row | None:
        changed = self.changed.get(table.name)
        if changed is not None and key in changed:
            return changed[key]
        loaded = self.loaded.get(table.name)
        row = loaded.get(key) if loaded is not None else None
        return dict(row) if row is not None else None

    def put(self, table: Table, row: Row) -> None:
        # (Half a million calls in a one-day rebuild: no helper calls in between.)
        changed = self.changed.get(table.name)
        if changed is None:
            changed = self.changed[table.name] = {}
        changed[table._key_of(row)] = row  # type: ignore[attr-defined]

    def delete(self, table: Table, key: Key) -> None:
        self._changed(table)[key] = None

    def _changed(self, table: Table) -> dict[Key, Row | None]:
        changed = self.changed.get(table.name)
        if changed is None:
            changed = self.changed[table.name] = {}
        return changed


class Scannable(Protocol):
    def scan(self, table: Table, after: Key | None, limit: int) -> list[Row]: ...


SCAN_PAGE = 5000


def scan(view: Scannable, table: Table, page: int = SCAN_PAGE) -> Iterator[Row]:
    """Every row of a table in key order, a page at a time: memory holds one page, however
    long the table."""
    after: Key | None = None
    while rows := view.scan(table, after, page):
        yield from rows
        after = table.key_of(rows[-1])


def digest(view: Scannable, table: Table, page: int = SCAN_PAGE) -> tuple[int, str]:
    """How many rows a table holds, and a SHA-256 of them in key order: two tables with the
    same rows have the same digest, and comparing them needs neither in memory."""
    sha = hashlib.sha256()
    count = 0
    for row in scan(view, table, page):
        sha.update(orjson.dumps([row[c] for c in table.columns], default=str))
        sha.update(b"\n")
        count += 1
    return count, sha.hexdigest()
