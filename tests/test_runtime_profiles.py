"""Runtime profiles as data: runc, kata (the seed's Clear Containers row) and hyper, with
the seed's start time, image size and memory overhead; a pool may override them. Placement
counts the overhead, Pods name a RuntimeClass that declares it, simulations wait the start."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import kubernetes_validate
import pytest

from adapters.bootstrap import Engine
from adapters.cli import main
from adapters.pods import runtime_classes
from engine.domain.instance import Instance
from engine.policies.runtimes import SEED_PROFILES, RuntimeProfile
from schemas.limits import MAX_RUNTIME_START_MS
from simulations.harness import Harness
from tests import builders as b
from tests.helpers import accepted, instance, one

KUBERNETES = "1.30"
BILLED_MIB = 1024  # b.create's 0.5 vCPU / 1 GiB is a catalogue spec


def test_the_seeds_three_profiles() -> None:
    assert SEED_PROFILES == {
        "runc": RuntimeProfile(start_ms=632, image_mb=0, memory_overhead_mib=15),
        "kata": RuntimeProfile(start_ms=1249, image_mb=62, memory_overhead_mib=136),
        "hyper": RuntimeProfile(start_ms=3256, image_mb=11, memory_overhead_mib=80),
    }


@pytest.mark.parametrize(("runtime", "memory", "cpu"), [("runc", 15, 0), ("kata", 136, 100),
                                                        ("hyper", 80, 100)])
def test_placement_counts_the_runtimes_overhead(engine: Engine, runtime: str, memory: int,
                                                cpu: int) -> None:
    accepted(engine, b.price_book(), b.networks(), b.pool(), b.create("x", runtime=runtime))
    demand = instance(engine, "x").demand
    assert demand["memory_mib"] == BILLED_MIB + memory
    assert demand["millicores"] == 500 + cpu


def test_a_pool_overrides_a_profile(engine: Engine) -> None:
    kata = {"start_ms": 900, "image_mb": 62, "memory_overhead_mib": 200}
    accepted(engine, b.price_book(), b.networks(), b.pool(runtime_profiles={"kata": kata}),
             b.create("k", runtime="kata"), b.create("h", runtime="hyper"))
    assert instance(engine, "k").demand["memory_mib"] == BILLED_MIB + 200
    assert instance(engine, "h").demand["memory_mib"] == BILLED_MIB + 80  # the seed's


def test_profiles_are_bounded_by_named_limits(engine: Engine) -> None:
    too_slow = {"start_ms": MAX_RUNTIME_START_MS + 1, "image_mb": 0, "memory_overhead_mib": 0}
    outcome = one(engine, b.pool(runtime_profiles={"runc": too_slow}))
    assert outcome.status == "rejected"
    assert {r.field for r in outcome.reasons} == {"runtime_profiles.runc.start_ms"}


def test_runtime_classes_declare_the_overhead_and_are_valid() -> None:
    classes = {c["metadata"]["name"]: c for c in runtime_classes()}
    assert set(classes) == {"runc", "kata", "hyper"}
    for runtime_class in classes.values():
        kubernetes_validate.validate(runtime_class, KUBERNETES, strict=True)
    assert classes["kata"]["overhead"]["podFixed"] == {"cpu": "100m", "memory": "136Mi"}
    assert classes["hyper"]["overhead"]["podFixed"] == {"cpu": "100m", "memory": "80Mi"}
    assert classes["runc"]["overhead"]["podFixed"] == {"cpu": "0m", "memory": "15Mi"}


def test_schema_export_writes_the_runtime_classes(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["schema", "export", str(tmp_path)])
    assert done.value.code == 0
    written = sorted(p.name for p in tmp_path.glob("RuntimeClass-*.json"))
    assert written == ["RuntimeClass-hyper.json", "RuntimeClass-kata.json",
                       "RuntimeClass-runc.json"]
    for path in tmp_path.glob("RuntimeClass-*.json"):
        kubernetes_validate.validate(json.loads(path.read_text()), KUBERNETES, strict=True)


@pytest.mark.parametrize("runtime", ["runc", "kata", "hyper"])
def test_simulations_wait_the_runtimes_start(engine: Engine, runtime: str) -> None:
    harness = Harness(engine)
    harness.submit(b.T0, b.price_book())
    harness.submit(b.T0, b.networks())
    harness.submit(b.T0, b.pool(min_nodes=1))
    harness.submit(b.T0 + timedelta(seconds=60), b.create("x", t=60, runtime=runtime))
    harness.run(until=b.T0 + timedelta(seconds=120))
    events = {type(e).__name__: e.timestamp for _, e in engine.app.read()
              if isinstance(e, Instance.Scheduled | Instance.Running)}
    waited = (events["Running"] - events["Scheduled"]).total_seconds()
    # The harness's agent reports starting after 0.3 s, then the sandbox's start.
    assert waited == pytest.approx(0.3 + SEED_PROFILES[runtime].start_ms / 1000)
