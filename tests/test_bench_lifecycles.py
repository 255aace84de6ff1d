"""The benches' placements-and-lifecycles workload: every command is accepted and every
instance goes the whole way, placed to deleted (simulations/lifecycles.py), on every store."""

from __future__ import annotations

from collections import Counter

import pytest
from eventsourcing.utils import get_topic

from adapters.bootstrap import Engine
from engine import id_memory
from engine.domain.instance import Instance
from simulations import lifecycles
from simulations.bench_apply import WORKLOADS, bench_apply

STEP_EVENTS = (Instance.Requested, Instance.Scheduled, Instance.Starting, Instance.Running,
               Instance.Sequenced, Instance.Stopped, Instance.Deleted)


def test_every_instance_is_placed_started_run_stopped_and_deleted(engine: Engine) -> None:
    before = engine.app.recorder.max_notification_id() or 0
    commands, batch = 300, 50
    _, _, accepted = WORKLOADS["lifecycles"](engine, commands, batch, None)
    assert accepted == commands
    instances = commands // lifecycles.STEPS
    kinds = Counter(n.topic for n in engine.app.recorder.select_notifications(
        start=before + 1, limit=100_000))
    counts = {cls: kinds[get_topic(cls)] for cls in STEP_EVENTS}
    assert counts == {Instance.Requested: instances, Instance.Scheduled: instances,
                      Instance.Starting: instances, Instance.Running: instances,
                      Instance.Sequenced: 2 * instances, Instance.Stopped: instances,
                      Instance.Deleted: instances}


def test_the_apply_bench_starts_from_a_cell_that_remembers_earlier_ids(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(id_memory, "SEGMENT", 40)
    report = bench_apply("memory://", commands=50, batch=25, workload="lifecycles",
                         remembered=200)
    assert report["remembered_ids"] == 200 and report["accepted"] == 50
    assert report["cpu_us_per_command"] > 0
