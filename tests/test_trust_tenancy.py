"""Identity and tenancy on the write side (issue 11): instance ids are per account, a report
names its node, command ids are per principal, and a command type keeps to its role's topic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapters.bootstrap import Engine
from adapters.cli import main
from adapters.infra_commands import commands_in
from projections.instances import INSTANCES
from tests import builders as b
from tests.helpers import (
    accepted,
    cell_with_ready_node,
    domain_snapshot,
    event_count,
    instance,
    one,
    run,
    state,
)


def _two_ready_nodes(engine: Engine) -> None:
    accepted(engine, b.price_book(), b.networks(), b.networks("globex"), b.pool(min_nodes=2),
             *[b.report("ReportNodeReady", 0.5, node_id=f"general-0000{n}") for n in (1, 2)])


def _codes(outcome) -> list[str | None]:  # type: ignore[no-untyped-def]
    return [r.code for r in outcome.reasons]


# --- instance ids are per account --------------------------------------------------------


def test_two_accounts_may_both_name_an_instance_web_1(engine: Engine) -> None:
    _two_ready_nodes(engine)  # dedicated: one instance per node
    first = one(engine, b.create("web-1", account="acme"))
    second = one(engine, b.create("web-1", account="globex"))
    assert first.status == second.status == "accepted", second
    # Each is its own instance: stopping globex's leaves acme's running.
    accepted(engine, b.tenant("StopInstance", "web-1", 2, account="globex"))
    assert state(engine, "web-1") == "scheduled"
    assert instance(engine, "web-1", account="globex").state == "stopped"
    engine.update_projections()
    rows = sorted((r["account"], r["instance_id"], r["state"])
                  for r in engine.view.select(INSTANCES))
    assert rows == [("acme", "web-1", "scheduled"), ("globex", "web-1", "stopped")]
    # Their Pods are two commands for the cloud driver, not one deduplicated away.
    ids = [c.command_id for c in commands_in(engine.app) if c.type == "RunPod"]
    assert len(ids) == len(set(ids)) == 2


def test_a_create_does_not_tell_one_account_of_anothers_names(engine: Engine) -> None:
    cell_with_ready_node(engine, kind="shared")
    accepted(engine, b.networks("globex"))
    accepted(engine, b.create("web-1", account="acme"))
    again = one(engine, b.create("web-1", account="acme"))
    assert again.status == "rejected" and "already exists" in again.reasons[0].problem
    assert one(engine, b.create("web-1", account="globex")).status == "accepted"


# --- a report names its account and its node ---------------------------------------------


def test_a_report_from_another_node_is_rejected(engine: Engine) -> None:
    _two_ready_nodes(engine)
    accepted(engine, b.create("x"))
    on = instance(engine, "x").node_id
    other = "general-00002" if on == "general-00001" else "general-00001"
    before = domain_snapshot(engine)
    out = one(engine, b.report("ReportInstanceTerminated", 2, instance_id="x", node_id=other,
                               reason="Evicted"))
    assert out.status == "rejected" and _codes(out) == ["wrong_node"]
    assert other in out.reasons[0].problem and on not in out.reasons[0].problem
    assert domain_snapshot(engine) == before
    assert one(engine, b.report("ReportInstanceRunning", 3, instance_id="x",
                                node_id=on)).status == "accepted"
    assert state(engine, "x") == "running"


def test_a_report_cannot_end_another_accounts_instance(engine: Engine) -> None:
    cell_with_ready_node(engine)
    accepted(engine, b.create("x", account="acme"))
    before = domain_snapshot(engine)
    out = one(engine, b.report("ReportInstanceTerminated", 2, instance_id="x",
                               account="globex", reason="Evicted"))
    assert out.status == "rejected"
    assert out.reasons[0].problem == "no instance 'x' for account 'globex' in cell 'az-1'"
    assert domain_snapshot(engine) == before


# --- command ids are per principal --------------------------------------------------------


def test_another_tenant_cannot_squat_a_command_id(engine: Engine) -> None:
    cell_with_ready_node(engine, kind="shared")
    accepted(engine, b.networks("globex"))
    squat = {**b.create("mine", account="globex"), "command_id": "acme-next"}
    real = {**b.create("web", account="acme"), "command_id": "acme-next"}
    assert one(engine, squat).status == "accepted"
    out = one(engine, real)
    assert out.status == "accepted" and out.events  # decided, not globex's answer replayed
    assert out.events[0] == "instance/web#1" and instance(engine, "web").account == "acme"


def test_the_same_id_with_other_content_is_refused_naming_the_first(engine: Engine) -> None:
    cell_with_ready_node(engine, kind="shared")
    create = b.create("x")
    first = one(engine, create)
    events = event_count(engine)
    other = {**create, "instance_id": "y"}
    out = one(engine, other)
    assert out.status == "rejected" and _codes(out) == ["command_id_reused"]
    assert "CreateInstance" in out.reasons[0].problem and "accepted" in out.reasons[0].problem
    # The same command again, however spelled, answers the recorded outcome: nothing new.
    respelled = json.dumps(dict(reversed(list(create.items()))))
    respelled = respelled.replace("+00:00", "Z")
    assert run(engine, respelled)[0] == first
    engine.processor.forget()  # and after a restart, from the log
    assert one(engine, create) == first
    assert one(engine, other).reasons == out.reasons
    assert event_count(engine) == events  # answered from the log: nothing new is stored
    assert instance(engine, "x").state == "scheduled"


def test_operator_and_agent_ids_are_their_own(engine: Engine) -> None:
    cell_with_ready_node(engine)
    # A node agent's id does not collide with a tenant's or the operator's.
    accepted(engine, {**b.create("x"), "command_id": "same"})
    out = one(engine, {**b.report("ReportInstanceRunning", 2, instance_id="x"),
                       "command_id": "same"})
    assert out.status == "accepted" and state(engine, "x") == "running"
    assert one(engine, {**b.tick(3), "command_id": "same"}).status == "accepted"


# --- roles: a command type keeps to its topic ----------------------------------------------


def test_a_command_on_another_roles_topic_is_rejected_and_not_recorded(engine: Engine) -> None:
    cell_with_ready_node(engine)
    before = domain_snapshot(engine)
    tick = b.tick(5)
    create = b.create("x")
    outs = engine.apply([json.dumps(tick), json.dumps(create)], role="tenant")
    assert outs[0].status == "rejected" and _codes(outs[0]) == ["wrong_topic"]
    assert outs[1].status == "accepted"
    stop = b.tenant("StopInstance", "x", 6)
    (out,) = engine.apply([json.dumps(stop)], role="agent")
    assert out.status == "rejected" and _codes(out) == ["wrong_topic"]
    assert "belongs on cis.commands (tenant commands)" in out.reasons[0].problem
    assert domain_snapshot(engine) != before and state(engine, "x") == "scheduled"
    # Not recorded: the same ids on the right topics are decided.
    assert engine.apply([json.dumps(tick)], role="operator")[0].status == "accepted"
    assert engine.apply([json.dumps(stop)], role="tenant")[0].status == "accepted"
    assert state(engine, "x") == "stopped"


def test_cis_apply_takes_the_role_explicitly(store_url: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    setup = tmp_path / "setup.jsonl"
    setup.write_text("\n".join(b.lines(b.price_book(), b.pool())) + "\n")
    with pytest.raises(SystemExit) as exit_:  # no default: the caller says who speaks
        main(["apply", "--store", store_url, str(setup)])
    assert exit_.value.code == 2 and "--role" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["apply", "--role", "tenant", "--store", store_url, str(setup)])
    refused = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["reasons"][0]["code"] for r in refused] == ["wrong_topic"] * 2
    with pytest.raises(SystemExit):  # an operator's replay of a whole file
        main(["apply", "--role", "any", "--store", store_url, str(setup)])
    replayed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["status"] for r in replayed] == ["accepted"] * 2
