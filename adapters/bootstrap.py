"""The composition root: one store URL in, a wired engine out."""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from eventsourcing.persistence import Tracking

from adapters.snapshots import snapshot_store
from adapters.stores import BadConfiguration, Store, parse_store
from adapters.tokens import TOKENS
from engine.application import CisApplication
from engine.limits import EngineLimits
from engine.processor import SNAPSHOT_EVERY, CommandProcessor, Item
from projections.instances import InstancesProjection
from projections.invoices import InvoicesProjection
from projections.nodes import NodesProjection
from projections.projection import RowProjection
from projections.runner import catch_up, rebuild
from projections.usage import UsageProjection
from projections.views.memory import MemoryView
from projections.views.sql import PostgresView, SQLiteView
from schemas.commands import Role
from schemas.outcomes import Outcome

VIEW_CLASSES: dict[str, type] = {"memory": MemoryView, "sqlite": SQLiteView,
                                 "postgres": PostgresView}


def all_projections() -> list[RowProjection]:
    return [InstancesProjection(), UsageProjection(), InvoicesProjection(), NodesProjection()]


@dataclass
class Engine:
    store: Store
    app: CisApplication
    processor: CommandProcessor
    view: Any
    projections: list[RowProjection] = field(default_factory=all_projections)

    def apply(self, items: Sequence[Item], tracking: Tracking | None = None,
              role: Role | None = None) -> list[Outcome]:
        return self.processor.process(items, tracking, role)

    def update_projections(self, progress: Callable[[int], None] | None = None) -> int:
        return catch_up(self.app, self.projections, self.view, progress)

    def rebuild_projections(self, progress: Callable[[int], None] | None = None) -> int:
        return rebuild(self.app, self.projections, self.view, progress)

    def projection(self, name: str) -> RowProjection:
        return next(p for p in self.projections if p.name == name)

    def close(self) -> None:
        """Snapshot what changed since the last snapshots (a clean shutdown), then close."""
        try:
            if self.store.kind != "memory":  # a memory store ends with the process
                self.processor.save_snapshots()
        finally:
            self.app.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def tune_gc() -> None:
    """Collect cycles after 50,000 new objects instead of 700. The writer keeps its whole
    world in memory; with the default thresholds the collector re-scans that heap so often
    that it took a third of the time of applying commands (`python -m simulations.bench_apply`).
    The engine makes few reference cycles, so memory barely changes."""
    gc.set_threshold(50_000, 20, 100)


# Any constant: the key of the PostgreSQL advisory lock that start-ups take to create tables.
DDL_LOCK_KEY = 0x636973_0001


@contextmanager
def _one_creator(store: Store) -> Iterator[None]:
    """Create tables one process at a time. Concurrent `CREATE … IF NOT EXISTS` (and the
    library's `CREATE OR REPLACE`) on PostgreSQL can fail with "tuple concurrently updated"
    or a duplicate key in the catalog; a session advisory lock serialises start-ups."""
    if store.kind != "postgres":
        yield  # SQLite serialises writers itself (SQLITE_LOCK_TIMEOUT); memory is private
        return
    env = store.env
    with psycopg.connect(dbname=env["POSTGRES_DBNAME"], host=env["POSTGRES_HOST"],
                         port=env["POSTGRES_PORT"], user=env["POSTGRES_USER"],
                         password=env["POSTGRES_PASSWORD"], autocommit=True,
                         connect_timeout=int(env["POSTGRES_CONNECT_TIMEOUT"])) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (DDL_LOCK_KEY,))
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (DDL_LOCK_KEY,))


LIMIT_VARIABLES = {"CIS_MAX_SKEW_SECONDS": "max_skew_seconds",
                   "CIS_MAX_TENANT_SKEW_SECONDS": "max_tenant_skew_seconds",
                   "CIS_MAX_TICK_STEP_SECONDS": "max_tick_step_seconds",
                   "CIS_MAX_PERIODS_PER_TICK": "max_periods_per_tick",
                   "CIS_PLACEMENT_WINDOW": "placement_window",
                   "CIS_COMMAND_ID_RETENTION_SECONDS": "command_id_retention_seconds"}
# No limit is worth more than a century: larger values would overflow time arithmetic.
MOST_SECONDS = 100 * 365 * 86_400


def engine_limits(env: Mapping[str, str]) -> EngineLimits:
    """The engine's limits, each overridable by an environment variable (README: Security)."""
    values: dict[str, int] = {}
    for variable, name in LIMIT_VARIABLES.items():
        if variable in env:
            text = env[variable]
            if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MOST_SECONDS:
                raise BadConfiguration(f"{variable}={text!r}: give a whole number, at least 1 "
                                       f"and at most {MOST_SECONDS}")
            values[name] = int(text)
    return EngineLimits(**values)


def snapshot_every(env: Mapping[str, str]) -> int:
    """Events of a cell between its snapshots (CIS_SNAPSHOT_EVERY)."""
    text = env.get("CIS_SNAPSHOT_EVERY", str(SNAPSHOT_EVERY))
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 10**9:
        raise BadConfiguration(f"CIS_SNAPSHOT_EVERY={text!r}: give a whole number of events, "
                               "at least 1")
    return int(text)


def connect(url: str, extra_env: dict[str, str] | None = None) -> Engine:
    store = parse_store(url)
    with _one_creator(store):
        app = CisApplication(env={**store.env, **(extra_env or {})})
        try:
            view = app.factory.tracking_recorder(VIEW_CLASSES[store.kind])
            snapshots, cells, existing = snapshot_store(app, store.kind)
            processor = CommandProcessor(app, engine_limits(os.environ), snapshots,
                                         snapshot_every(os.environ), cells, existing)
            engine = Engine(store, app, processor, view)
            view.create([t for p in engine.projections for t in p.tables] + [TOKENS])
        except BaseException:
            app.close()
            raise
    return engine
