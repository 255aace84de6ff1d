"""Invariant 1: projections are caches; replaying the log rebuilds them exactly."""

from __future__ import annotations

from datetime import timedelta

from adapters import queries
from adapters.bootstrap import Engine, connect
from adapters.projector import projector_process
from projections.instances import INSTANCES
from projections.usage import USAGE, USAGE_INSTANCES
from simulations import workloads
from tests.helpers import simulate


def _dump(engine: Engine) -> dict[str, list[dict]]:
    return {t.name: engine.view.select(t) for p in engine.projections for t in p.tables}


def test_rebuild_reproduces_identical_rows(engine: Engine) -> None:
    simulate(engine, 25, seed=3, hours=12)
    engine.update_projections()
    before = _dump(engine)
    assert len(before["instances"]) > 0 and len(before[USAGE_INSTANCES.name]) == len(
        before["instances"])
    usage_before = queries.usage(engine, "acme", workloads.DAY_START + timedelta(hours=12))
    engine.rebuild_projections()
    assert _dump(engine) == before
    assert queries.usage(engine, "acme", workloads.DAY_START + timedelta(hours=12)) \
        == usage_before


def test_projection_is_incremental_and_tracked(engine: Engine) -> None:
    for command in workloads.setup():
        engine.apply([__import__("json").dumps(command)])
    assert engine.update_projections() > 0
    assert engine.update_projections() == 0  # nothing new: the position is tracked
    assert engine.view.select(INSTANCES) == [] and engine.view.select(USAGE) == []


def test_projector_process_follows_the_log_and_stops_with_a_last_catch_up(
        store_url: str) -> None:
    if store_url == "memory://":
        return  # the worker is another process: a memory store is not shared
    with connect(store_url) as engine:
        simulate(engine, 10, seed=5, hours=6)
        projector = projector_process(store_url, interval_s=0.1)
        projector.start()
        assert projector.stop() == 0
        # The worker wrote the rows: here nothing is left to project, and they are what a
        # rebuild from the log gives.
        assert engine.update_projections() == 0
        rows = _dump(engine)
        assert rows["instances"]
        engine.rebuild_projections()
        assert _dump(engine) == rows
