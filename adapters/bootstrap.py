"""The composition root: one store URL in, a wired engine out."""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from eventsourcing.persistence import Tracking

from adapters.stores import Store, parse_store
from engine.application import CisApplication
from engine.processor import CommandProcessor, Item
from projections.instances import InstancesProjection
from projections.invoices import InvoicesProjection
from projections.projection import RowProjection
from projections.runner import catch_up, rebuild
from projections.usage import UsageProjection
from projections.views.memory import MemoryView
from projections.views.sql import PostgresView, SQLiteView
from schemas.outcomes import Outcome

VIEW_CLASSES: dict[str, type] = {"memory": MemoryView, "sqlite": SQLiteView,
                                 "postgres": PostgresView}


def all_projections() -> list[RowProjection]:
    return [InstancesProjection(), UsageProjection(), InvoicesProjection()]


@dataclass
class Engine:
    store: Store
    app: CisApplication
    processor: CommandProcessor
    view: Any
    projections: list[RowProjection] = field(default_factory=all_projections)

    def apply(self, items: Sequence[Item], tracking: Tracking | None = None) -> list[Outcome]:
        return self.processor.process(items, tracking)

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


def connect(url: str, extra_env: dict[str, str] | None = None) -> Engine:
    store = parse_store(url)
    app = CisApplication(env={**store.env, **(extra_env or {})})
    view = app.factory.tracking_recorder(VIEW_CLASSES[store.kind])
    engine = Engine(store, app, CommandProcessor(app), view)
    view.create([t for p in engine.projections for t in p.tables])
    return engine
