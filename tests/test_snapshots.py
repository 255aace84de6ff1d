"""Start-up follows what is live (docs/design.md §7): a cell starts from its newest snapshot
plus the log's tail and decides exactly as a start from zero; a snapshot that cannot be
trusted is never used; deleted instances and gone nodes leave memory without changing any
decision; command ids are remembered for a window, and older commands are refused."""

from __future__ import annotations

import io
import logging
import os
import pickle
import zlib
from dataclasses import replace

import pytest

from adapters.bootstrap import connect
from engine.domain.instance import Instance
from engine.snapshots import Snapshot, freeze, thaw
from simulations.workloads import simulate
from tests import builders as b
from tests.helpers import accepted, one, run
from tests.test_determinism import _domain_events, _recording

DAY = 86_400


def _day_of_commands() -> tuple[list[str], list[tuple[str, int, str, bytes]]]:
    with connect("memory://") as first:
        commands = _recording(first)
        simulate(first, 16, seed=5, hours=8, tick_every_s=600)
        return commands, _domain_events(first)


def test_a_start_from_a_snapshot_decides_as_a_start_from_zero(store_url: str) -> None:
    commands, expected_events = _day_of_commands()
    with connect("memory://") as once:
        in_one_run = [o.to_json() for o in once.apply(commands)]
    with connect(store_url) as restarted:
        processor = restarted.processor
        from_snapshots = []
        for i, command in enumerate(commands):
            if i % 5 == 0:
                processor.save_snapshots()  # a snapshot, then a tail of up to 4 commands
            processor.forget()
            from_snapshots += [o.to_json() for o in restarted.apply([command])]
        assert from_snapshots == in_one_run
        assert _domain_events(restarted) == expected_events
        assert processor.snapshots is not None and processor.snapshots.load(b.CELL)


def test_start_up_reads_the_snapshot_and_only_the_tail(store_url: str,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    commands, _ = _day_of_commands()
    with connect(store_url) as engine:
        engine.apply(commands[:-3])
        engine.processor.save_snapshots()
        engine.apply(commands[-3:])
        engine.processor.forget()
        with caplog.at_level(logging.INFO, logger="engine.processor"):
            engine.processor.warm()
    loaded = [r.getMessage() for r in caplog.records if "loaded" in r.getMessage()]
    assert loaded and "1 snapshot(s)" in loaded[-1]
    replayed = int(loaded[-1].split("snapshot(s), ")[1].split(" event")[0])
    assert 0 < replayed < 100  # the tail, not the day


@pytest.mark.parametrize("damage", ["format", "digest", "payload", "other cell"])
def test_a_snapshot_that_cannot_be_trusted_means_a_rebuild(
        store_url: str, damage: str, caplog: pytest.LogCaptureFixture) -> None:
    commands, _ = _day_of_commands()
    with connect("memory://") as clean:
        expected = [o.to_json() for o in clean.apply(commands)]
    with connect(store_url) as engine:
        engine.apply(commands[:-10])
        processor = engine.processor
        assert processor.snapshots is not None
        processor.save_snapshots()
        good = processor.snapshots.load(b.CELL)
        assert good is not None
        bad = {"format": replace(good, format="0:old"),
               "digest": replace(good, digest="0" * 64),
               "payload": replace(good, payload=good.payload[:-7] + b"garbage"),
               "other cell": _of_another_cell(good)}[damage]
        if damage == "payload":  # a matching digest: only unpickling can tell
            import hashlib
            bad = replace(bad, digest=hashlib.sha256(bad.payload).hexdigest())
        processor.snapshots.save(replace(bad, cell=b.CELL))
        processor.forget()
        with caplog.at_level(logging.WARNING, logger="engine.snapshots"):
            rest = [o.to_json() for o in engine.apply(commands[-10:])]
    assert rest == expected[-10:]
    assert any("not used" in r.getMessage() for r in caplog.records)


def _of_another_cell(good: Snapshot) -> Snapshot:
    state = thaw(good, 1)
    assert state is not None
    state.cell = "elsewhere"
    return replace(freeze(state, good.position), cell=good.cell)


def test_a_forged_snapshot_cannot_run_code(tmp_path: os.PathLike[str]) -> None:
    class Boom:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, (f"touch {tmp_path}/pwned",))

    with connect("memory://") as engine:
        accepted(engine, b.price_book())
        good = freeze(engine.processor.world.parts[b.CELL], 1)
    payload = zlib.compress(pickle.dumps(Boom()))
    import hashlib
    forged = replace(good, payload=payload, digest=hashlib.sha256(payload).hexdigest())
    assert thaw(forged, 1) is None
    assert not os.path.exists(f"{tmp_path}/pwned")
    assert thaw(good, 1) is not None
    assert io  # (imported for symmetry with the payload helpers)


def _deleted_instance(engine: object) -> None:
    accepted(engine, b.price_book(), b.networks(), b.pool(min_nodes=1),  # type: ignore[arg-type]
             b.report("ReportNodeReady", 0.5, node_id="general-00001"),
             b.create("web", t=1), b.report("ReportInstanceRunning", 2, instance_id="web"),
             b.tenant("DeleteInstance", "web", 100))


