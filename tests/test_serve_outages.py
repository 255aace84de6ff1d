"""`cis serve` rides out a frozen broker and a PostgreSQL restart without loss.

The broker is paused (SIGSTOP) rather than restarted because tansu loses its topics on a
restart. PostgreSQL is a private cluster (initdb on a free port) so the test can restart
it. `CIS_TEST_BROKER_PAUSE_S` sets the pause (default 12 s to keep CI short; the issue's
30 s was verified by hand with CIS_TEST_BROKER_PAUSE_S=30).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from simulations.tansu import Broker
from tests import test_serve_helpers as h
from tests.stores import PostgresTestDatabase
from tests.test_serve_e2e import CELLS, make_topics
from tests.test_serve_helpers import reap_serve_processes  # noqa: F401 (autouse)

PAUSE_S = float(os.environ.get("CIS_TEST_BROKER_PAUSE_S", "12"))


def _assert_served_like_apply(store: str, pg_database: PostgresTestDatabase, bootstrap: str,
                              topics: dict[str, str], commands: list[dict]) -> None:
    reference = pg_database.new_schema()
    printed = h.apply_reference(reference, h.in_served_order(store, commands))
    served, applied = h.snapshot(store), h.snapshot(reference)
    assert served["events"] == applied["events"], "events lost or duplicated"
    assert served["tables"] == applied["tables"]
    published = h.outcomes_by_id(h.read_topic(bootstrap, topics["outcomes"]))
    expected = {o["command_id"]: o for o in printed}
    assert set(published) == set(expected), "a command has no outcome"
    assert all(c == expected[k] for k, copies in published.items() for c in copies)


def _warned(serve: h.ServeProcess, event: str) -> bool:
    return bool(serve.events(event))


def test_broker_pause(kafka_broker: Broker, kafka_topic_factory: Callable[..., str],
                      pg_database: PostgresTestDatabase, tmp_path: Path) -> None:
    topics = make_topics(kafka_topic_factory)
    commands = h.workload(CELLS, 150)
    half = len(commands) // 2
    store = pg_database.new_schema()
    serve = h.ServeProcess(h.serve_args(store, kafka_broker.bootstrap, topics,
                                        "--tick-interval", "0", "--batch", "100"),
                           tmp_path / "serve.log")
    h.produce_by_role(kafka_broker.bootstrap, topics, commands[:half])
    h.wait_until(lambda: sum(v for k, v in h.positions(store).items()
                             if k.startswith("kafka:")) > 0, "first commands", process=serve)
    kafka_broker.pause()
    try:
        h.wait_until(lambda: _warned(serve, "broker unavailable; retrying"),
                     "the outage to be reported", timeout=PAUSE_S + 30, process=serve)
        time.sleep(max(0.0, PAUSE_S - 5))
    finally:
        kafka_broker.resume()
    h.produce_by_role(kafka_broker.bootstrap, topics, commands[half:])
    ends = h.role_ends(kafka_broker.bootstrap, topics)
    assert sum(n for e in ends.values() for n in e.values()) == len(commands)
    h.wait_until(lambda: h.consumed_all(store, ends), "the rest", process=serve)
    h.wait_until(lambda: _warned(serve, "broker available again"), "recovery", process=serve)
    assert serve.terminate() == 0
    _assert_served_like_apply(store, pg_database, kafka_broker.bootstrap, topics, commands)


class PrivatePostgres:
    """A throwaway PostgreSQL cluster we may stop and start (runs as the postgres user)."""

    def __init__(self, root: Path) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not found:
            pytest.fail("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
        self.bin = Path(found[-1]).parent
        self.root = root
        self.data = root / "data"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        shutil.chown(root, "postgres", "postgres")
        self._as_postgres("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres")

    def _as_postgres(self, tool: str, *args: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        result = subprocess.run([*prefix, str(self.bin / tool), *args], capture_output=True,
                                text=True, timeout=120)
        if result.returncode != 0:
            pytest.fail(f"{tool} failed: {result.stdout}\n{result.stderr}")

    def _ctl(self, *args: str) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres("pg_ctl", "-D", str(self.data), "-o", options,
                          "-l", str(self.root / "pg.log"), "-w", *args)

    def start(self) -> None:
        self._ctl("start")

    def stop(self) -> None:
        self._ctl("stop", "-m", "fast")

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    # Not under pytest's tmp dir: the postgres user must be able to reach it.
    root = Path(tempfile.mkdtemp(prefix="cis-pg-"))
    os.chmod(root, 0o755)
    cluster = PrivatePostgres(root)
    cluster.start()
    try:
        yield cluster
    finally:
        try:
            cluster.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)


def test_postgres_restart(kafka_broker: Broker, kafka_topic_factory: Callable[..., str],
                          pg_database: PostgresTestDatabase, private_postgres: PrivatePostgres,
                          tmp_path: Path) -> None:
    with psycopg.connect(private_postgres.url("postgres"), autocommit=True) as conn:
        conn.execute("CREATE DATABASE cis")
    with psycopg.connect(private_postgres.url("cis"), autocommit=True) as conn:
        conn.execute("CREATE SCHEMA s")
    store = private_postgres.url("cis") + "?schema=s"
    topics = make_topics(kafka_topic_factory)
    commands = h.workload(CELLS, 250)
    half = len(commands) // 2
    h.produce_by_role(kafka_broker.bootstrap, topics, commands[:half])
    serve = h.ServeProcess(h.serve_args(store, kafka_broker.bootstrap, topics,
                                        "--tick-interval", "0", "--batch", "50"),
                           tmp_path / "serve.log")
    h.wait_until(lambda: sum(v for k, v in h.positions(store).items()
                             if k.startswith("kafka:")) > 300, "first commands", process=serve)
    private_postgres.stop()
    # Records that arrive while the store is down: serve must try, fail and back off.
    h.produce_by_role(kafka_broker.bootstrap, topics, commands[half:])
    ends = h.role_ends(kafka_broker.bootstrap, topics)
    assert sum(n for e in ends.values() for n in e.values()) == len(commands)
    try:
        # Reported while eventsourcing still retries inside, then our own back-off.
        h.wait_until(lambda: _warned(serve, "store not answering"), "the outage reported",
                     process=serve)
        h.wait_until(lambda: _warned(serve, "store unavailable; retrying"),
                     "our own retry with back-off", process=serve)
    finally:
        private_postgres.start()
    h.wait_until(lambda: h.consumed_all(store, ends), "the rest", process=serve)
    h.wait_until(lambda: _warned(serve, "store available again"), "recovery", process=serve)
    assert serve.terminate() == 0
    assert len(serve.events("serving")) == 1, "the engine rides out the outage, no restart"
    _assert_served_like_apply(store, pg_database, kafka_broker.bootstrap, topics, commands)
