"""Shared by the `cis serve` tests: workloads, a serve subprocess, and store/topic readers.

(No tests here; the name keeps it with the files it serves.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import psycopg
import pytest

from adapters.bootstrap import connect
from adapters.kafka_io import CommandSource, Publisher, Record
from schemas.commands import COMMAND_ROLES
from simulations import workloads
from simulations.tansu import _die_with_parent

CIS = str(Path(sys.executable).parent / "cis")
# Guards against hangs only (the tests assert on content, never on timing).
DEADLINE_S = 120.0
# The node a workload's instance reports name (the workload cannot know placements; a
# report naming another node is rejected, alike under `cis serve` and `cis apply`).
GUESSED_NODE = "general-00001"
# The topic (its key in a test's topics) each role writes.
ROLE_TOPIC_KEYS = {"tenant": "commands", "agent": "reports", "operator": "admin"}
ROLE_TOPICS = tuple(ROLE_TOPIC_KEYS.values())


def workload(cells: Iterable[str], instances: int, seed: int = 3) -> list[dict[str, Any]]:
    """Per cell: set-up, node reports, creates, lifecycle reports, stops and ticks.

    Commands of different cells interleave; within a cell they keep their time order.
    """
    per_cell: list[list[dict[str, Any]]] = []
    for k, cell in enumerate(cells):
        start = workloads.DAY_START
        timed: list[tuple[Any, int, dict[str, Any]]] = []
        for command in workloads.setup(start, cell):
            timed.append((start, len(timed), command))
        ready = start + timedelta(seconds=45)
        for node in ("general-00001", "general-00002", "kata-00001"):
            timed.append((ready, len(timed), {
                "type": "ReportNodeReady", "command_id": f"{cell}-ready-{node}", "cell": cell,
                "occurred_at": ready.isoformat(), "node_id": node}))
        creates, _ = workloads.tenants(instances, seed + k, start, cell)
        for at, create in creates:
            name = create["instance_id"]
            create["command_id"] = f"{cell}-{create['command_id']}"
            timed.append((at, len(timed), create))
            for dt, kind in ((2, "ReportInstanceStarting"), (4, "ReportInstanceRunning")):
                t = at + timedelta(seconds=dt)
                timed.append((t, len(timed), {
                    "type": kind, "command_id": f"{cell}-{kind}-{name}", "cell": cell,
                    "occurred_at": t.isoformat(), "account": create["account"],
                    "instance_id": name, "node_id": GUESSED_NODE}))
            t = at + timedelta(seconds=600)
            timed.append((t, len(timed), {
                "type": "StopInstance", "command_id": f"{cell}-stop-{name}", "cell": cell,
                "issued_at": t.isoformat(), "account": create["account"],
                "instance_id": name}))
        for at, tick in workloads.ticks(start, 24, every_s=1800, cell=cell):
            timed.append((at, len(timed), tick))
        per_cell.append([c for _, _, c in sorted(timed, key=lambda x: (x[0], x[1]))])
    # Round-robin the cells, as independent producers would.
    mixed: list[dict[str, Any]] = []
    for i in range(max(len(c) for c in per_cell)):
        mixed.extend(c[i] for c in per_cell if i < len(c))
    return mixed


def produce(bootstrap: str, topic: str, values: Iterable[tuple[str | None, bytes]]) -> None:
    """A plain producer: (cell key, bytes) per record."""
    with Publisher(bootstrap, client_id="test-producer") as publisher:
        for key, value in values:
            publisher.send(topic, value, key=key.encode() if key is not None else None)
        publisher.flush()


def keyed(commands: Iterable[dict[str, Any]]) -> list[tuple[str | None, bytes]]:
    return [(c.get("cell"), json.dumps(c).encode()) for c in commands]


def role_of(command: dict[str, Any]) -> str:
    return ROLE_TOPIC_KEYS[COMMAND_ROLES[command["type"]]]


def produce_by_role(bootstrap: str, topics: dict[str, str],
                    commands: Iterable[dict[str, Any]]) -> None:
    """Each command to its role's topic, keyed by cell, in order."""
    with Publisher(bootstrap, client_id="test-producer") as publisher:
        for c in commands:
            publisher.send(topics[role_of(c)], json.dumps(c).encode(),
                           key=c["cell"].encode())
        publisher.flush()


