"""The operator's view of the nodes (`cis nodes`, `GET /v1/nodes`): per node its model,
pool, ASG, state, hold, allocation per dimension, instances and idle time — a projection of
the log, rebuilt exactly, on every store."""

from __future__ import annotations

import copy
import json
from datetime import timedelta
from typing import Any

import pytest

from adapters import queries, tokens
from adapters.bootstrap import Engine, connect
from adapters.cli import main
from engine.domain.instance import ON_NODE, Instance
from engine.domain.node import Node
from projections.nodes import GONE, NODE_IDLE, NODE_INSTANCES, NODES, NodesProjection
from projections.tables import Rows
from simulations import workloads
from tests import builders as b
from tests.helpers import accepted, instance, simulate
from tests.test_api import api, get, operator  # noqa: F401 (fixtures)
from tests.test_autoscaler import SMALL, kata, shared
from tests.test_node_holds import operator as operator_command


def _scenario(engine: Engine) -> None:
    """kata-00001 holds i0 and i1 and is held by an operator; kata-00002 emptied at t=40."""
    shared(engine, max_nodes=5, models=[SMALL], pending_timeout_seconds=86_400)
    accepted(engine, kata("i0", vcpu="2", memory_gib="4"), kata("i1"))
    engine.update_projections()  # incrementally: the rows must not depend on batches
    accepted(engine, b.report("ReportNodeReady", 10, node_id="kata-00001"))
    accepted(engine, operator_command("CordonNode", "kata-00001", 20))
    accepted(engine, kata("i2", t=30))  # the held node takes no new work: a second node
    engine.update_projections()
    accepted(engine, b.report("ReportNodeReady", 35, node_id="kata-00002"))
    accepted(engine, b.tenant("StopInstance", "i2", 40))
    engine.update_projections()


def _by_id(engine: Engine, **filters: Any) -> dict[str, dict[str, Any]]:
    return {n["node_id"]: n for n in queries.nodes(engine, **filters)}


def test_each_node_shows_its_group_hold_allocation_and_instances(engine: Engine) -> None:
    _scenario(engine)
    found = _by_id(engine)
    assert set(found) == {"kata-00001", "kata-00002"}
    held = found["kata-00001"]
    assert (held["pool"], held["model"], held["asg"]) == ("kata", "4C16G", "az-1-kata-4C16G")
    assert (held["state"], held["held_by"]) == ("cordoned", "operator")
    assert [(i["account"], i["instance_id"]) for i in held["instances"]] == [
        ("acme", "i0"), ("acme", "i1")]
    # Allocation: the instances' demand summed per dimension, of the model's capacity.
    demands = [instance(engine, name).demand for name in ("i0", "i1")]
    for dimension in ("millicores", "memory_mib", "enis", "pods"):
        assert held["allocation"][dimension] == {
            "used": sum(d.get(dimension, 0) for d in demands),
            "capacity": SMALL[dimension]}, dimension
    assert held["idle_since"] is None and held["idle_seconds"] is None  # busy
    emptied = found["kata-00002"]
    assert emptied["held_by"] is None and emptied["instances"] == []
    assert all(a["used"] == 0 for a in emptied["allocation"].values())
    # Filters.
    assert set(_by_id(engine, state="cordoned")) == {"kata-00001"}
    assert set(_by_id(engine, pool="kata")) == set(found)
    assert _by_id(engine, pool="general") == {}
    # Uncordoned: no longer held.
    accepted(engine, operator_command("UncordonNode", "kata-00001", 50))
    engine.update_projections()
    again = _by_id(engine)["kata-00001"]
    assert (again["state"], again["held_by"]) == ("ready", None)


