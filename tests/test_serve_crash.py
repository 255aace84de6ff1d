"""`cis serve` killed at named points (and at random moments) keeps exactly-once intake.

Each run of the engine dies with os._exit(137) where `CIS_CRASH_AT` says (or with SIGKILL
from outside) and is restarted; at the end the store must hold what `cis apply` of the
same commands holds (nothing lost, nothing twice), and every command must have an outcome.
"""

from __future__ import annotations

import random
import signal
from collections.abc import Callable
from pathlib import Path

from simulations.tansu import Broker
from tests import test_serve_helpers as h
from tests.stores import PostgresTestDatabase
from tests.test_serve_e2e import CELLS, make_topics
from tests.test_serve_helpers import reap_serve_processes  # noqa: F401 (autouse)

# point:n — crash the n-th time the point is reached in that run.
CRASHES = ["after-poll:3", "mid-batch:2", "after-commit:2", "after-publish:2",
           "mid-batch:4", "after-commit:5"]
EXTERNAL_KILLS = 3


def test_crashes_lose_nothing_and_duplicate_nothing(
        kafka_broker: Broker, kafka_topic_factory: Callable[..., str],
        pg_database: PostgresTestDatabase, tmp_path: Path) -> None:
    topics = make_topics(kafka_topic_factory)
    commands = h.workload(CELLS, 240)
    assert len(commands) > 3000
    h.produce_by_role(kafka_broker.bootstrap, topics, commands)
    ends = h.role_ends(kafka_broker.bootstrap, topics)
    store = pg_database.new_schema()
    args = h.serve_args(store, kafka_broker.bootstrap, topics, "--tick-interval", "0",
                        "--batch", "150", "--poll-records", "150")
    log = tmp_path / "serve.log"

    for crash in CRASHES:
        serve = h.ServeProcess(args, log, env={"CIS_CRASH_AT": crash})
        code = serve.wait()
        assert code == 137, f"{crash}: exit {code}, expected the injected crash; log {log}"
    injected = [line["point"] for line in h.ServeProcess.lines_of(log)
                if line.get("event") == "crash injected"]
    assert injected == [c.split(":")[0] for c in CRASHES]

    rng = random.Random(11)
    total = sum(n for e in ends.values() for n in e.values())
    for k in range(EXTERNAL_KILLS):
        before = h.stored_total(store, ends)
        serve = h.ServeProcess(args, log)
        # Leave room for the remaining kills and a final run; land anywhere in a batch.
        target = before + (total - before) // (EXTERNAL_KILLS + 1 - k) - rng.randrange(0, 150)

        def advanced(target: int = target) -> bool:
            return h.stored_total(store, ends) >= target

        h.wait_until(advanced, "progress before the kill", process=serve)
        serve.process.send_signal(signal.SIGKILL)
        assert serve.wait() == -signal.SIGKILL

    started = len(serve.events("serving"))
    serve = h.ServeProcess(args, log)
    # The kills may have left nothing to consume: wait for the start too, or SIGTERM could
    # arrive before the handler is installed; and for the re-publication of the outcomes the
    # last kill left unsent, or the SIGTERM could cut it short.
    h.wait_until(lambda: len(serve.events("serving")) > started
                 and h.consumed_all(store, ends) and h.published_all(store, ends),
                 "the rest, its outcomes published", process=serve)
    assert serve.terminate() == 0

    reference = pg_database.new_schema()
    # Records of different topics interleave as polls return them: take serve's order.
    printed = h.apply_reference(reference, h.in_served_order(store, commands))
    served, applied = h.snapshot(store), h.snapshot(reference)
    assert served["events"] == applied["events"], "events lost or duplicated"
    assert served["outcomes"] == applied["outcomes"]
    assert served["tables"] == applied["tables"]

    published = h.outcomes_by_id(h.read_topic(kafka_broker.bootstrap, topics["outcomes"]))
    expected = {o["command_id"]: o for o in printed}
    assert set(published) == set(expected), "a command has no outcome"
    for command_id, copies in published.items():
        assert all(c == expected[command_id] for c in copies), command_id
    # The crash after the commit and before publishing must have been repaired by
    # re-publishing: some outcomes exist twice, none is missing.
    assert any(len(copies) > 1 for copies in published.values())
