"""Nothing on Kafka can stop a partition (issue 11, item 17): each poison record gets its
answer (a rejected outcome, or the DLQ cut to fit the broker), intake goes on, and a later
command in the same partition gets its outcome. On a real broker (tansu)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from adapters.kafka_io import (
    DLQ_REASON_HEADER,
    DLQ_SHA256_HEADER,
    DLQ_SIZE_HEADER,
    DLQ_TRUNCATED_HEADER,
    Publisher,
    Record,
    RecordTooLarge,
)
from adapters.serve import SOURCE_HEADER, ServeConfig, Server, sendable
from schemas.limits import BROKER_MAX_MESSAGE_BYTES
from schemas.outcomes import Outcome, Reason
from simulations.tansu import Broker
from tests import test_serve_helpers as h
from tests.stores import PostgresTestDatabase
from tests.test_serve_e2e import make_topics
from tests.test_serve_helpers import reap_serve_processes  # noqa: F401 (autouse)

CELL = "az-4"
AT = "2026-01-15T10:00:00Z"


def stop(command_id: str) -> dict[str, Any]:
    """A valid tenant command the state rejects (no such instance): it always gets an
    outcome, and needs no set-up."""
    return {"type": "StopInstance", "command_id": command_id, "cell": CELL, "issued_at": AT,
            "account": "acme", "instance_id": "ghost"}


def nested(command_id: str, depth: int) -> bytes:
    return (f'{{"type":"StopInstance","command_id":"{command_id}","cell":"{CELL}",'
            f'"issued_at":"{AT}","account":"acme","instance_id":"ghost","x":').encode() \
        + b"[" * depth + b"]" * depth + b"}"


def huge_create(command_id: str) -> bytes:
    """A schema-valid CreateInstance of about 1 MB (the issue's yielded a 1,067,393-byte
    RunPod)."""
    env = {f"V{i:03d}": "x" * 4000 for i in range(100)}
    containers = [{"name": f"c{k}", "image": "nginx:1.27", "vcpu": "0.25", "memory_gib": "0.5",
                   "env": env} for k in range(3)]
    return json.dumps({"type": "CreateInstance", "command_id": command_id, "cell": CELL,
                       "issued_at": AT, "account": "acme", "instance_id": "huge",
                       "pool": "general", "containers": containers,
                       "network": {"vpc": "vpc-1", "subnet": "subnet-1"}}).encode()


def test_poison_records_are_answered_and_the_partition_goes_on(
        kafka_broker: Broker, kafka_topic_factory: Callable[..., str],
        pg_database: PostgresTestDatabase, tmp_path: Path) -> None:
    topics = make_topics(kafka_topic_factory, partitions=1)
    garbage = b"\xff" + bytes(range(256)) * 4500  # not UTF-8, over 1 MiB
    assert len(garbage) > BROKER_MAX_MESSAGE_BYTES
    poison = {
        "nested-2kb": nested("nested-2kb", 1000),
        "nested-10k": nested("nested-10k", 10_000),
        "surrogate": json.dumps(stop("\ud800")).encode(),  # json.dumps writes "\ud800"
        "garbage": garbage,
        "huge-create": huge_create("huge-create"),
    }
    stream: list[tuple[str, bytes]] = []
    for name, value in poison.items():
        stream.append((CELL, value))
        stream.append((CELL, json.dumps(stop(f"after-{name}")).encode()))
    # A producer as hostile as the broker allows (it takes records over 1 MiB).
    with Publisher(kafka_broker.bootstrap, client_id="hostile",
                   max_request_size=4 * BROKER_MAX_MESSAGE_BYTES) as publisher:
        for key, value in stream:
            publisher.send(topics["commands"], value, key=key.encode())
        publisher.flush()
    store = pg_database.new_schema()
    serve = h.ServeProcess(h.serve_args(store, kafka_broker.bootstrap, topics,
                                        "--tick-interval", "0", "--batch", "3"),
                           tmp_path / "serve.log")
    ends = {topics["commands"]: {0: len(stream)}}
    h.wait_until(lambda: h.consumed_all(store, ends), "the whole stream", process=serve)
    assert serve.terminate() == 0
    assert not serve.events("serve failed")

    inputs = h.read_topic(kafka_broker.bootstrap, topics["commands"])
    assert len(inputs) == len(stream)
    outcomes = h.read_topic(kafka_broker.bootstrap, topics["outcomes"])
    by_id = h.outcomes_by_id(outcomes)
    for name in poison:
        after = by_id[f"after-{name}"]
        assert after and after[0]["status"] == "rejected", f"no answer after {name}"
        assert after[0]["reasons"][0]["field"] == "instance_id", "decided, not refused"
    for record, name in zip(inputs[0::2], poison, strict=True):
        if name == "garbage":
            continue
        source = f"{record.topic}:{record.partition}:{record.offset}".encode()
        mine = [json.loads(r.value) for r in outcomes
                if r.header(SOURCE_HEADER) == source or r.key == name.encode()]
        assert len(mine) == 1, f"{name}: exactly one outcome, not {len(mine)}"
        assert mine[0]["status"] == "rejected" and mine[0]["reasons"], name

    (dead,) = h.read_topic(kafka_broker.bootstrap, topics["dlq"])
    assert dead.header(DLQ_TRUNCATED_HEADER) == b"true"
    assert garbage.startswith(dead.value) and len(dead.value) < BROKER_MAX_MESSAGE_BYTES
    assert dead.header(DLQ_SIZE_HEADER) == str(len(garbage)).encode()
    assert dead.header(DLQ_SHA256_HEADER) == hashlib.sha256(garbage).hexdigest().encode()
    reason = dead.header(DLQ_REASON_HEADER) or b""
    assert reason.startswith((b"not UTF-8", b"the line has")), reason


def test_submit_refuses_a_command_whose_pod_would_not_fit_the_broker(
        kafka_broker: Broker, kafka_topic_factory: Callable[..., str], tmp_path: Path) -> None:
    topics = make_topics(kafka_topic_factory, partitions=1)
    file = tmp_path / "huge.jsonl"
    file.write_bytes(huge_create("huge-1") + b"\n")
    submitted = subprocess.run(
        [h.CIS, "submit", "--kafka", kafka_broker.bootstrap, "--role", "tenant",
         "--commands-topic", topics["commands"], str(file)],
        capture_output=True, text=True, timeout=h.DEADLINE_S)
    assert submitted.returncode == 1
    (invalid,) = [json.loads(line) for line in submitted.stderr.splitlines() if '"line"' in line]
    assert invalid["status"] == "rejected" and invalid["command_id"] == "huge-1"
    assert h.read_topic(kafka_broker.bootstrap, topics["commands"]) == []


def _in_process(kafka_broker: Broker, kafka_topic_factory: Callable[..., str],
                **config: Any) -> tuple[Server, dict[str, str]]:
    topics = make_topics(kafka_topic_factory, partitions=1)
    server = Server(ServeConfig(
        store="memory://", kafka=kafka_broker.bootstrap, commands_topic=topics["commands"],
        reports_topic=topics["reports"], admin_topic=topics["admin"],
        outcomes_topic=topics["outcomes"], dlq_topic=topics["dlq"], outbox="off",
        projections="off", poll_timeout_ms=100, **config))
    return server, topics


def test_any_exception_from_parsing_or_deciding_rejects_that_record_only(
        kafka_broker: Broker, kafka_topic_factory: Callable[..., str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    import adapters.serve as serve_module

    parse = serve_module.parse_command

    def fragile_parse(raw: bytes | str) -> Any:
        if b"parser-bug" in raw:  # type: ignore[operator]
            raise RecursionError("maximum recursion depth exceeded")
        return parse(raw)

    monkeypatch.setattr(serve_module, "parse_command", fragile_parse)
    server, topics = _in_process(kafka_broker, kafka_topic_factory, batch_size=10)
    commands = [stop("one"), {**stop("two"), "instance_id": "parser-bug"}, stop("three"),
                {**stop("four"), "instance_id": "store-bug"}, stop("five")]
    h.produce(kafka_broker.bootstrap, topics["commands"], h.keyed(commands))
    try:
        server.start()
        assert server.engine is not None
        apply = server.engine.apply

        def fragile_apply(items: Any, tracking: Any = None, role: Any = None) -> Any:
            if any(getattr(i, "instance_id", "") == "store-bug" for i in items):
                raise ValueError("cannot store this")  # not an outage: the record's fault
            return apply(items, tracking, role=role)

        server.engine.apply = fragile_apply  # type: ignore[method-assign]
        server.serve(until=lambda s: s.processed.get((topics["commands"], 0), -1) >= 4)
        server._flush_outcomes()
    finally:
        server.close()
    published = h.read_topic(kafka_broker.bootstrap, topics["outcomes"])
    by_id = h.outcomes_by_id(published)
    for ok in ("one", "three", "five"):
        assert by_id[ok][0]["reasons"][0]["field"] == "instance_id", ok  # decided
    assert by_id["four"][0]["reasons"][0]["code"] == "internal_error"
    (unreadable,) = by_id[None]
    assert unreadable["reasons"][0]["code"] == "unreadable"
    assert server.stats.by_status == {"rejected": 5}


def test_an_outcome_that_cannot_be_sent_whole_is_summarised_or_made_bare() -> None:
    source = [(SOURCE_HEADER, b"t:0:1")]
    # Built past the model's own bounds, as a bug elsewhere might.
    long = Outcome.model_construct(command_id="c-1", status="accepted", reasons=[],
                                   events=[f"instance/i-{n:06d}#1" for n in range(60_000)],
                                   note=None, schema_version=1)
    assert len(long.to_json()) > BROKER_MAX_MESSAGE_BYTES
    key, value = sendable(long, b"c-1", source)
    sent = json.loads(value)
    assert key == b"c-1" and sent["status"] == "accepted" and sent["events"] == []
    assert "60000 events" in sent["note"] and len(value) < BROKER_MAX_MESSAGE_BYTES
    broken = Outcome.model_construct(command_id="\ud800", status="rejected", events=[],
                                     reasons=[Reason(field="$", problem="x")], note=None,
                                     schema_version=1)
    key, value = sendable(broken, None, source)
    assert key is None
    assert json.loads(value)["reasons"][0]["code"] == "unencodable_outcome"


def test_a_record_the_broker_can_never_take_is_logged_and_skipped(
        caplog: pytest.LogCaptureFixture) -> None:
    record = Record(topic="t", partition=0, offset=9, key=None, value=b"", headers=(),
                    timestamp_ms=0)

    def refused() -> object:
        raise RecordTooLarge("record for t too large")

    assert Server._skip_too_large(record, "dead letter", refused) is None
    assert any(r.getMessage() == "dead letter too large to send; skipped"
               for r in caplog.records)
    assert Server._skip_too_large(record, "outcome", lambda: "sent") == "sent"
