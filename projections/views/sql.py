"""SQL views for SQLite and PostgreSQL: the same statements, two placeholder styles."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import psycopg
from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteTrackingRecorder

from projections.tables import Key, Row, Table

SQL_TYPES = {
    "sqlite": {"text": "TEXT", "int": "INTEGER", "numeric": "TEXT"},
    "postgres": {"text": "text", "int": "bigint", "numeric": "numeric"},
}
KEYS_PER_SELECT = 500  # SQLite: a select with this many OR-ed keys
KEYS_PER_ARRAY = 20_000  # PostgreSQL: keys per select, one array per key column
# PostgreSQL: from this many rows, upserts go through COPY into a temporary table (2-4x
# faster than arrays, whose items psycopg dumps one by one in Python); fewer rows go as one
# array statement (a COPY costs two more round trips).
COPY_AT_LEAST = 100


class SqlRows:
    """Statements for one dialect; `qualify` names a table (with its schema on PostgreSQL)."""

    def __init__(self, dialect: str, schema: str | None):
        self.dialect = dialect
        self.mark = "?" if dialect == "sqlite" else "%s"
        self.schema = schema

    def qualify(self, name: str) -> str:
        return f'"{self.schema}"."{name}"' if self.schema else f'"{name}"'

    def create(self, table: Table) -> str:
        types = SQL_TYPES[self.dialect]
        cols = ", ".join(f'"{c}" {types[t]}' for c, t in table.columns.items())
        key = ", ".join(f'"{k}"' for k in table.key)
        return f"CREATE TABLE IF NOT EXISTS {self.qualify(table.name)} ({cols}, " \
               f"PRIMARY KEY ({key}))"

    def upsert(self, table: Table) -> str:
        cols = list(table.columns)
        names = ", ".join(f'"{c}"' for c in cols)
        marks = ", ".join(self.mark for _ in cols)
        key = ", ".join(f'"{k}"' for k in table.key)
        updates = ", ".join(f'"{c}" = excluded."{c}"' for c in cols if c not in table.key)
        return (f"INSERT INTO {self.qualify(table.name)} ({names}) VALUES ({marks}) "
                f"ON CONFLICT ({key}) DO UPDATE SET {updates}")

    def upsert_arrays(self, table: Table) -> str:
        """PostgreSQL: many rows in one statement, one array per column (a row-at-a-time
        executemany cost ~50 µs a row)."""
        types = SQL_TYPES[self.dialect]
        cols = list(table.columns)
        names = ", ".join(f'"{c}"' for c in cols)
        arrays = ", ".join(f"{self.mark}::{types[table.columns[c]]}[]" for c in cols)
        key = ", ".join(f'"{k}"' for k in table.key)
        updates = ", ".join(f'"{c}" = excluded."{c}"' for c in cols if c not in table.key)
        return (f"INSERT INTO {self.qualify(table.name)} ({names}) SELECT * FROM "
                f"unnest({arrays}) ON CONFLICT ({key}) DO UPDATE SET {updates}")

    def stage(self, table: Table) -> tuple[str, str, str]:
        """PostgreSQL: create a session's staging table for `table` (rows gone at commit),
        COPY rows into it, upsert them from it."""
        staging = f'"stage_{table.name}"'
        cols = ", ".join(f'"{c}"' for c in table.columns)
        key = ", ".join(f'"{k}"' for k in table.key)
        updates = ", ".join(f'"{c}" = excluded."{c}"' for c in table.columns
                            if c not in table.key)
        return (f"CREATE TEMP TABLE IF NOT EXISTS {staging} (LIKE {self.qualify(table.name)})"
                " ON COMMIT DELETE ROWS",
                f"COPY {staging} ({cols}) FROM STDIN",
                f"INSERT INTO {self.qualify(table.name)} ({cols}) SELECT {cols} FROM {staging} "
                f"ON CONFLICT ({key}) DO UPDATE SET {updates}")

    def delete_arrays(self, table: Table) -> str:
        """PostgreSQL: rows whose key is in parallel arrays, deleted in one statement (one a
        row took ~50 µs of client CPU: a rebuild deletes a row per ended instance)."""
        types = SQL_TYPES[self.dialect]
        key = ", ".join(f'"{k}"' for k in table.key)
        arrays = ", ".join(f"{self.mark}::{types[table.columns[k]]}[]" for k in table.key)
        return (f"DELETE FROM {self.qualify(table.name)} WHERE ({key}) IN "
                f"(SELECT * FROM unnest({arrays}))")

    def delete(self, table: Table) -> str:
        cond = " AND ".join(f'"{k}" = {self.mark}' for k in table.key)
        return f"DELETE FROM {self.qualify(table.name)} WHERE {cond}"

    def select_key_arrays(self, table: Table) -> str:
        """PostgreSQL: rows whose key is in parallel arrays, one per key column. One statement
        whatever the number of keys (500 OR-ed keys took the server ~70 ms to plan)."""
        types = SQL_TYPES[self.dialect]
        names = ", ".join(f'"{c}"' for c in table.columns)
        key = ", ".join(f'"{k}"' for k in table.key)
        arrays = ", ".join(f"{self.mark}::{types[table.columns[k]]}[]" for k in table.key)
        return (f"SELECT {names} FROM {self.qualify(table.name)} WHERE ({key}) IN "
                f"(SELECT * FROM unnest({arrays})) ORDER BY {key}")

    def scan(self, table: Table, after: bool) -> str:
        """A page of rows in key order, after a key (a row-value comparison: one index range
        scan, whatever the page's place in the table)."""
        names = ", ".join(f'"{c}"' for c in table.columns)
        key = ", ".join(f'"{k}"' for k in table.key)
        marks = ", ".join(self.mark for _ in table.key)
        sql = f"SELECT {names} FROM {self.qualify(table.name)}"
        if after:
            sql += f" WHERE ({key}) > ({marks})"
        return sql + f" ORDER BY {key} LIMIT {self.mark}"

    def select(self, table: Table, where: Sequence[str] = (), n_keys: int = 0) -> str:
        names = ", ".join(f'"{c}"' for c in table.columns)
        conds = [f'"{c}" = {self.mark}' for c in where]
        if n_keys:
            one = "(" + " AND ".join(f'"{k}" = {self.mark}' for k in table.key) + ")"
            conds.append("(" + " OR ".join([one] * n_keys) + ")")
        sql = f"SELECT {names} FROM {self.qualify(table.name)}"
        if conds:
            sql += " WHERE " + " AND ".join(conds)
        return sql + " ORDER BY " + ", ".join(f'"{k}"' for k in table.key)


def _row(table: Table, values: Sequence[Any] | dict[str, Any]) -> Row:
    if isinstance(values, dict):
        values = [values[c] for c in table.columns]
    row = {}
    for (column, kind), value in zip(table.columns.items(), values, strict=True):
        if kind == "numeric" and value is not None:
            value = str(value) if isinstance(value, Decimal) else value
        row[column] = value
    return row


class _SqlViewMixin:
    """Row storage shared by both SQL views; subclasses supply `_sql` and the tracking."""

    _sql: SqlRows
    datastore: Any

    def create(self, tables: Sequence[Table]) -> None:
        with self.datastore.transaction(commit=True) as cursor:
            for table in tables:
                cursor.execute(self._sql.create(table))

    def drop(self, tables: Sequence[Table], tracking_name: str) -> None:
        with self.datastore.transaction(commit=True) as cursor:
            for table in tables:
                cursor.execute(f"DROP TABLE IF EXISTS {self._sql.qualify(table.name)}")
            cursor.execute(f"DELETE FROM {self._sql.qualify(self._tracking_table())} "
                           f"WHERE application_name = {self._sql.mark}", (tracking_name,))

    def load(self, table: Table, keys: Iterable[Key]) -> dict[Key, Row]:
        keys = list(keys)
        found: dict[Key, Row] = {}
        arrays = self._sql.dialect == "postgres"
        per_select = KEYS_PER_ARRAY if arrays else KEYS_PER_SELECT
        with self.datastore.transaction(commit=False) as cursor:
            for i in range(0, len(keys), per_select):
                chunk = keys[i:i + per_select]
                if arrays:
                    cursor.execute(self._sql.select_key_arrays(table),
                                   [list(column) for column in zip(*chunk, strict=True)],
                                   binary=True)
                else:
                    cursor.execute(self._sql.select(table, n_keys=len(chunk)),
                                   [v for key in chunk for v in key])
                for values in cursor.fetchall():
                    row = _row(table, values)
                    found[table.key_of(row)] = row
        return found

    def commit(self, tables: Sequence[Table], changed: dict[str, dict[Key, Row | None]],
               tracking: Tracking) -> None:
        with self.datastore.transaction(commit=True) as cursor:
            for table in tables:
                rows = changed.get(table.name, {})
                upserts = [[row[c] for c in table.columns] for row in rows.values() if row]
                deletes = [list(key) for key, row in rows.items() if row is None]
                if len(upserts) >= COPY_AT_LEAST and self._sql.dialect == "postgres":
                    create, copy_in, merge = self._sql.stage(table)
                    cursor.execute(create)
                    with cursor.copy(copy_in) as copy:
                        for values in upserts:
                            copy.write_row(values)
                    cursor.execute(merge)
                elif upserts and self._sql.dialect == "postgres":
                    cursor.execute(self._sql.upsert_arrays(table),
                                   [list(column) for column in zip(*upserts, strict=True)],
                                   binary=True)  # as text, each item is escaped: 15x slower
                elif upserts:
                    cursor.executemany(self._sql.upsert(table), upserts)
                if deletes and self._sql.dialect == "postgres":
                    cursor.execute(self._sql.delete_arrays(table),
                                   [list(column) for column in zip(*deletes, strict=True)],
                                   binary=True)
                elif deletes:
                    cursor.executemany(self._sql.delete(table), deletes)
            self._insert_tracking(cursor, tracking)  # type: ignore[attr-defined]

    def select(self, table: Table, where: dict[str, object] | None = None) -> list[Row]:
        where = where or {}
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(self._sql.select(table, where=list(where)), list(where.values()))
            return [_row(table, values) for values in cursor.fetchall()]

    def scan(self, table: Table, after: Key | None, limit: int) -> list[Row]:
        """Up to `limit` rows in key order, after the key `after` (None: from the first)."""
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(self._sql.scan(table, after is not None), [*(after or ()), limit])
            return [_row(table, values) for values in cursor.fetchall()]

    def put(self, table: Table, rows: Sequence[Row]) -> None:
        """Upsert rows outside any projection (no tracking): the API's tokens."""
        with self.datastore.transaction(commit=True) as cursor:
            cursor.executemany(self._sql.upsert(table),
                               [[row[c] for c in table.columns] for row in rows])

    @contextmanager
    def snapshot(self) -> Iterator[CursorView]:
        """One read-only transaction: every select in it sees the same committed state
        (SQLite in WAL mode: from its first read; PostgreSQL: REPEATABLE READ)."""
        if self._sql.dialect == "sqlite":
            with self.datastore.transaction(commit=False) as cursor:
                yield CursorView(self, cursor)
            return
        with self.datastore.get_connection() as conn:
            # One round trip: psycopg then begins with "BEGIN ISOLATION LEVEL REPEATABLE
            # READ READ ONLY". Reset after: the connection goes back to a shared pool.
            conn.isolation_level, conn.read_only = psycopg.IsolationLevel.REPEATABLE_READ, True
            try:
                with conn.transaction(force_rollback=True):
                    yield CursorView(self, conn.cursor())
            finally:
                conn.isolation_level, conn.read_only = None, None

    def _tracking_table(self) -> str:
        raise NotImplementedError


class CursorView:
    """Selects inside one open transaction of a SQL view."""

    def __init__(self, view: _SqlViewMixin, cursor: Any):
        self._view, self._cursor = view, cursor

    def select(self, table: Table, where: dict[str, object] | None = None) -> list[Row]:
        where = where or {}
        self._cursor.execute(self._view._sql.select(table, where=list(where)),
                             list(where.values()))
        return [_row(table, values) for values in self._cursor.fetchall()]

    def max_tracking_id(self, name: str) -> int | None:
        return self._view._max_tracking_id(name, self._cursor)  # type: ignore[attr-defined]

    def positions(self, names: Sequence[str]) -> dict[str, int]:
        """Each named projection's position (0 if none yet), in one statement."""
        sql = self._view._sql
        self._cursor.execute(
            f"SELECT application_name AS name, MAX(notification_id) AS position FROM "
            f"{sql.qualify(self._view._tracking_table())} WHERE application_name IN "
            f"({', '.join(sql.mark for _ in names)}) GROUP BY application_name", list(names))
        found = {row["name"]: row["position"] for row in self._cursor.fetchall()}
        return {n: found.get(n) or 0 for n in names}


class SQLiteView(_SqlViewMixin, SQLiteTrackingRecorder):
    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._sql = SqlRows("sqlite", None)

    def _tracking_table(self) -> str:
        return "tracking"


class PostgresView(_SqlViewMixin, PostgresTrackingRecorder):
    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._sql = SqlRows("postgres", self.datastore.schema)

    def _tracking_table(self) -> str:
        return self.tracking_table_name
