"""Init containers run as Kubernetes runs them: one that exits 0 is done, whatever the
restart policy; one that fails runs again, or fails the instance under Never; only the main
containers decide when an instance has finished."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.bootstrap import Engine
from engine.policies import restart
from tests import builders as b
from tests.helpers import accepted, cell_with_ready_node, instance, one, state


def _with_init(policy: str) -> dict[str, Any]:
    create = b.create("x", policy=policy)
    create["init_containers"] = [{**create["containers"][0], "name": "setup"}]
    return create


def _exit(t: float, container: str, code: int) -> dict[str, Any]:
    return b.report("ReportContainerExited", t, instance_id="x", container=container,
                    exit_code=code)


def test_an_init_container_that_succeeds_is_no_restart_under_always(engine: Engine) -> None:
    cell_with_ready_node(engine)
    accepted(engine, _with_init("Always"), b.report("ReportInstanceStarting", 2, instance_id="x"))
    accepted(engine, _exit(3, "setup", 0))
    assert state(engine, "x") == "starting" and instance(engine, "x").restarts == 0
    accepted(engine, b.report("ReportInstanceRunning", 4, instance_id="x"))
    assert state(engine, "x") == "running"


@pytest.mark.parametrize("policy", ["Never", "OnFailure"])
def test_the_main_containers_decide_success_even_if_init_was_never_reported(
        engine: Engine, policy: str) -> None:
    cell_with_ready_node(engine)
    accepted(engine, _with_init(policy), b.report("ReportInstanceRunning", 2, instance_id="x"))
    accepted(engine, _exit(9, "c0", 0))
    assert state(engine, "x") == "succeeded"


def test_a_failing_init_container_fails_the_instance_under_never(engine: Engine) -> None:
    cell_with_ready_node(engine)
    accepted(engine, _with_init("Never"), b.report("ReportInstanceStarting", 2, instance_id="x"))
    out = one(engine, _exit(3, "setup", 1))
    assert out.status == "accepted" and state(engine, "x") == "failed"


def test_the_policy_decides_init_exits() -> None:
    init = frozenset({"setup"})
    names = ["setup", "main"]
    assert restart.decide_exit("Always", 0, "setup", names, {}, init) == "complete"
    assert restart.decide_exit("OnFailure", 2, "setup", names, {}, init) == "restart"
    assert restart.decide_exit("Never", 2, "setup", names, {}, init) == "fail"
    assert restart.decide_exit("Never", 0, "main", names, {}, init) == "succeed"
