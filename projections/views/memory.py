"""In-memory view (simulations and tests)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

from eventsourcing.persistence import Tracking
from eventsourcing.popo import POPOTrackingRecorder

from projections.tables import Key, Row, Table


class MemoryView(POPOTrackingRecorder):
    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, dict[Key, Row]] = {}

    def create(self, tables: Sequence[Table]) -> None:
        for table in tables:
            self.tables.setdefault(table.name, {})

    def drop(self, tables: Sequence[Table], tracking_name: str) -> None:
        with self._database_lock:
            for table in tables:
                self.tables.pop(table.name, None)
            self._max_tracking_ids.pop(tracking_name, None)

    def load(self, table: Table, keys: Iterable[Key]) -> dict[Key, Row]:
        rows = self.tables.get(table.name, {})
        return {k: dict(rows[k]) for k in keys if k in rows}

    def commit(self, tables: Sequence[Table], changed: dict[str, dict[Key, Row | None]],
               tracking: Tracking) -> None:
        with self._database_lock:
            self._assert_tracking_uniqueness(tracking)
            for table in tables:
                rows = self.tables.setdefault(table.name, {})
                for key, row in changed.get(table.name, {}).items():
                    if row is None:
                        rows.pop(key, None)
                    else:
                        rows[key] = dict(row)
            self._insert_tracking(tracking)

    def put(self, table: Table, rows: Sequence[Row]) -> None:
        """Upsert rows outside any projection (no tracking): the API's tokens."""
        with self._database_lock:
            stored = self.tables.setdefault(table.name, {})
            for row in rows:
                stored[table.key_of(row)] = dict(row)

    def positions(self, names: Sequence[str]) -> dict[str, int]:
        return {n: self.max_tracking_id(n) or 0 for n in names}

    @contextmanager
    def snapshot(self) -> Iterator[MemoryView]:
        # One process, and nothing serves a memory store over HTTP: reads go straight in.
        yield self

    def scan(self, table: Table, after: Key | None, limit: int) -> list[Row]:
        """Up to `limit` rows in key order, after the key `after` (None: from the first)."""
        rows = self.tables.get(table.name, {})
        keys = sorted(k for k in rows if after is None or k > after)[:limit]
        return [dict(rows[k]) for k in keys]

    def select(self, table: Table, where: dict[str, object] | None = None) -> list[Row]:
        rows = self.tables.get(table.name, {})
        conditions = (where or {}).items()
        # Filter, then sort only what matched (in key order, like the SQL views).
        matched = [(k, r) for k, r in rows.items() if all(r.get(c) == v for c, v in conditions)]
        return [dict(r) for _, r in sorted(matched, key=lambda kr: kr[0])]
