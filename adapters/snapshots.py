"""Where snapshots live (docs/design.md §7.3): a table beside the log, one row per cell
(the newest), in the same SQLite file or PostgreSQL schema; the directory of cells, read
through a partial index of the log's cell openings (a scan of the log would grow with it);
and which aggregates exist, one query per batch (§7.4: a name that misses in memory)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent

from engine.application import CisApplication
from engine.processor import CELL_OPENED
from engine.snapshots import MemorySnapshots, Snapshot, SnapshotStore

TABLE = "cis_snapshots"


class SqlSnapshots:
    def __init__(self, app: CisApplication, dialect: str):
        recorder: Any = app.recorder
        self.app = app
        self.datastore = recorder.datastore
        self.dialect = dialect
        self.mark = "?" if dialect == "sqlite" else "%s"
        schema = getattr(self.datastore, "schema", None) if dialect == "postgres" else None
        self.table = f'"{schema}"."{TABLE}"' if schema else f'"{TABLE}"'
        self.events = (f'"{schema}"."{recorder.events_table_name}"' if schema
                       else f'"{recorder.events_table_name}"')
        index = f'"{recorder.events_table_name}_cell_opened"'
        blob = "BLOB" if dialect == "sqlite" else "bytea"
        with self.datastore.transaction(commit=True) as cursor:
            cursor.execute(f"CREATE TABLE IF NOT EXISTS {self.table} (cell TEXT PRIMARY KEY, "
                           f"position BIGINT NOT NULL, format TEXT NOT NULL, "
                           f"digest TEXT NOT NULL, payload {blob} NOT NULL)")
            # Only the openings of cells: a tiny index, whatever the length of the log.
            cursor.execute(f"CREATE INDEX IF NOT EXISTS {index} ON {self.events} (topic) "
                           f"WHERE topic = '{CELL_OPENED[0]}'")

    def load(self, cell: str) -> Snapshot | None:
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(f"SELECT cell, position, format, digest, payload FROM {self.table} "
                           f"WHERE cell = {self.mark}", (cell,))
            row = cursor.fetchone()
        if row is None:
            return None
        values = list(row.values()) if isinstance(row, dict) else list(row)
        return Snapshot(values[0], int(values[1]), values[2], values[3], bytes(values[4]))

    def save(self, snapshot: Snapshot) -> None:
        m = self.mark
        with self.datastore.transaction(commit=True) as cursor:
            # Never replace a newer snapshot with an older one (two writers, one fenced out).
            cursor.execute(
                f"INSERT INTO {self.table} (cell, position, format, digest, payload) "
                f"VALUES ({m}, {m}, {m}, {m}, {m}) ON CONFLICT (cell) DO UPDATE SET "
                "position = excluded.position, format = excluded.format, "
                "digest = excluded.digest, payload = excluded.payload "
                f"WHERE {self.table}.position <= excluded.position",
                (snapshot.cell, snapshot.position, snapshot.format, snapshot.digest,
                 snapshot.payload))

    def existing(self, ids: Collection[UUID]) -> set[UUID]:
        """Which of these aggregates have events in the log (one statement per 500 ids, by
        the events table's primary key)."""
        found: set[UUID] = set()
        wanted = sorted(ids)
        with self.datastore.transaction(commit=False) as cursor:
            for i in range(0, len(wanted), 500):
                chunk = wanted[i:i + 500]
                if self.dialect == "postgres":
                    cursor.execute(f"SELECT DISTINCT originator_id FROM {self.events} "
                                   "WHERE originator_id = ANY(%s)", (chunk,))
                    found.update(UUID(str(_values(r)[0])) for r in cursor.fetchall())
                else:
                    marks = ", ".join("?" * len(chunk))
                    cursor.execute(f"SELECT DISTINCT originator_id FROM {self.events} "
                                   f"WHERE originator_id IN ({marks})", [u.hex for u in chunk])
                    found.update(UUID(_values(r)[0]) for r in cursor.fetchall())
        return found

    def cells(self) -> list[str]:
        """Every cell opened in the log, and every cell with a snapshot."""
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(f"SELECT originator_id, originator_version, topic, state FROM "
                           f"{self.events} WHERE topic = '{CELL_OPENED[0]}'")
            rows = cursor.fetchall()
            cursor.execute(f"SELECT cell FROM {self.table}")
            snapshotted = [_values(r)[0] for r in cursor.fetchall()]
        opened = {self.app.mapper.to_domain_event(StoredEvent(*_values(r))).cell  # type: ignore[attr-defined]
                  for r in rows}
        return sorted(opened | set(snapshotted))


def _values(row: Any) -> list[Any]:
    return list(row.values()) if isinstance(row, dict) else list(row)


class MemoryCells:
    """The memory store's directory of cells: a scan of its (private, short) log."""

    def __init__(self, app: CisApplication, snapshots: MemorySnapshots):
        self.app, self.snapshots = app, snapshots

    def __call__(self) -> Iterator[str]:
        yield from self.snapshots.cells()
        for _, event in self.app.read(topics=CELL_OPENED):
            yield event.cell


def memory_existing(app: CisApplication) -> Callable[[Collection[UUID]], set[UUID]]:
    index = app.recorder._stored_events_index  # type: ignore[attr-defined]
    return lambda ids: {i for i in ids if index.get(str(i))}


def snapshot_store(app: CisApplication, kind: str) -> tuple[SnapshotStore, Any, Any]:
    """The store's snapshots, its directory of cells, and its check of which aggregates
    exist."""
    if kind == "memory":
        memory = MemorySnapshots()
        return memory, MemoryCells(app, memory), memory_existing(app)
    sql = SqlSnapshots(app, kind)
    return sql, sql.cells, sql.existing
