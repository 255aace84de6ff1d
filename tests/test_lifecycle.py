"""The instance lifecycle of docs/design.md §3.1: every transition, legal or not, on the engine."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from adapters.bootstrap import Engine
from tests import builders as b
from tests.helpers import accepted, cell_with_ready_node, event_count, one, run, state

Step = Callable[[Engine], None]


def _scheduled(e: Engine) -> None:
    cell_with_ready_node(e)
    accepted(e, b.create("x", policy="OnFailure"))


def _unschedulable(e: Engine) -> None:
    accepted(e, b.price_book(), b.networks(),
             b.pool(max_nodes=0), b.create("x", policy="OnFailure"))


def _then(first: Step, *commands: Callable[[], dict]) -> Step:
    def step(e: Engine) -> None:
        first(e)
        accepted(e, *[c() for c in commands])
    return step


def _starting() -> dict:
    return b.report("ReportInstanceStarting", 2, instance_id="x")


def _running() -> dict:
    return b.report("ReportInstanceRunning", 3, instance_id="x")


def _exit(code: int, t: float = 4) -> Callable[[], dict]:
    return lambda: b.report("ReportContainerExited", t, instance_id="x", container="c0",
                            exit_code=code)


_running_state = _then(_scheduled, _starting, _running)
STATES: dict[str, Step] = {
    "unschedulable": _unschedulable,
    "scheduled": _scheduled,
    "starting": _then(_scheduled, _starting),
    "running": _running_state,
    "restarting": _then(_running_state, _exit(1)),
    "succeeded": _then(_running_state, _exit(0)),
    "failed": _then(_running_state, lambda: b.report("ReportInstanceTerminated", 4,
                                                       instance_id="x", reason="OOMKilled")),
    "stopped": _then(_running_state, lambda: b.tenant("StopInstance", "x", 4)),
    "expired": _then(_unschedulable, lambda: b.tick(2000)),
    "deleted": _then(_running_state, lambda: b.tenant("DeleteInstance", "x", 4)),
}

COMMANDS: dict[str, Callable[[], dict]] = {
    "starting": lambda: b.report("ReportInstanceStarting", 5000, instance_id="x"),
    "running": lambda: b.report("ReportInstanceRunning", 5000, instance_id="x"),
    "exit0": _exit(0, 5000),
    "exit1": _exit(1, 5000),
    "terminated": lambda: b.report("ReportInstanceTerminated", 5000, instance_id="x",
                                   reason="Evicted"),
    "stop": lambda: b.tenant("StopInstance", "x", 5000),
    "delete": lambda: b.tenant("DeleteInstance", "x", 5000),
}

R, S = "rejected", "stale"
ENDED = ("succeeded", "failed", "stopped", "expired")
# state -> command -> new state | R (rejected, nothing changes) | S (stale no-op)
EXPECTED: dict[str, dict[str, str]] = {
    "unschedulable": {"starting": R, "running": R, "exit0": R, "exit1": R, "terminated": R,
                      "stop": "stopped", "delete": "deleted"},
    "scheduled": {"starting": "starting", "running": "running", "exit0": "succeeded",
                  "exit1": "restarting", "terminated": "failed", "stop": "stopped",
                  "delete": "deleted"},
    "starting": {"starting": S, "running": "running", "exit0": "succeeded",
                 "exit1": "restarting", "terminated": "failed", "stop": "stopped",
                 "delete": "deleted"},
    "running": {"starting": S, "running": S, "exit0": "succeeded", "exit1": "restarting",
                "terminated": "failed", "stop": "stopped", "delete": "deleted"},
    "restarting": {"starting": S, "running": "running", "exit0": "succeeded",
                   "exit1": "restarting", "terminated": "failed", "stop": "stopped",
                   "delete": "deleted"},
    **{ended: {"starting": S, "running": S, "exit0": S, "exit1": S, "terminated": S,
               "stop": R, "delete": "deleted"} for ended in ENDED},
    # Expired while pending: it was never on a node, so no node may report on it.
    "expired": {"starting": R, "running": R, "exit0": R, "exit1": R, "terminated": R,
                "stop": R, "delete": "deleted"},
    "deleted": {"starting": S, "running": S, "exit0": S, "exit1": S, "terminated": S,
                "stop": R, "delete": R},
}


@pytest.mark.parametrize("store_url", ["memory"], indirect=True)
@pytest.mark.parametrize("start", list(STATES))
@pytest.mark.parametrize("command", list(COMMANDS))
def test_transition_matrix(engine: Engine, start: str, command: str) -> None:
    STATES[start](engine)
    assert state(engine, "x") == start
    before = event_count(engine)
    outcome = one(engine, COMMANDS[command]())
    expected = EXPECTED[start][command]
    if expected == R:
        assert outcome.status == "rejected" and outcome.reasons
        assert state(engine, "x") == start
    elif expected == S:
        assert outcome.status == "accepted" and outcome.events == []
        assert outcome.note and outcome.note.startswith("stale")
        assert state(engine, "x") == start
    else:
        assert outcome.status == "accepted" and outcome.events, outcome
        assert state(engine, "x") == expected
    # Whatever happened, the outcome is recorded (one log event), domain state moved only
    # when accepted with events.
    assert event_count(engine) == before + 1 + len(outcome.events)


@pytest.mark.parametrize("store_url", ["memory"], indirect=True)
@pytest.mark.parametrize(("policy", "code", "expected"), [
    ("Always", 0, "restarting"), ("Always", 1, "restarting"),
    ("OnFailure", 0, "succeeded"), ("OnFailure", 3, "restarting"),
    ("Never", 0, "succeeded"), ("Never", 1, "failed"),
])
def test_restart_policy_decides_what_an_exit_means(engine: Engine, policy: str, code: int,
                                                   expected: str) -> None:
    cell_with_ready_node(engine)
    accepted(engine, b.create("x", policy=policy), _running(),
             b.report("ReportContainerExited", 5, instance_id="x", container="c0",
                      exit_code=code))
    assert state(engine, "x") == expected


def test_restart_then_running_again_with_backoff(engine: Engine) -> None:
    cell_with_ready_node(engine)
    accepted(engine, b.create("x"), _running())
    t = 3
    for n in range(1, 4):
        t += 1
        accepted(engine, b.report("ReportContainerExited", t, instance_id="x",
                                  container="c0", exit_code=137))
        assert state(engine, "x") == "restarting"
        t += 10 * 2 ** (n - 1)  # the back-off (10 s doubling) is enforced (issue 14)
        accepted(engine, b.report("ReportInstanceRunning", t, instance_id="x"))
        assert state(engine, "x") == "running"
    from tests.helpers import instance
    assert instance(engine, "x").restarts == 3


def test_multi_container_succeeds_when_the_last_container_completes(engine: Engine) -> None:
    cell_with_ready_node(engine)
    accepted(engine, b.create("x", policy="OnFailure", vcpu="0.25", memory_gib="0.5",
                              containers=2), _running(),
             b.report("ReportContainerExited", 5, instance_id="x", container="c0", exit_code=0))
    assert state(engine, "x") == "running"
    out = one(engine, b.report("ReportContainerExited", 6, instance_id="x", container="c0",
                               exit_code=0))
    assert out.note and "already completed" in out.note
    accepted(engine, b.report("ReportContainerExited", 7, instance_id="x", container="c1",
                              exit_code=0))
    assert state(engine, "x") == "succeeded"


def test_unschedulable_instance_waits_for_the_node_its_pool_requests(engine: Engine) -> None:
    accepted(engine, b.price_book(), b.networks(), b.pool())
    out = one(engine, b.create("x", vcpu="2", memory_gib="4"))
    assert state(engine, "x") == "unschedulable"
    assert any(e.startswith("node/general-00001#") for e in out.events)
    node = engine.processor.world.node(b.CELL, "general-00001")
    assert node is not None and node.model == "4C8G"  # smallest model holding 2 vCPU+overhead
    accepted(engine, b.report("ReportNodeReady", 40, node_id="general-00001"))
    assert state(engine, "x") == "scheduled"


def test_node_loss_fails_its_instances(engine: Engine) -> None:
    cell_with_ready_node(engine)
    accepted(engine, b.create("x"), _running(),
             b.report("ReportNodeLost", 60, node_id="general-00001"))
    assert state(engine, "x") == "failed"
    again = one(engine, b.report("ReportNodeLost", 61, node_id="general-00001"))
    assert again.status == "accepted" and again.events == []


def test_stuck_pending_instance_expires_on_tick(engine: Engine) -> None:
    accepted(engine, b.price_book(), b.networks(), b.pool(max_nodes=0, pending_timeout_seconds=600),
             b.create("x", t=10))
    accepted(engine, b.tick(600))
    assert state(engine, "x") == "unschedulable"
    accepted(engine, b.tick(610))
    assert state(engine, "x") == "expired"


def test_reports_out_of_order(engine: Engine) -> None:
    cell_with_ready_node(engine)
    accepted(engine, b.create("x"), b.report("ReportInstanceRunning", 5, instance_id="x"))
    assert state(engine, "x") == "running"
    late = one(engine, b.report("ReportInstanceStarting", 4, instance_id="x"))
    assert late.status == "accepted" and late.events == [] and state(engine, "x") == "running"


def test_another_account_cannot_stop_an_instance(engine: Engine) -> None:
    cell_with_ready_node(engine)
    accepted(engine, b.create("x"))
    out = one(engine, b.tenant("StopInstance", "x", 5, account="mallory"))
    assert out.status == "rejected"
    assert state(engine, "x") == "scheduled"


def test_run_records_outcomes_for_every_line(engine: Engine) -> None:
    outcomes = run(engine, b.price_book(), "not json", b.pool())
    assert [o.status for o in outcomes] == ["accepted", "rejected", "accepted"]
