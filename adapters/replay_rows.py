"""Projections rebuilt from the log into a scratch view, compared with the live ones row by
row (`cis audit replay`, docs/design.md §2.11).

The scratch view lives beside the live one: a schema of its own on PostgreSQL (dropped
after), a temporary database file for SQLite, a fresh in-memory view for a memory store.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse, urlunparse

import psycopg
from eventsourcing.persistence import MapperDeserialisationError

from adapters.bootstrap import Engine, all_projections, connect
from projections.runner import position, rebuild
from projections.tables import Key, Row, Table, digest, scan
from projections.views.memory import MemoryView


@dataclass(frozen=True)
class RowDifference:
    table: str
    key: Key
    live: Row | None  # None: the live table lacks the row
    rebuilt: Row | None  # None: the log does not give the row

    def describe(self) -> str:
        where = f"{self.table} {_key_text(self.key)}"
        if self.rebuilt is None:
            return f"{where}: live row the log does not give"
        if self.live is None:
            return f"{where}: missing from the live table"
        changed = [f"{c} live {self.live.get(c)!r}, from the log {self.rebuilt.get(c)!r}"
                   for c in self.rebuilt if self.live.get(c) != self.rebuilt.get(c)]
        return f"{where}: " + "; ".join(changed)


@dataclass
class RowsCompared:
    tables: dict[str, int] = field(default_factory=dict)  # table -> rows rebuilt from the log
    differences: list[RowDifference] = field(default_factory=list)
    positions: dict[str, tuple[int, int]] = field(default_factory=dict)  # live, rebuilt
    unreadable: str | None = None  # why the log could not be projected

    @property
    def agree(self) -> bool:
        return not self.differences and self.unreadable is None and all(
            a == b for a, b in self.positions.values())


def compare_projections(engine: Engine, progress: Callable[[int], None] | None = None
                        ) -> RowsCompared:
    """Catch the live projections up with the log (as `cis rebuild` does), rebuild every
    projection from the log into a scratch view, and compare each table row by row."""
    result = RowsCompared()
    with scratch_view(engine) as view:
        projections = all_projections()  # fresh ones: the live ones keep per-view state
        try:
            engine.update_projections()
            rebuild(engine.app, projections, view, progress)
        except MapperDeserialisationError as exc:  # a stored event that does not decode
            result.unreadable = str(exc)
            return result
        for live_projection, projection in zip(engine.projections, projections, strict=True):
            result.positions[projection.name] = (position(engine.view, live_projection),
                                                 position(view, projection))
            for table in projection.tables:
                count, rebuilt_digest = digest(view, table)
                result.tables[table.name] = count
                if digest(engine.view, table) != (count, rebuilt_digest):
                    # Only a table that differs is read whole, to name its rows.
                    result.differences.extend(_differences(table, engine.view, view))
    return result


def _differences(table: Table, live: Any, rebuilt: Any) -> list[RowDifference]:
    live_rows = {table.key_of(r): r for r in scan(live, table)}
    rebuilt_rows = {table.key_of(r): r for r in scan(rebuilt, table)}
    found = []
    for key in sorted(live_rows.keys() | rebuilt_rows.keys(), key=repr):
        before, after = live_rows.get(key), rebuilt_rows.get(key)
        if before != after:
            found.append(RowDifference(table.name, key, before, after))
    return found


def _key_text(key: Key) -> str:
    return "(" + ", ".join(str(k) for k in key) + ")"


@contextmanager
def scratch_view(engine: Engine) -> Iterator[Any]:
    """An empty view of the live store's kind, gone afterwards."""
    store = engine.store
    if store.kind == "memory":
        yield MemoryView()
        return
    if store.kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="cis-replay-") as directory, \
                connect(f"sqlite:///{directory}/scratch.db") as scratch:
            yield scratch.view
        return
    schema = f"cis_replay_{uuid.uuid4().hex[:12]}"
    env = store.env
    with psycopg.connect(dbname=env["POSTGRES_DBNAME"], host=env["POSTGRES_HOST"],
                         port=env["POSTGRES_PORT"], user=env["POSTGRES_USER"],
                         password=env["POSTGRES_PASSWORD"], autocommit=True,
                         connect_timeout=int(env["POSTGRES_CONNECT_TIMEOUT"])) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        try:
            with connect(_with_schema(store.url, schema)) as scratch:
                yield scratch.view
        finally:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def _with_schema(url: str, schema: str) -> str:
    parts = urlparse(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    return urlunparse(parts._replace(query=urlencode({**query, "schema": schema})))