def test_idle_time_runs_from_the_last_instance_leaving(engine: Engine) -> None:
    _scenario(engine)
    at = b.T0 + timedelta(seconds=100)
    emptied = _by_id(engine, as_of=at)["kata-00002"]
    assert emptied["idle_since"] == "2026-03-01T00:00:40Z"  # i2 stopped then
    assert emptied["idle_seconds"] == 60
    # By default: up to the time of the projected position (here the stop itself).
    assert _by_id(engine)["kata-00002"]["idle_seconds"] == 0
    # A node that never held anything is idle from when it became ready.
    accepted(engine, operator_command("UncordonNode", "kata-00001", 50),
             b.tenant("StopInstance", "i0", 60), b.tenant("StopInstance", "i1", 70))
    engine.update_projections()
    assert _by_id(engine, as_of=at)["kata-00001"]["idle_seconds"] == 30


def test_a_node_never_used_is_idle_from_ready_and_a_gone_one_is_not_idle(
        engine: Engine) -> None:
    shared(engine, max_nodes=5, models=[SMALL], pending_timeout_seconds=86_400)
    accepted(engine, kata("i0"))
    accepted(engine, b.tenant("StopInstance", "i0", 5))  # before its node is up
    accepted(engine, b.report("ReportNodeReady", 10, node_id="kata-00001"))
    engine.update_projections()
    assert engine.view.select(NODE_IDLE) == []  # nothing ever left it
    node = _by_id(engine, as_of=b.T0 + timedelta(seconds=70))["kata-00001"]
    assert (node["idle_since"], node["idle_seconds"]) == ("2026-03-01T00:00:10Z", 60)
    accepted(engine, b.tick(10 + 3600))  # far past the unneeded time: scaled in
    engine.update_projections()
    gone = _by_id(engine)["kata-00001"]
    assert gone["state"] == "terminated" and gone["ended_at"] is not None
    assert gone["idle_seconds"] is None


def test_rebuild_gives_the_rows_the_increments_gave(engine: Engine) -> None:
    _scenario(engine)
    before = {t.name: engine.view.select(t) for t in engine.projection("nodes").tables}
    assert before["nodes"] and before["node_instances"] and before["node_idle"]
    engine.rebuild_projections()
    assert {t.name: engine.view.select(t) for t in engine.projection("nodes").tables} == before