def test_a_deleted_instance_leaves_memory_and_decisions_do_not_change(store_url: str) -> None:
    with connect(store_url) as engine:
        _deleted_instance(engine)
        world = engine.processor.world
        key = (b.CELL, b.ACCOUNT, "web")
        assert key in world.instances
        engine.processor.save_snapshots()
        world.evict(b.CELL)
        assert key not in world.parts[b.CELL].instances
        meter = world.billing.cells[b.CELL]
        # Billed until its month is finalised: packed, out of the meter's dicts.
        assert (b.ACCOUNT, "web") not in meter.instances
        assert [(u.account, u.name) for u in meter.settled] == [(b.ACCOUNT, "web")]
        # What a tenant hears about an evicted instance is what it heard before.
        again = one(engine, b.tenant("DeleteInstance", "web", 200))
        reuse = one(engine, b.create("web", t=201))
        assert again.status == reuse.status == "rejected"
        assert "already deleted" in again.reasons[0].problem
        assert "already exists" in reuse.reasons[0].problem
        # Closing March (a tick past its grace) drops the packed entry as well.
        accepted(engine, b.tick(20 * DAY), b.tick(40 * DAY))
        world.evict(b.CELL)
        assert not list(world.billing.cells[b.CELL].settled)
        assert key not in world.parts[b.CELL].instances


def test_eviction_never_changes_an_answer(store_url: str) -> None:
    commands, _ = _day_of_commands()
    with connect("memory://") as keeping:
        kept = [o.to_json() for o in keeping.apply(commands)]
    with connect(store_url) as evicting:
        answers = []
        for i in range(0, len(commands), 7):
            answers += [o.to_json() for o in evicting.apply(commands[i:i + 7])]
            for cell in evicting.processor.loaded:
                evicting.processor.world.evict(cell)
    assert answers == kept


def test_a_writer_loads_only_the_cells_it_is_asked_about(store_url: str) -> None:
    other = {**b.price_book(), "cell": "az-2"}
    with connect(store_url) as engine:
        accepted(engine, b.price_book(), other)
        engine.processor.forget()
        accepted(engine, b.pool())
        assert engine.processor.loaded == {b.CELL}
        assert engine.processor.cells() == {b.CELL, "az-2"}


def test_a_clean_shutdown_leaves_a_snapshot_to_start_from(tmp_path: os.PathLike[str]) -> None:
    url = f"sqlite:///{tmp_path}/cis.db"
    with connect(url) as engine:
        accepted(engine, b.price_book(), b.networks(), b.pool())
    with connect(url) as engine:
        assert engine.processor.snapshots is not None
        assert engine.processor.snapshots.load(b.CELL) is not None


def test_command_ids_are_remembered_for_the_window_then_refused(store_url: str) -> None:
    with connect(store_url) as engine:
        accepted(engine, b.price_book(), b.networks(), b.pool())
        create = b.create("web", t=1)
        first = one(engine, create)
        accepted(engine, b.tick(6 * DAY))
        assert one(engine, create) == first  # within the week: the same answer
        accepted(engine, b.tick(8 * DAY + 2 * DAY))  # the window and the skew have passed
        late = one(engine, create)
        assert late.status == "rejected" and not late.events
        assert late.reasons[0].code == "command_id_expired"
        # The refusal is recorded like any other (a replay must see it): asked again, the
        # same refusal, and still nothing decided.
        assert one(engine, create) == late


def test_a_forgotten_outcome_is_gone_from_memory(store_url: str) -> None:
    with connect(store_url) as engine:
        accepted(engine, b.price_book(), b.networks(), b.pool())
        create = b.create("web", t=1)
        one(engine, create)
        state = engine.processor.world.parts[b.CELL]
        assert any(k[1] == create["command_id"] for k in state.outcomes)
        accepted(engine, b.tick(6 * DAY))
        assert any(k[1] == create["command_id"] for k in state.outcomes)
        accepted(engine, b.tick(12 * DAY))
        assert not any(k[1] == create["command_id"] for k in state.outcomes)


def test_new_names_in_a_cell_that_evicted_cost_one_look_up_per_batch(store_url: str) -> None:
    with connect(store_url) as engine:
        _deleted_instance(engine)
        world = engine.processor.world
        world.evict(b.CELL)
        assert world.parts[b.CELL].evicted
        reads: list[object] = []
        fetch = world.fetch

        def counted(aggregate_id: object) -> object:
            reads.append(aggregate_id)
            return fetch(aggregate_id)  # type: ignore[misc,arg-type]

        world.fetch = counted  # type: ignore[assignment]
        outs = run(engine, *[b.create(f"new-{i}", t=300) for i in range(5)],
                   b.tenant("DeleteInstance", "web", 301))
        assert [o.status for o in outs] == ["accepted"] * 5 + ["rejected"]
        assert reads == [Instance.create_id(b.CELL, b.ACCOUNT, "web")]  # only the one that exists
