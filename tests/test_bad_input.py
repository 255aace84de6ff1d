"""Invariant 5: bad input gets a rejected outcome with every reason and changes nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from adapters.bootstrap import Engine, connect
from adapters.cli import main
from tests import builders as b
from tests.helpers import cell_with_ready_node, domain_snapshot, event_count, one


@pytest.fixture
def ready(engine: Engine) -> Engine:
    cell_with_ready_node(engine)
    return engine


def _unchanged(engine: Engine, raw: str | dict) -> list[dict]:
    before = domain_snapshot(engine)
    outcome = one(engine, raw)
    assert outcome.status == "rejected"
    assert outcome.reasons
    assert domain_snapshot(engine) == before
    return [r.model_dump(exclude_none=True) for r in outcome.reasons]


def test_malformed_json(ready: Engine) -> None:
    before = event_count(ready)
    reasons = _unchanged(ready, '{"type": "CreateInstance", ')
    assert "not JSON" in reasons[0]["problem"]
    assert event_count(ready) == before  # nothing to record: no command_id to answer for


def test_not_utf8(ready: Engine) -> None:
    outcome = ready.apply([b"\xff\xfe garbage"])[0]
    assert outcome.status == "rejected" and "UTF-8" in outcome.reasons[0].problem


def test_unknown_type(ready: Engine) -> None:
    reasons = _unchanged(ready, {"type": "FormatDisk", "command_id": "x", "cell": b.CELL})
    assert reasons[0]["field"] == "$" or "type" in reasons[0]["problem"].lower() \
        or "discriminator" in reasons[0]["problem"].lower() or reasons


def test_missing_fields_lists_every_one(ready: Engine) -> None:
    reasons = _unchanged(ready, {"type": "CreateInstance", "command_id": "c", "cell": b.CELL})
    fields = {r["field"] for r in reasons}
    assert {"issued_at", "account", "instance_id", "pool", "containers", "network"} <= fields


def test_limits_are_validation(ready: Engine) -> None:
    command = b.create("x")
    command["containers"] = command["containers"] * 11
    command["instance_id"] = "Not_A_DNS_Name"
    reasons = _unchanged(ready, command)
    fields = {r["field"] for r in reasons}
    assert "containers" in fields and "instance_id" in fields


def test_spec_outside_the_catalogue(ready: Engine) -> None:
    reasons = _unchanged(ready, b.create("x", vcpu="8", memory_gib="1"))
    assert any("catalogue" in r["problem"] for r in reasons)


def test_report_for_an_unknown_instance(ready: Engine) -> None:
    reasons = _unchanged(ready, b.report("ReportInstanceRunning", 3, instance_id="nobody"))
    assert reasons == [{"field": "instance_id",
                        "problem": f"no instance 'nobody' for account 'acme' in cell '{b.CELL}'"}]


def test_every_reason_not_just_the_first(ready: Engine) -> None:
    reasons = _unchanged(ready, b.create("x", pool="nowhere", vcpu="8", memory_gib="1"))
    assert len(reasons) >= 1
    dup = b.create("y")
    assert one(ready, dup).status == "accepted"
    twice = b.create("y", pool="nowhere")
    fields = [r["field"] for r in _unchanged(ready, twice)]
    assert fields == ["pool", "instance_id"]


def test_no_price_book_no_instance(engine: Engine) -> None:
    one(engine, b.pool())
    reasons = _unchanged(engine, b.create("x"))
    assert reasons[0]["field"] == "cell" and "price book" in reasons[0]["problem"]


def test_retroactive_price_is_rejected(engine: Engine) -> None:
    command = b.price_book(t=100)
    command["effective_from"] = b.at(50)
    reasons = _unchanged(engine, command)
    assert "retroactive" in reasons[0]["problem"]


def test_outcome_is_json_with_reasons(ready: Engine) -> None:
    outcome = one(ready, b.report("ReportNodeReady", 3, node_id="nope"))
    data = json.loads(outcome.to_json())
    assert data["status"] == "rejected" and data["reasons"][0]["field"] == "node_id"


@pytest.mark.parametrize("argv", [
    ["serve", "--kafka", "127.0.0.1:1", "--batch", "0"],
    ["serve", "--kafka", "127.0.0.1:1", "--poll-records", "-5"],
    ["serve", "--kafka", "127.0.0.1:1", "--tick-interval", "-1"],
    ["project", "--interval", "0"],
    ["outbox", "--kafka", "127.0.0.1:1", "--interval", "-1"],
    ["bench", "packing", "--every", "0"],
    ["api", "--port", "0"],
    ["apply", "-", "--batch", "zero"],
    ["bench", "intake", "--batch", "1", "0"],
])
def test_cli_refuses_bad_numbers_before_doing_anything(
        argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "must be" in err or "not a number" in err


@pytest.mark.parametrize("argv", [["project", "--store", "memory://"],
                                  ["outbox", "--store", "memory://", "--kafka", "127.0.0.1:1"],
                                  ["api", "--store", "memory://"]])
def test_log_workers_refuse_a_memory_store(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert "memory://" in str(exit_.value.code)


def test_a_closed_pipe_ends_the_cli_quietly(tmp_path: Path) -> None:
    """`cis instances | head -1`: no traceback when the reader goes away."""
    store = f"sqlite:///{tmp_path / 'cis.db'}"
    with connect(store) as engine:
        # Output well beyond a pipe's 64 KiB buffer, so the writer is still writing.
        quota = {"type": "SetAccountQuota", "command_id": "q", "cell": b.CELL,
                 "issued_at": b.at(0), "account": b.ACCOUNT, "launch_burst": 2000}
        engine.apply(b.lines(b.price_book(), b.networks(), b.pool(), quota,
                             *[b.create(f"i-{k}") for k in range(1500)]))
    cis = str(Path(sys.executable).parent / "cis")
    process = subprocess.Popen([cis, "instances", "--store", store], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.readline().startswith(b"CELL")
    process.stdout.close()
    err = process.stderr.read().decode()
    assert process.wait(60) == 141, err
    assert "Traceback" not in err


@pytest.mark.parametrize("kind", ["CordonNode", "UncordonNode"])
def test_node_holds_refuse_unknown_or_malformed_nodes_and_change_nothing(
        ready: Engine, kind: str) -> None:
    command = {"type": kind, "command_id": b.cid(kind), "cell": b.CELL, "issued_at": b.at(5)}
    unknown = _unchanged(ready, {**command, "node_id": "general-09999"})
    assert unknown[0]["field"] == "node_id" and "unknown node" in unknown[0]["problem"]
    malformed = _unchanged(ready, {**command, "command_id": b.cid(kind), "node_id": "Bad_Name",
                                   "reason": ""})
    assert {r["field"] for r in malformed} == {"node_id", "reason"}
