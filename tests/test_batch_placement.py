"""Batch placement: a poll batch's creates placed together as a reorder window (issue 14.11)."""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest

from adapters.bootstrap import Engine
from engine.policies.batch import pack_windows, plan_window
from engine.policies.node_index import NodeIndex
from engine.policies.packing import _eliminate, pack_online
from tests import builders as b
from tests.helpers import instance, run

# ---- the pure policy ---------------------------------------------------------------------

CAP = [10, 10]
# One by one, best fit opens a third bin for the 8; sorted, {8, 2} and {5, 5} fill two.
ITEMS = [[2, 2], [5, 5], [5, 5], [8, 8]]


def test_window_of_one_is_one_by_one_best_fit() -> None:
    rng = random.Random(7)
    for _ in range(20):
        cap = [rng.randint(20, 60) for _ in range(3)]
        items = [[rng.randint(1, c // 2) for c in cap] for _ in range(rng.randint(5, 60))]
        assert pack_windows(items, cap, 1).assignment == \
            pack_online(items, cap, "best_fit").assignment


def test_a_window_reorders_what_one_by_one_cannot() -> None:
    assert pack_windows(ITEMS, CAP, 1).bins == 3
    assert pack_windows(ITEMS, CAP, 4).bins == 2


def test_windows_are_cut_in_given_order() -> None:
    # K = 2: {2, 5} is committed before the 8 is seen, so the 8 needs a bin of its own.
    assert pack_windows(ITEMS, CAP, 2).bins == 3
    assert pack_windows(ITEMS, CAP, 3).assignment[:3] == pack_windows(ITEMS[:3], CAP, 3
                                                                       ).assignment


def _index(alloc: list[list[int]], cap: list[int] = CAP) -> NodeIndex:
    n = len(alloc)
    return NodeIndex(np.asarray([cap] * n), np.asarray(alloc), np.ones(n, dtype=bool),
                     dimensions=["a", "b"])


def test_plan_is_deterministic_and_leaves_the_index_as_it_was() -> None:
    index = _index([[3, 3], [6, 6], [0, 0], [0, 0], [0, 0]])
    before = index.allocated.copy()
    plans = {plan_window(index, ITEMS) for _ in range(3)}
    assert len(plans) == 1
    assert (index.allocated == before).all()
    (plan,) = plans
    # Decreasing: 8 opens node 2, a 5 fills node 0 (3 + 5), the other 5 opens node 3, and
    # the 2 tops node 0 up to 10.
    assert plan.nodes == (0, 0, 3, 2) and plan.opened == 2


def test_plan_fills_used_nodes_before_opening_empty_ones() -> None:
    index = _index([[5, 5], [0, 0], [0, 0]])
    plan = plan_window(index, [[2, 2], [5, 5], [3, 3]])
    # Decreasing: the 5 fills node 0, then 3 and 2 share one empty node.
    assert plan.nodes == (1, 0, 1) and plan.opened == 1


def test_unplaceable_demands_stay_unplaced() -> None:
    index = _index([[9, 9]])
    plan = plan_window(index, [[1, 1], [5, 5], [1, 1]])
    assert plan.nodes == (0, None, None)


def test_elimination_never_moves_pinned_items() -> None:
    rng = np.random.default_rng(3)
    items = rng.integers(1, 6, size=(40, 2))
    cap = np.array([10, 10])
    # A poor start: one item per bin; the first 20 items are pinned where they are.
    assign = np.arange(40)
    pinned = np.zeros(40, dtype=bool)
    pinned[:20] = True
    out = _eliminate(items, cap, assign, 1, 5000, float("inf"), random.Random(0), pinned)
    assert (out[:20] == assign[:20]).all()
    load = np.zeros((40, 2), dtype=np.int64)
    np.add.at(load, out, items)
    assert (load <= cap).all()
    assert len(np.unique(out)) < 40  # the unpinned items were packed into fewer bins


def test_search_closes_nodes_the_greedy_opened() -> None:
    rng = random.Random(11)
    better = 0
    for _ in range(30):
        busy = [[rng.randint(0, 8) for _ in range(3)] for _ in range(10)]
        index = NodeIndex(np.asarray([[10, 10, 10]] * 30), np.asarray(busy + [[0] * 3] * 20),
                          np.ones(30, dtype=bool), dimensions=["a", "b", "c"])
        window = [[rng.randint(1, 6) for _ in range(3)] for _ in range(20)]
        with_search = plan_window(index, window)
        without = plan_window(index, window, search=False)
        assert with_search.nodes.count(None) == without.nodes.count(None) == 0
        assert with_search.opened <= without.opened  # one window: never worse
        better += with_search.opened < without.opened
    assert better > 0


# ---- in the engine ---------------------------------------------------------------------

HOST = {"name": "4C16G", "millicores": 4200, "memory_mib": 16384, "enis": 8, "pods": 10}
SPECS = [{"vcpu": v, "memory_gib": v} for v in ("1", "2", "3")]
# Demands (with the kata overhead of 100 m): 1100, 2100, 3100, 2100 millicores on two nodes
# of 4200. One by one, best fit puts 1100 + 2100 on one node and 3100 on the other: the last
# 2100 fits nowhere. Together, decreasing: {3100, 1100} and {2100, 2100}.
VCPUS = ("1", "2", "3", "2")


def _pool(engine: Engine, window: int) -> None:
    engine.processor.limits = replace(engine.processor.limits, placement_window=window)
    run(engine, b.price_book(), b.networks(),
        b.pool("kata", kind="shared", node_models=[HOST], min_nodes=2,
               max_nodes=2, spec_catalogue=SPECS))
    run(engine, *[b.report("ReportNodeReady", 1, node_id=f"kata-{k:05d}") for k in (1, 2)])


def _creates(prefix: str = "i") -> list[dict]:
    return [b.create(f"{prefix}{k}", t=2, pool="kata", runtime="kata", vcpu=v, memory_gib=v)
            for k, v in enumerate(VCPUS)]


def _nodes(engine: Engine, prefix: str = "i") -> list[str | None]:
    return [instance(engine, f"{prefix}{k}").node_id for k in range(len(VCPUS))]


def test_one_by_one_leaves_an_instance_waiting(engine: Engine) -> None:
    _pool(engine, 1)
    outcomes = run(engine, *_creates())
    assert [o.status for o in outcomes] == ["accepted"] * 4
    assert instance(engine, "i3").state == "unschedulable"


def test_a_batch_places_its_creates_together(engine: Engine) -> None:
    _pool(engine, 8)
    creates = _creates()
    outcomes = run(engine, *creates)
    # One outcome per command, in command order.
    assert [o.command_id for o in outcomes] == [c["command_id"] for c in creates]
    assert [o.status for o in outcomes] == ["accepted"] * 4
    assert _nodes(engine) == ["kata-00001", "kata-00002", "kata-00001", "kata-00002"]
    scheduled = [e for _, e in engine.app.read() if type(e).__name__ == "Scheduled"]
    assert {e.policy for e in scheduled} == {"best_fit+batch"}
    # The state rebuilt from the log agrees with what was decided.
    engine.processor.forget()
    assert _nodes(engine) == ["kata-00001", "kata-00002", "kata-00001", "kata-00002"]


def test_window_limits_how_far_a_batch_reorders(engine: Engine) -> None:
    _pool(engine, 2)  # {1, 2} then {3, 2}: the same as one by one here
    run(engine, *_creates())
    assert instance(engine, "i3").state == "unschedulable"


@pytest.mark.parametrize("window", [1, 8])
def test_same_batch_same_decisions(engine: Engine, window: int) -> None:
    from adapters.bootstrap import connect

    _pool(engine, window)
    run(engine, *_creates())
    first = _nodes(engine)
    with connect("memory://") as other:  # the same batch on another engine
        _pool(other, window)
        run(other, *_creates())
        assert _nodes(other) == first


def test_a_rejected_create_in_the_batch_does_not_block_the_others(engine: Engine) -> None:
    _pool(engine, 8)
    creates = _creates()
    bad = dict(creates[0], pool="nope")  # its plan goes unused
    outcomes = run(engine, bad, *creates[1:])
    assert [o.status for o in outcomes] == ["rejected", "accepted", "accepted", "accepted"]
    assert all(instance(engine, f"i{k}").state == "scheduled" for k in (1, 2, 3))


def test_window_is_configured_by_environment() -> None:
    from adapters.bootstrap import BadConfiguration, engine_limits

    assert engine_limits({}).placement_window == 1
    assert engine_limits({"CIS_PLACEMENT_WINDOW": "50"}).placement_window == 50
    with pytest.raises(BadConfiguration):
        engine_limits({"CIS_PLACEMENT_WINDOW": "0"})
