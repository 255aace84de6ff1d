"""`cis serve`'s child processes (projector, outbox) are started again when they die, and
resume from their stored positions: every VM/Pod command still goes out, every row appears."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path

from adapters.bootstrap import connect
from simulations.tansu import Broker
from tests import test_serve_helpers as h
from tests.stores import PostgresTestDatabase
from tests.test_outbox import per_event
from tests.test_serve_e2e import CELLS, make_topics
from tests.test_serve_helpers import reap_serve_processes  # noqa: F401 (autouse)


def test_killed_workers_are_revived_and_lose_nothing(
        kafka_broker: Broker, kafka_topic_factory: Callable[..., str],
        pg_database: PostgresTestDatabase, tmp_path: Path) -> None:
    topics = make_topics(kafka_topic_factory, names=("outcomes", "dlq", "vm", "pod"))
    commands = h.workload(CELLS, 20)
    half = len(commands) // 2
    store = pg_database.new_schema()
    serve = h.ServeProcess(h.serve_args(store, kafka_broker.bootstrap, topics,
                                        "--tick-interval", "0"), tmp_path / "serve.log")
    h.produce_by_role(kafka_broker.bootstrap, topics, commands[:half])
    h.wait_until(lambda: len(serve.events("outbox started")) == 1
                 and len(serve.events("projector started")) == 1, "both workers", process=serve)
    for name in ("outbox", "projector"):
        os.kill(serve.events(f"{name} started")[0]["pid"], signal.SIGKILL)

    h.produce_by_role(kafka_broker.bootstrap, topics, commands[half:])
    ends = h.role_ends(kafka_broker.bootstrap, topics)
    h.wait_until(lambda: h.consumed_all(store, ends), "all commands", process=serve)
    h.wait_until(lambda: len(serve.events("outbox started")) == 2
                 and len(serve.events("projector started")) == 2, "both workers revived",
                 process=serve)
    assert serve.terminate() == 0, serve.log_path.read_text()
    assert len(serve.events("outbox died; starting it again")) == 1

    with connect(store) as engine:
        expected = {c.command_id for cs in per_event(engine).values() for c in cs}
        projected = engine.view.max_tracking_id("instances")
        last = engine.app.recorder.max_notification_id()
    sent = {json.loads(r.value)["command_id"] for topic in ("vm", "pod")
            for r in h.read_topic(kafka_broker.bootstrap, topics[topic])}
    assert expected and sent == expected
    assert projected == last, "the revived projector caught up"
