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

from adapters.stores import BadConfiguration, Store, parse_store
from adapters.tokens import TOKENS
from engine.application import CisApplication
from engine.limits import EngineLimits
from engine.processor import CommandProcessor, Item
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
                   "CIS_PLACEMENT_WINDOW": "placement_window"}


def engine_limits(env: Mapping[str, str]) -> EngineLimits:
    """The engine's limits, each overridable by an environment variable (README: Security)."""
    values: dict[str, int] = {}
    for variable, name in LIMIT_VARIABLES.items():
        if variable in env:
            text = env[variable]
            if not (text.isascii() and text.isdigit()) or int(text) < 1:
                raise BadConfiguration(f"{variable}={text!r}: give a whole number, at least 1")
            values[name] = int(text)
    return EngineLimits(**values)


def connect(url: str, extra_env: dict[str, str] | None = None) -> Engine:
    store = parse_store(url)
    with _one_creator(store):
        app = CisApplication(env={**store.env, **(extra_env or {})})
        try:
            view = app.factory.tracking_recorder(VIEW_CLASSES[store.kind])
            engine = Engine(store, app, CommandProcessor(app, engine_limits(os.environ)), view)
            view.create([t for p in engine.projections for t in p.tables] + [TOKENS])
        except BaseException:
            app.close()
            raise
    return engine