@pytest.mark.parametrize("store_url", ["sqlite", "postgres"], indirect=True)
def test_the_api_answers_operators_only_paged(store_url: str, api: str,  # noqa: F811
                                              operator: str) -> None:  # noqa: F811
    with connect(store_url) as engine:
        _scenario(engine)
        expected = queries.nodes(engine)
        account_token = tokens.create(engine.view, "acme")[1]
    status, got = get(f"{api}/v1/nodes", operator)
    assert status == 200 and got["nodes"] == expected and got["next"] is None
    assert got["projected"]["position"] > 0
    status, got = get(f"{api}/v1/nodes?limit=1", operator)
    assert status == 200 and [n["node_id"] for n in got["nodes"]] == ["kata-00001"]
    status, rest = get(f"{api}/v1/nodes?limit=1&cursor={got['next']}", operator)
    assert status == 200 and [n["node_id"] for n in rest["nodes"]] == ["kata-00002"]
    status, got = get(f"{api}/v1/nodes?state=cordoned&pool=kata", operator)
    assert status == 200 and [n["node_id"] for n in got["nodes"]] == ["kata-00001"]
    # Refusals: problem+json (get() checks the content type), every reason.
    assert get(f"{api}/v1/nodes")[0] == 401
    status, got = get(f"{api}/v1/nodes", account_token)
    assert status == 403 and got["detail"] == "an operator token is needed"
    status, got = get(f"{api}/v1/nodes?state=sleeping&pool=Bad_Pool", operator)
    assert status == 422
    assert {tuple(e["loc"]) for e in got["errors"]} == {("query", "state"), ("query", "pool")}


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_cis_nodes_prints_a_table_or_json(store_url: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    with connect(store_url) as engine:
        _scenario(engine)
        assert engine.view.select(NODES)

    def cis(*argv: str) -> str:
        with pytest.raises(SystemExit) as done:
            main(["nodes", "--store", store_url, *argv])
        assert done.value.code == 0
        return capsys.readouterr().out

    rows = json.loads(cis("--json", "--state", "cordoned"))
    assert [r["node_id"] for r in rows] == ["kata-00001"]
    assert rows[0]["allocation"]["pods"] == {"used": 2, "capacity": SMALL["pods"]}
    header, *lines = cis("--pool", "kata").splitlines()
    assert header.split()[:7] == ["CELL", "NODE_ID", "POOL", "MODEL", "ASG", "STATE", "HOLD"]
    assert "PODS" in header.split() and header.split()[-1] == "IDLE_SECONDS"
    assert [line.split()[1] for line in lines] == ["kata-00001", "kata-00002"]
    assert lines[0].split()[6] == "operator" and "2/20" in lines[0].split()
    with pytest.raises(SystemExit) as refused:
        main(["nodes", "--store", store_url, "--state", "sleeping"])
    assert refused.value.code == 2


def test_a_simulated_day_agrees_with_the_engine_node_by_node(engine: Engine) -> None:
    harness = simulate(engine, 40, seed=11, hours=8, tick_every_s=300)
    harness.run(until=workloads.DAY_START + timedelta(hours=8))
    engine.update_projections()
    world = engine.processor.world.aggregates.values()
    live = {(n.cell, n.node_id): n for n in world if isinstance(n, Node)}
    on: dict[tuple[str, str], list[Instance]] = {}
    for i in world:
        if isinstance(i, Instance) and i.state in ON_NODE and i.node_id is not None:
            on.setdefault((i.cell, i.node_id), []).append(i)
    found = queries.nodes(engine)
    assert {(n["cell"], n["node_id"]) for n in found} == set(live)
    assert any(n["instances"] for n in found) and any(n["idle_seconds"] for n in found)
    for row in found:
        key = (row["cell"], row["node_id"])
        node, here = live[key], on.get(key, [])
        assert (row["state"], row["model"], row["pool"]) == (node.state, node.model, node.pool)
        assert {(i["account"], i["instance_id"], i["state"]) for i in row["instances"]} == {
            (i.account, i.name, i.state) for i in here}
        for dimension, allocation in row["allocation"].items():
            assert allocation == {"used": sum(i.demand.get(dimension, 0) for i in here),
                                  "capacity": node.capacity.get(dimension)}, (key, dimension)
        assert (row["idle_seconds"] is None) == bool(here or node.state in GONE
                                                     or node.state == "requested")


def test_an_instance_placed_again_leaves_its_first_node(engine: Engine) -> None:
    # Not a path the engine takes today (an instance ends before it moves); the view must
    # still never count one instance on two nodes.
    shared(engine, max_nodes=5, models=[SMALL], pending_timeout_seconds=86_400)
    accepted(engine, kata("i0"))
    engine.update_projections()
    moved = copy.deepcopy(instance(engine, "i0"))
    moved.collect_events()  # the recorded ones: only what follows is applied below
    key = (moved.id.hex,)
    t = [b.T0 + timedelta(seconds=s) for s in range(5)]
    moved.schedule("kata-00001", "best_fit", 0.0, t[1])
    moved.mark_unschedulable([], t[2])
    moved.schedule("kata-00002", "best_fit", 0.0, t[3])
    moved.schedule("kata-00003", "best_fit", 0.0, t[4])
    rows = Rows({"node_instances": engine.view.load(NODE_INSTANCES, [key])})
    for event in moved.collect_events():
        NodesProjection().apply(event, rows)
    placed = rows.get(NODE_INSTANCES, key)
    assert placed and (placed["node_id"], placed["placed_at"]) == (
        "kata-00003", "2026-03-01T00:00:04Z")
    assert {k[1]: r["last_left_at"] for k, r in rows.changed["node_idle"].items() if r} == {
        "kata-00001": "2026-03-01T00:00:02Z", "kata-00002": "2026-03-01T00:00:04Z"}
