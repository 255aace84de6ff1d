"""Bad input never stops the stream (docs/design.md §2.5): garbage to the DLQ, the rest answered."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from adapters.kafka_io import DLQ_REASON_HEADER, DLQ_SOURCE_OFFSET_HEADER
from simulations.tansu import Broker
from tests import test_serve_helpers as h
from tests.stores import PostgresTestDatabase
from tests.test_serve_e2e import make_topics
from tests.test_serve_helpers import reap_serve_processes  # noqa: F401 (autouse)

CELL = "az-4"
GARBAGE = [b"\xff\xfe\x00\x81not utf-8", b"{not json", b"", b"\x00\x01\x02"]


def poison(i: int) -> list[tuple[str | None, bytes]]:
    """Every kind of bad record, with command ids made unique by `i`."""
    bad_json = {"type": "CreateInstance", "command_id": f"bad-fields-{i}", "cell": CELL,
                "issued_at": "yesterday", "instance_id": "UPPER_CASE"}
    return [
        (CELL, GARBAGE[i % len(GARBAGE)]),
        (CELL, json.dumps({"type": "Frobnicate", "command_id": f"unknown-{i}",
                           "cell": CELL}).encode()),
        (CELL, json.dumps(bad_json).encode()),
        (CELL, json.dumps([1, 2, 3]).encode()),
        # Valid commands the state forbids: an instance that never existed.
        (CELL, json.dumps({"type": "StopInstance", "command_id": f"forbidden-{i}",
                           "cell": CELL, "issued_at": "2026-01-15T10:00:00Z",
                           "account": "acme", "instance_id": f"ghost-{i}"}).encode()),
    ]


def test_poison_stream_is_processed_to_the_end(
        kafka_broker: Broker, kafka_topic_factory: Callable[..., str],
        pg_database: PostgresTestDatabase, tmp_path: Path) -> None:
    topics = make_topics(kafka_topic_factory)
    setup, commands = h.split_setup(h.workload([CELL], 15))
    store = pg_database.new_schema()
    serve = h.ServeProcess(h.serve_args(store, kafka_broker.bootstrap, topics,
                                        "--tick-interval", "0", "--batch", "50"),
                           tmp_path / "serve.log")
    h.produce_by_role(kafka_broker.bootstrap, topics, setup)
    set_up = h.role_ends(kafka_broker.bootstrap, topics)
    h.wait_until(lambda: h.consumed_all(store, set_up), "the set-up", process=serve)
    # Poison on the tenants' topic, between valid commands on every role's topic.
    stream: list[tuple[str | None, bytes]] = []
    valid: list[tuple[str | None, bytes]] = []
    for i, command in enumerate(commands):
        h.produce_by_role(kafka_broker.bootstrap, topics, [command])
        valid.append((CELL, json.dumps(command).encode()))
        if i % 10 == 3:
            stream.extend(poison(i))
            h.produce(kafka_broker.bootstrap, topics["commands"], poison(i))
    stream.append((None, b"\xc3\x28 keyless garbage"))
    h.produce(kafka_broker.bootstrap, topics["commands"], stream[-1:])
    ends = h.role_ends(kafka_broker.bootstrap, topics)
    assert sum(n for e in ends.values() for n in e.values()) == len(setup) + len(valid) \
        + len(stream)
    h.wait_until(lambda: h.consumed_all(store, ends), "the whole stream", process=serve)
    assert serve.terminate() == 0

    garbage = [v for _, v in stream if _not_a_command(v)]
    dead = h.read_topic(kafka_broker.bootstrap, topics["dlq"])
    assert sorted(r.value for r in dead) == sorted(garbage)
    for record in dead:
        reason = record.header(DLQ_REASON_HEADER)
        assert reason is not None and reason.decode().startswith(("not UTF-8", "not JSON"))
        assert record.header(DLQ_SOURCE_OFFSET_HEADER) is not None

    published = h.read_topic(kafka_broker.bootstrap, topics["outcomes"])
    assert len(published) == len(setup) + len(valid) + len(stream) - len(garbage), \
        "one outcome per non-garbage record"
    outcomes = [json.loads(r.value) for r in published]
    rejected = {o.get("command_id"): o for o in outcomes if o["status"] == "rejected"}
    for prefix in ("unknown-", "bad-fields-", "forbidden-"):
        hits = [o for k, o in rejected.items() if k and k.startswith(prefix)]
        assert hits and all(o["reasons"] for o in hits), prefix
    keyless = [o for o in outcomes if o.get("command_id") is None]
    assert keyless and all(o["status"] == "rejected" and o["reasons"] for o in keyless)
    assert all(r.header("cis.source") for r in published if r.key is None)

    # Valid commands took effect exactly as `cis apply` of the same bytes decides them.
    reference = pg_database.new_schema()
    h.apply_reference(reference, h.in_served_order(store, [*setup, *commands]))
    served, applied = h.snapshot(store), h.snapshot(reference)
    assert served["events"] == applied["events"]
    assert served["tables"] == applied["tables"]
    accepted = {o["command_id"] for o in outcomes if o["status"] == "accepted"}
    assert accepted == {c["command_id"] for c in [*setup, *commands]} - set(rejected)
    assert len(accepted) > len(valid) // 2


def _not_a_command(value: bytes) -> bool:
    try:
        json.loads(value.decode("utf-8"))
    except ValueError:
        return True
    return False
