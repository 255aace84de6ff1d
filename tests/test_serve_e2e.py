"""`cis serve` end to end through a real broker (tansu) and real PostgreSQL."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from adapters.bootstrap import connect
from adapters.kafka_io import partition_for
from simulations.tansu import Broker
from tests import test_serve_helpers as h
from tests.stores import PostgresTestDatabase
from tests.test_outbox import per_event
from tests.test_serve_helpers import reap_serve_processes  # noqa: F401 (autouse)

CELLS = ["az-1", "az-4", "az-9"]  # partitions 0, 1, 1 of a 2-partition topic


def make_topics(make_topic: Callable[..., str], partitions: int = 2,
                names: tuple[str, ...] = ("outcomes", "dlq")) -> dict[str, str]:
    """The three role topics (commands, reports, admin) and `names`."""
    return {name: make_topic(name, partitions=partitions)
            for name in dict.fromkeys([*h.ROLE_TOPICS, *names])}


def test_serve_gives_what_apply_gives(kafka_broker: Broker, kafka_topic_factory: Callable[
        ..., str], pg_database: PostgresTestDatabase, tmp_path: Path) -> None:
    assert [partition_for(c, 2) for c in CELLS] == [0, 1, 1]
    topics = make_topics(kafka_topic_factory, names=("outcomes", "dlq", "vm", "pod"))
    commands = h.workload(CELLS, 20)
    setup, rest = h.split_setup(commands)
    h.produce_by_role(kafka_broker.bootstrap, topics, setup)
    store, status = pg_database.new_schema(), tmp_path / "status.json"
    serve = h.ServeProcess(h.serve_args(store, kafka_broker.bootstrap, topics,
                                        "--tick-interval", "0", "--status-file", str(status)),
                           tmp_path / "serve.log")
    set_up = h.role_ends(kafka_broker.bootstrap, topics)
    h.wait_until(lambda: h.consumed_all(store, set_up), "the set-up", process=serve)
    h.produce_by_role(kafka_broker.bootstrap, topics, rest)
    ends = h.role_ends(kafka_broker.bootstrap, topics)
    assert sum(n for e in ends.values() for n in e.values()) == len(commands)
    h.wait_until(lambda: h.consumed_all(store, ends), "all commands", process=serve)
    no_lag = {f"{t}:{p}": 0 for t in ends for p in (0, 1)}
    h.wait_until(lambda: json.loads(status.read_text())["lag"] == no_lag
                 if status.exists() else False, "a progress report without lag", process=serve)
    assert serve.terminate() == 0, serve.log_path.read_text()
    assert serve.events("stopped"), "no clean stop logged"

    reference = pg_database.new_schema()
    printed = h.apply_reference(reference, h.in_served_order(store, commands))
    served, applied = h.snapshot(store), h.snapshot(reference)
    assert served["events"] == applied["events"]
    assert served["outcomes"] == applied["outcomes"]
    assert served["tables"] == applied["tables"]
    assert served["tables"]["instances"], "projections are empty"

    published = h.outcomes_by_id(h.read_topic(kafka_broker.bootstrap, topics["outcomes"]))
    assert {k: v[0] for k, v in published.items()} == {o["command_id"]: o for o in printed}
    assert all(len(v) == 1 for v in published.values()), "no crash, so no re-publishing"
    assert h.read_topic(kafka_broker.bootstrap, topics["dlq"]) == []
    progress = json.loads(status.read_text())
    assert progress["positions"] == {f"{t}:{p}": end for t, e in ends.items()
                                     for p, end in e.items()}
    assert progress["by_status"]["accepted"] > len(commands) // 2

    # The outbox child sent every VM and Pod command the stored events imply.
    with connect(store) as engine:
        expected = {c.command_id for cs in per_event(engine).values() for c in cs}
    sent = {json.loads(r.value)["command_id"] for topic in ("vm", "pod")
            for r in h.read_topic(kafka_broker.bootstrap, topics[topic])}
    assert expected and sent == expected


def test_submit_wait_and_ticker_on_owned_partition(
        kafka_broker: Broker, kafka_topic_factory: Callable[..., str],
        pg_database: PostgresTestDatabase, tmp_path: Path) -> None:
    topics = make_topics(kafka_topic_factory)
    store = pg_database.new_schema()
    # This process owns partition 1 only: cells az-4 and az-9, not az-1.
    serve = h.ServeProcess(h.serve_args(store, kafka_broker.bootstrap, topics,
                                        "--partitions", "1", "--tick-interval", "1"),
                           tmp_path / "serve.log")
    owned = h.workload(["az-4"], 2)[:6]  # price book, pools, networks: the operator's
    tenant = h.workload(["az-4"], 2)[9]
    assert tenant["type"] == "CreateInstance"
    foreign = h.workload(["az-1"], 2)[:3]
    file = tmp_path / "commands.jsonl"
    file.write_text("\n".join([*map(json.dumps, owned), '{"type": "Nope", "cell": "az-4"}',
                               json.dumps(tenant)]) + "\n")
    submitted = subprocess.run(
        [h.CIS, "submit", "--kafka", kafka_broker.bootstrap, "--role", "operator",
         "--admin-topic", topics["admin"], "--outcomes-topic", topics["outcomes"], "--wait",
         "--timeout", "60", str(file)], capture_output=True, text=True, timeout=h.DEADLINE_S)
    assert submitted.returncode == 1, "an invalid line must make the exit code 1"
    printed = [json.loads(line) for line in submitted.stdout.splitlines()]
    assert [o["command_id"] for o in printed] == [c["command_id"] for c in owned]
    assert all(o["status"] == "accepted" for o in printed), printed
    invalid = [json.loads(line) for line in submitted.stderr.splitlines() if '"line"' in line]
    assert [i["line"] for i in invalid] == [len(owned) + 1, len(owned) + 2] \
        and invalid[0]["reasons"]
    assert invalid[1]["reasons"][0]["code"] == "wrong_topic", "a tenant's command, not sent"
    assert invalid[1]["command_id"] == tenant["command_id"]

    h.produce_by_role(kafka_broker.bootstrap, topics, foreign)

    def ticked() -> bool:
        ids = h.outcomes_by_id(h.read_topic(kafka_broker.bootstrap, topics["outcomes"]))
        return any(k.startswith("tick:az-4:") for k in ids)

    h.wait_until(ticked, "a Tick outcome for the owned cell", process=serve)
    assert serve.terminate() == 0
    ids = h.outcomes_by_id(h.read_topic(kafka_broker.bootstrap, topics["outcomes"]))
    ticks = [v[0] for k, v in ids.items() if k.startswith("tick:")]
    assert ticks and all(t["command_id"].startswith("tick:az-4:") for t in ticks)
    # The ticker reads the wall clock; the workload's cell lives in January 2026, further
    # back than one Tick may step without an operator's catch-up.
    assert all(t["status"] == "accepted" or t["reasons"][0]["code"] == "tick_too_far"
               for t in ticks), ticks
    assert not any(c["command_id"] in ids for c in foreign), "partition 0 is not ours"
    stored = h.positions(store)
    assert f"kafka:{topics['admin']}:1" in stored
    for role_topic in h.ROLE_TOPICS:
        assert f"kafka:{topics[role_topic]}:0" not in stored