def split_setup(commands: list[dict[str, Any]]
                ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(price books, pools and networks, the rest): an operator sets a cell up before its tenants
    come; on separate topics, nothing else orders them."""
    setup = [c for c in commands
             if c["type"] in ("PublishPriceBook", "ConfigurePool", "SetAccountNetworks")]
    return setup, [c for c in commands if c not in setup]


def role_ends(bootstrap: str, topics: dict[str, str], partitions: int = 2
              ) -> dict[str, dict[int, int]]:
    """End offsets of the role topics, by topic name."""
    return {topics[k]: end_offsets(bootstrap, topics[k], partitions) for k in ROLE_TOPICS}


def consumed_all(store: str, ends: dict[str, dict[int, int]]) -> bool:
    return all(consumed(store, topic, e) for topic, e in ends.items())


def published_all(store: str, ends: dict[str, dict[int, int]]) -> bool:
    """True once every partition's outcomes are flushed to the broker (its `kafka-published`
    row reached the end): re-publication after a restart has finished."""
    stored = positions(store)
    return all(stored.get(f"kafka-published:{t}:{p}", -1) + 1 >= end
               for t, e in ends.items() for p, end in e.items())


def stored_total(store: str, ends: dict[str, dict[int, int]]) -> int:
    """Records decided so far, over the topics and partitions of `ends`."""
    stored = positions(store)
    return sum(stored.get(f"kafka:{t}:{p}", -1) + 1 for t, e in ends.items() for p in e)


def served_order(store: str) -> list[str]:
    """Command ids in the order `cis serve` decided them (as its cell logs hold them):
    records of different topics interleave as polls return them, so a reference `cis apply`
    must take them in this order."""
    order: list[str] = []
    with connect(store) as engine:
        for _, event in engine.app.read():
            if type(event).__qualname__ == "CellLog.CommandsHandled":
                order.extend(o["command_id"] for o in event.outcomes)
    return order


def in_served_order(store: str, commands: list[dict[str, Any]]) -> list[bytes]:
    """`commands` as lines, in the order serve decided them (undecided ones last)."""
    rank = {c: i for i, c in enumerate(served_order(store))}
    ordered = sorted(commands, key=lambda c: rank.get(c["command_id"], len(rank)))
    return [json.dumps(c).encode() for c in ordered]


def serve_args(store: str, bootstrap: str, topics: dict[str, str], *extra: str) -> list[str]:
    """`cis serve` on these topics; without "vm" and "pod" topics, with the outbox off."""
    outbox = ["--vm-topic", topics["vm"], "--pod-topic", topics["pod"]] \
        if "vm" in topics and "pod" in topics else ["--outbox", "off"]
    roles = [a for k in ("reports", "admin") if k in topics for a in (f"--{k}-topic", topics[k])]
    return [CIS, "serve", "--store", store, "--kafka", bootstrap, *roles,
            "--commands-topic", topics["commands"], "--outcomes-topic", topics["outcomes"],
            "--dlq-topic", topics["dlq"], "--progress-interval", "2", *outbox, *extra]


_running: list[ServeProcess] = []


@pytest.fixture(autouse=True)
def reap_serve_processes() -> Iterator[None]:
    """Import into a test module: a failing test must not leave `cis serve` running."""
    yield
    while _running:
        _running.pop().kill()


class ServeProcess:
    """`cis serve` in a subprocess, its JSON log lines in a file."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None):
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115
        self.process = subprocess.Popen(args, stdout=self._log, stderr=self._log,
                                        env={**os.environ, **(env or {})},
                                        preexec_fn=_die_with_parent)
        _running.append(self)

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait(self, timeout: float = DEADLINE_S) -> int:
        try:
            return self.process.wait(timeout)
        finally:
            if self.process.poll() is not None:
                self._log.close()
                if self in _running:
                    _running.remove(self)

    def terminate(self) -> int:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        return self.wait()

    def kill(self) -> int:
        if self.alive():
            self.process.kill()
        return self.wait()

    def lines(self) -> list[dict[str, Any]]:
        return self.lines_of(self.log_path)

    @staticmethod
    def lines_of(log_path: Path) -> list[dict[str, Any]]:
        """The JSON log lines of a log file (other lines as {"event": "raw"})."""
        out = []
        for line in log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"event": "raw", "text": line})
        return out

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line.get("event") == name]


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = DEADLINE_S,
               process: ServeProcess | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if process is not None and not process.alive():
            raise AssertionError(f"cis serve exited ({process.process.returncode}) while "
                                 f"waiting for {what}; log {process.log_path}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _schema(store: str) -> str:
    return parse_qs(urlparse(store).query).get("schema", ["public"])[0]


def positions(store: str) -> dict[str, int]:
    """Tracking rows of the store (application name → notification id)."""
    base = store.split("?")[0]
    try:
        with psycopg.connect(base, connect_timeout=3) as conn:
            rows = conn.execute(f'SELECT application_name, notification_id FROM '
                                f'"{_schema(store)}".cis_tracking').fetchall()
    except (psycopg.errors.UndefinedTable, psycopg.OperationalError):
        return {}
    return dict(rows)


def consumed(store: str, topic: str, ends: dict[int, int]) -> bool:
    """True once every partition's stored position reached its end offset."""
    stored = positions(store)
    return all(stored.get(f"kafka:{topic}:{p}", -1) + 1 >= end for p, end in ends.items())


def read_topic(bootstrap: str, topic: str, timeout: float = 30.0) -> list[Record]:
    """Every record of every partition, from offset 0 to the current end."""
    with CommandSource(bootstrap, topic, client_id="test-reader") as source:
        source.seek_all({p: 0 for p in source.partitions})
        got: list[Record] = []
        deadline = time.monotonic() + timeout
        while True:
            batch = source.poll_batch(max_records=5000, timeout_ms=500)
            for records in batch.values():
                got.extend(records)
            ends = source.end_offsets()
            if all(source.position(p) >= ends[p] for p in source.partitions) and not batch:
                return got
            assert time.monotonic() < deadline, f"could not read {topic} to its end"


def end_offsets(bootstrap: str, topic: str, partitions: int = 2) -> dict[int, int]:
    """Offset after the last record per partition, counted by reading (tansu's ListOffsets
    can under-report)."""
    ends = dict.fromkeys(range(partitions), 0)
    for record in read_topic(bootstrap, topic):
        ends[record.partition] = max(ends[record.partition], record.offset + 1)
    return ends


def outcomes_by_id(records: Iterable[Record]) -> dict[str, list[dict[str, Any]]]:
    by_id: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        outcome = json.loads(record.value)
        by_id.setdefault(outcome.get("command_id"), []).append(outcome)
    return by_id


def snapshot(store: str) -> dict[str, Any]:
    """What must match between two stores fed the same commands.

    Events of every aggregate but the cell logs compare exactly (state and order). Cell
    logs record one event per batch, so only the outcomes they hold compare.
    """
    with connect(store) as engine:
        engine.update_projections()
        events: dict[str, list[tuple[str, bytes]]] = {}
        outcomes: dict[str, Any] = {}
        for _, event in engine.app.read():
            if type(event).__qualname__ == "CellLog.CommandsHandled":
                for outcome in event.outcomes:
                    assert outcome["command_id"] not in outcomes, "outcome recorded twice"
                    outcomes[outcome["command_id"]] = outcome
            elif not type(event).__qualname__.startswith("CellLog."):
                stored = engine.app.mapper.to_stored_event(event)
                events.setdefault(str(event.originator_id), []).append(
                    (stored.topic, stored.state))
        tables = {t.name: engine.view.select(t) for p in engine.projections for t in p.tables}
    return {"events": events, "outcomes": outcomes, "tables": tables}


def apply_reference(store: str, lines: list[bytes]) -> list[dict[str, Any]]:
    """`cis apply` of the same lines into another store; its printed outcomes."""
    result = subprocess.run([CIS, "apply", "--role", "any", "--store", store, "-"],
                            input=b"\n".join(lines), capture_output=True, check=True,
                            timeout=DEADLINE_S)
    return [json.loads(line) for line in result.stdout.splitlines()]
