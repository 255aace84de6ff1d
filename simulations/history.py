"""A long synthetic history written straight into a store (`cis bench history`).

Running the engine for 30 days of 100,000 launches would take hours, and (until the writer
compacts its state) more memory than a machine has. So the real engine records two days,
each right after the cell's set-up, on a virtual clock (simulations/harness.py answers as the
infrastructure would), in two processes at once:

- the *template* day, which ends as it began: every instance it created is deleted, every
  node it added is terminated, so the next day starts from the state the set-up left;
- the *last* day, which leaves `live` instances running.

The history is the set-up, the template day D-1 times, then the last day. Each copy is the
recorded events with the day moved: instance names, command ids and node numbers renumbered,
times shifted by whole days, versions of the long-lived aggregates (the cell log, the pools)
moved on, and command digests taken again from the renamed commands. That is what the engine
writes when it is given every day's commands: tests/test_bench_history.py holds a short
history equal, byte for byte, to the one the engine writes.

The history lies in one billing month (January 2026), so no period is finalised in it.

Recording a day costs the engine's own decision time (about 7 minutes of CPU for 100,000
launches, on the harness's 30 s batches): `make_template(recordings=DIR)` keeps the two
recorded days and reuses them, so every history of that size and seed costs only its copies
(about 70,000 events/s of CPU, digests included). The bench chains the copies
(bench_history.chained) as the engine would have.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import sqlite3
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.persistence import StoredEvent

from adapters.bootstrap import connect
from engine import processor
from engine.domain.instance import Instance
from engine.domain.node import Node
from schemas.outcomes import parse_command
from simulations.harness import Harness, Plan
from simulations.workloads import account_networks

CELL = "az-1"
START = datetime(2026, 1, 1, tzinfo=UTC)
SETUP_TIME = timedelta(hours=1)  # the set-up's nodes boot; day k runs from START + 1 h + k d
DAY = timedelta(days=1)
MAX_DAYS = 30  # every day stays in January: no billing period closes in the history
TICK_EVERY_S = 300
# The harness decides the commands of each 30 s of simulated time as one batch (a Kafka poll
# takes what has arrived): a quarter fewer events and a third less CPU than 1 s batches.
RECORD_WINDOW_S = 30.0
ACCOUNTS = 100
# Harness command ids are `sim-N`; day k's count from k * ID_STRIDE.
ID_STRIDE = 10_000_000
# Where the template days are recorded: tmpfs if there is one (SQLite's fsyncs are free).
SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") else None
KATA_MODELS = [{"name": "16C64G", "millicores": 16000, "memory_mib": 65536, "enis": 60,
                "pods": 110}]
DEDICATED_MODELS = [
    {"name": "1C2G", "millicores": 1000, "memory_mib": 2048, "enis": 2, "pods": 4},
    {"name": "2C4G", "millicores": 2000, "memory_mib": 4096, "enis": 2, "pods": 4},
]
SPECS = [{"vcpu": "0.25", "memory_gib": "0.5"}, {"vcpu": "0.25", "memory_gib": "1"},
         {"vcpu": "0.5", "memory_gib": "1"}, {"vcpu": "0.5", "memory_gib": "2"}]
CATALOGUE = [*SPECS, {"vcpu": "1", "memory_gib": "2"}]
ENDINGS = (("stop", 60), ("succeed", 25), ("fail", 10), ("crashloop", 5))
POLICY = {"stop": "Always", "succeed": "OnFailure", "fail": "Never", "crashloop": "Always"}
# Daily aggregates (created by a day and gone by its end): kind, and how their id is made.
DAILY_KINDS: dict[str, Callable[[dict[str, Any]], tuple[str, ...]]] = {
    "engine.domain.instance:Instance": lambda s: (s["cell"], s["account"], s["name"]),
    "engine.domain.node:Node": lambda s: (s["cell"], s["node_id"]),
}
DAILY_IDS: dict[str, Callable[..., UUID]] = {
    "engine.domain.instance:Instance": Instance.create_id,
    "engine.domain.node:Node": Node.create_id,
}
# The last event of a daily aggregate that leaves nothing for the next day.
GONE_TOPICS = frozenset({"engine.domain.instance:Instance.Deleted",
                         "engine.domain.instance:Instance.Expired",
                         "engine.domain.node:Node.Terminated", "engine.domain.node:Node.Lost"})
CELL_LOG_TOPIC = "engine.domain.cell_log:CellLog.CommandsHandled"
NODE_WANTED_TOPIC = "engine.domain.pool:Pool.NodeWanted"


class HistoryError(ValueError):
    """The history cannot be made as asked (the message says why)."""


def day_start(day: int) -> datetime:
    return START + SETUP_TIME + day * DAY


def instance_name(day: int, i: int) -> str:
    return f"j{day:03d}-{i:06d}"


# --- the workload: set-up, a day of tenants, ticks -------------------------------------------


def setup() -> list[dict[str, Any]]:
    at = START.isoformat()
    return [
        {"type": "PublishPriceBook", "command_id": "setup-price", "cell": CELL, "issued_at": at,
         "effective_from": at, "currency": "USD", "minor_unit": 2,
         "rate_per_vcpu_second": "0.000011244", "rate_per_gib_second": "0.000001235"},
        {"type": "ConfigurePool", "command_id": "setup-pool-kata", "cell": CELL,
         "issued_at": at, "pool": "kata", "kind": "shared", "node_models": KATA_MODELS,
         "min_nodes": 0, "max_nodes": 5000,
         "disruption_budget": 100, "spec_catalogue": CATALOGUE},
        {"type": "ConfigurePool", "command_id": "setup-pool-general", "cell": CELL,
         "issued_at": at, "pool": "general", "kind": "dedicated",
         "node_models": DEDICATED_MODELS, "min_nodes": 0, "max_nodes": 5000,
         "disruption_budget": 100,
         "spec_catalogue": CATALOGUE},
        *account_networks((f"acct-{k:03d}" for k in range(ACCOUNTS)), CELL, START,
                          {"vpc": "vpc-1", "subnet": "subnet-a", "security_groups": ["sg-web"]}),
    ]


def tenants(day: int, launches: int, live: int, seed: int
            ) -> tuple[list[tuple[datetime, dict[str, Any]]], dict[str, Plan]]:
    """A day's CreateInstance commands (between 1 and 20 hours into the day) and what each
    instance does: 90% kata, 10% runc on dedicated nodes; runs of up to two hours; every
    instance deleted 10 minutes after it ends, except `live` kata services that never end."""
    rng = random.Random(seed)
    services = frozenset(rng.sample(range(launches), live))
    begin = day_start(day)
    creates, plans = [], {}
    for i in range(launches):
        at = begin + timedelta(seconds=rng.uniform(60, 20 * 3600))
        spec = rng.choice(SPECS)
        kata = i in services or rng.random() < 0.9
        ending = rng.choices([e for e, _ in ENDINGS], [w for _, w in ENDINGS])[0]
        name = instance_name(day, i)
        creates.append((at, {
            "type": "CreateInstance", "command_id": f"create-{name}", "cell": CELL,
            "issued_at": at.isoformat(), "account": f"acct-{rng.randrange(ACCOUNTS):03d}",
            "instance_id": name, "pool": "kata" if kata else "general",
            "restart_policy": "Always" if i in services else POLICY[ending],
            "runtime": "kata" if kata else "runc",
            "containers": [{"name": "main", "image": f"registry.example/app:{i % 7}",
                            **spec}],
            "network": {"vpc": "vpc-1", "subnet": "subnet-a", "security_groups": ["sg-web"]},
        }))
        if i not in services:
            plans[name] = Plan(lifetime_s=rng.uniform(60, 2 * 3600), ending=ending,
                               delete_after_s=600.0)
    return creates, plans


def ticks(day: int) -> list[tuple[datetime, dict[str, Any]]]:
    out = []
    for k in range(1, int(DAY.total_seconds()) // TICK_EVERY_S + 1):
        at = day_start(day) + timedelta(seconds=k * TICK_EVERY_S)
        out.append((at, {"type": "Tick", "command_id": f"tick-{at.isoformat()}", "cell": CELL,
                         "now": at.isoformat()}))
    return out


def first_decision(days: int, name: str) -> dict[str, Any]:
    """A create just after the history ends: the writer's first decision after start-up."""
    at = day_start(days - 1) + DAY + timedelta(seconds=1)
    return {"type": "CreateInstance", "command_id": name, "cell": CELL,
            "issued_at": at.isoformat(), "account": "acct-000", "instance_id": name,
            "pool": "kata", "runtime": "kata", "restart_policy": "Always",
            "containers": [{"name": "main", "image": "nginx", **SPECS[0]}],
            "network": {"vpc": "vpc-1", "subnet": "subnet-a"}}


@dataclass
class RecordingHarness(Harness):
    """The simulated infrastructure, keeping every command it sends (to digest copies)."""

    sent: dict[str, bytes] = field(default_factory=dict)

    def submit(self, at: datetime, command: dict[str, Any]) -> None:
        # A copy: orjson's own result keeps a ~4 KB buffer, a million of them 4 GB.
        self.sent[command["command_id"]] = bytes(memoryview(orjson.dumps(command)))
        super().submit(at, command)


def run_day(harness: Harness, day: int, launches: int, live: int, seed: int,
            progress: Callable[[int], None] | None = None) -> None:
    creates, plans = tenants(day, launches, live, seed)
    harness.plans.update(plans)
    for at, command in [*creates, *ticks(day)]:
        harness.submit(at, command)
    begin = day_start(day)
    for hour in range(1, 25):  # an hour at a time, for the progress bar
        harness.run(until=begin + hour * timedelta(hours=1), window_s=RECORD_WINDOW_S)
        if progress:
            progress(1)


# --- the template: two real days ---------------------------------------------------------


@dataclass
class Sent:
    """The commands one recorded day sent (command id -> as sent), to digest their copies."""

    raw: dict[str, bytes]
    cutter: Cutter
    _canonical: dict[str, Parts | None] = field(default_factory=dict)

    def command(self, command_id: str) -> Parts:
        return self.cutter.cut(self.raw[command_id])

    def canonical(self, command_id: str) -> Parts | None:
        """The command's canonical content (what its digest hashes), cut; None if the
        engine's digest cannot be reproduced from it (then each copy parses its command)."""
        if command_id not in self._canonical:
            found = canonical_content(self.raw[command_id])
            self._canonical[command_id] = None if found is None else self.cutter.cut(found)
        return self._canonical[command_id]


@dataclass
class Template:
    setup: list[StoredEvent]
    day: list[Cut]  # ends as it began
    last: list[Cut]  # leaves the live instances running
    cutter: Cutter
    moved_versions: dict[UUID, int]  # long-lived aggregate -> its events in a template day
    moved_labels: dict[bytes, int]  # its label in outcomes (b"pool/kata") -> the same
    nodes: dict[bytes, tuple[int, int]]  # pool -> (nodes after set-up, nodes a day adds)
    daily: dict[UUID, tuple[str, tuple[Parts, ...]]]  # daily aggregate -> (kind, id parts)
    day_sent: Sent | None = None
    last_sent: Sent | None = None

    def events_in(self, days: int) -> int:
        return len(self.setup) + (days - 1) * len(self.day) + len(self.last)


def canonical_content(raw: bytes) -> bytes | None:
    """The bytes `content_digest` hashes, checked against it: a renamed copy of them is the
    renamed command's, so a copy's digest costs a hash, not a parse."""
    command = parse_command(raw)
    hook = getattr(processor, "_canonical", None)
    if hook is None:
        return None
    content = orjson.dumps(command.model_dump(), default=hook,
                           option=orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME)
    same = hashlib.sha256(content).hexdigest()[:32] == processor.content_digest(command)
    return content if same else None


def record_day(path: str, launches: int, live: int, seed: int,
               progress: Callable[[int], None] | None = None) -> None:
    """The set-up and one day through the real engine, into a SQLite file (the memory store
    would keep ~4 KB per event), with the commands sent and the number of set-up events in
    tables of their own. Day 0: copies move it to its place in the history. Written under
    another name and renamed when complete, so a file at `path` is a whole recording."""
    partial = f"{path}.partial"
    if os.path.exists(partial):
        os.remove(partial)
    with connect(f"sqlite:///{partial}") as engine:
        if hasattr(engine.processor, "snapshot_every"):
            engine.processor.snapshot_every = 10**12  # a throw-away store: no snapshots
        harness = RecordingHarness(engine)
        for command in setup():
            harness.submit(START, command)
        harness.run(until=day_start(0))
        n_setup = engine.app.recorder.max_notification_id() or 0
        run_day(harness, 0, launches, live, seed, progress)
    db = sqlite3.connect(partial)
    with db:
        db.execute("CREATE TABLE sent (command_id TEXT PRIMARY KEY, command BLOB)")
        db.executemany("INSERT INTO sent VALUES (?, ?)", harness.sent.items())
        db.execute("CREATE TABLE setup (events INTEGER)")
        db.execute("INSERT INTO setup VALUES (?)", (n_setup,))
    db.close()  # closed, its write-ahead log is folded in: the renamed file is whole
    os.replace(partial, path)


def _load_day(path: str) -> tuple[list[StoredEvent], list[StoredEvent], dict[str, bytes]]:
    with connect(f"sqlite:///{path}") as engine:
        stored = engine.app.recorder.select_notifications(start=1, limit=10**9)
        events = [StoredEvent(n.originator_id, n.originator_version, n.topic, n.state)
                  for n in stored]
    with closing(sqlite3.connect(path)) as db:
        sent = dict(db.execute("SELECT command_id, command FROM sent"))
        (n_setup,), = db.execute("SELECT events FROM setup")
    return events[:n_setup], events[n_setup:], sent


def recording_names(launches: int, live: int, seed: int) -> tuple[str, str]:
    """The files of a template's two recorded days (the template day, the last day), named
    by what makes them: kept in a directory, they serve every later history of that size."""
    window = f"w{RECORD_WINDOW_S:g}"
    return (f"day-{launches}-s{seed}-{window}.db",
            f"last-{launches}-live{live}-s{seed + 1}-{window}.db")


def make_template(launches: int, live: int, days: int, seed: int = 12,
                  progress: Callable[[int], None] | None = None,
                  recordings: str | None = None) -> Template:
    """Record the last day (with `live` instances at its end) and, if the history has more
    days, the template day, in another process at the same time: by the time a day ends,
    the state is what the set-up left, so each day can be recorded right after the set-up.
    `recordings`: a directory that keeps the recorded days and reuses those already there
    (they are the engine's output: empty it after a change to the engine's events)."""
    if not 0 <= live <= launches:
        raise HistoryError(f"--live {live} must lie between 0 and --launches-per-day")
    if not 1 <= days <= MAX_DAYS:
        raise HistoryError(f"--days {days}: give 1 to {MAX_DAYS} (the history lies in one "
                           "billing month)")
    with tempfile.TemporaryDirectory(prefix="cis-history-", dir=SCRATCH) as scratch:
        folder = recordings or scratch
        os.makedirs(folder, exist_ok=True)
        day_path, last_path = (os.path.join(folder, name)
                               for name in recording_names(launches, live, seed))
        recording = subprocess.Popen(  # a process of its own: the two days take two cores
            [sys.executable, "-m", "simulations.history", day_path, str(launches), str(seed)],
            ) if days > 1 and not os.path.exists(day_path) else None
        try:
            if not os.path.exists(last_path):
                record_day(last_path, launches, live, seed + 1, progress)
        finally:
            if recording is not None:
                recording.wait()
        setup_events, last, last_sent = _load_day(last_path)
        day: list[StoredEvent] = []
        day_sent: dict[str, bytes] = {}
        if days > 1:
            if recording is not None and recording.returncode != 0:
                raise HistoryError("recording the template day failed (its error is above)")
            setup_again, day, day_sent = _load_day(day_path)
            if setup_again != setup_events:
                raise HistoryError("the set-up was recorded differently twice")
    template = _describe(setup_events, day, last)
    template.day_sent = Sent(day_sent, template.cutter)
    template.last_sent = Sent(last_sent, template.cutter)
    return template


def _describe(setup_events: list[StoredEvent], day: list[StoredEvent],
              last: list[StoredEvent]) -> Template:
    """What moves from one copy of the day to the next; refuses a day that does not end as
    it began."""
    existing = {e.originator_id for e in setup_events}
    created: dict[UUID, tuple[str, tuple[str, ...]]] = {}
    for e in day + last:  # (both recorded as day 0: one name, one aggregate)
        if e.originator_id in existing or e.originator_id in created:
            continue
        state = orjson.loads(e.state)
        kind = state.get("originator_topic")
        if kind not in DAILY_KINDS:
            raise HistoryError(f"a day creates a {kind or e.topic}: only instances and nodes "
                               "may come and go with a day")
        created[e.originator_id] = (kind, DAILY_KINDS[kind](state))
    last_topic = {e.originator_id: e.topic for e in day if e.originator_id in created}
    alive = Counter(created[k][0].split(":")[-1] for k, t in last_topic.items()
                    if t not in GONE_TOPICS)
    if alive:
        raise HistoryError("the template day does not end as it began; alive at its end: "
                           + ", ".join(f"{n} {kind}" for kind, n in sorted(alive.items())))
    moved_versions = Counter(e.originator_id for e in day if e.originator_id in existing)
    labels = _labels(setup_events)
    moved_labels: Counter[bytes] = Counter()
    wanted: dict[str, Counter[bytes]] = {"setup": Counter(), "day": Counter()}
    for name, events in (("setup", setup_events), ("day", day)):
        for e in events:
            if e.topic == NODE_WANTED_TOPIC:
                pool = orjson.loads(e.state)["node_id"].rsplit("-", 1)[0]
                wanted[name][pool.encode()] += 1
            if e.topic == CELL_LOG_TOPIC and name == "day":
                for entry in orjson.loads(e.state)["outcomes"]:
                    for ref in entry.get("events", ()):
                        label = ref.rsplit("#", 1)[0].encode()
                        if label in labels:
                            moved_labels[label] += 1
    cutter = Cutter(labels)
    pools = [p["pool"].encode() for p in setup() if p["type"] == "ConfigurePool"]
    return Template(
        setup=setup_events, day=[cutter.event(e) for e in day],
        last=[cutter.event(e) for e in last], cutter=cutter,
        moved_versions=dict(moved_versions), moved_labels=dict(moved_labels),
        nodes={p: (wanted["setup"][p], wanted["day"][p]) for p in pools},
        daily={k: (kind, tuple(cutter.cut(p.encode()) for p in parts))
               for k, (kind, parts) in created.items()})


def _labels(setup_events: list[StoredEvent]) -> set[bytes]:
    """The outcome labels (`pool/kata`) of the aggregates the set-up created."""
    labels = set()
    for e in setup_events:
        if e.topic == CELL_LOG_TOPIC:
            for entry in orjson.loads(e.state)["outcomes"]:
                labels.update(ref.rsplit("#", 1)[0].encode() for ref in entry.get("events", ()))
    return labels


# --- copies of a template day ------------------------------------------------------------
#
# Each template event is cut once into literal bytes and *holes* (a date, an instance name's
# day, a harness id, a node number, a long-lived aggregate's version in an outcome, a command
# digest); a copy fills the holes for its day and joins the pieces.

DATE, NAME, SIM, NODE, LABEL, DIGEST = range(6)
Hole = tuple[int, Any]
Parts = list[bytes | Hole]


@dataclass(frozen=True, slots=True)
class Cut:
    """A template event, cut for copying: its state as a bytes format (the literal pieces,
    `%` escaped, with a `%s` per hole) and its holes in order."""

    originator_id: UUID
    version: int
    topic: str
    template: bytes
    holes: tuple[Hole, ...]

    @classmethod
    def of(cls, originator_id: UUID, version: int, topic: str, parts: Parts) -> Cut:
        template = b"".join([p.replace(b"%", b"%%") if p.__class__ is bytes else b"%s"
                             for p in parts])  # type: ignore[union-attr]
        holes = tuple(p for p in parts if p.__class__ is not bytes)
        return cls(originator_id, version, topic, template, holes)  # type: ignore[arg-type]


class Cutter:
    def __init__(self, labels: set[bytes]):
        pools = b"|".join(re.escape(p["pool"].encode()) for p in setup()
                          if p["type"] == "ConfigurePool")
        alternatives = [
            rb"(?P<date>\d{4}-\d\d-\d\d)T",
            rb"j(?P<name>\d{3})-(?=\d{6})",
            rb"sim-(?P<sim>\d+)",
            rb"(?P<pool>" + pools + rb")-(?P<node>\d{5,})",
            rb'"digest":"(?P<digest>[0-9a-f]{32})"',
        ]
        if labels:  # first: at one position, `node/kata-00001#3` is a label, not a node id
            names = b"|".join(re.escape(label) for label in sorted(labels))
            alternatives.insert(0, rb"(?P<label>" + names + rb")#(?P<v>\d+)")
        self.pattern = re.compile(b"|".join(alternatives))

    def cut(self, raw: bytes, commands: list[str] | None = None) -> Parts:
        """`commands`: the command ids of the outcomes carrying digests, in order."""
        parts: Parts = []
        at = 0
        digests = iter(commands or ())
        for m in self.pattern.finditer(raw):
            kind = m.lastgroup
            hole: Hole
            if kind == "v":
                hole = (LABEL, (m["label"], int(m["v"])))
            elif kind == "date":
                hole = (DATE, date.fromisoformat(m["date"].decode()))
            elif kind == "name":
                hole = (NAME, int(m["name"]))
            elif kind == "sim":
                hole = (SIM, int(m["sim"]))
            elif kind == "node":
                hole = (NODE, (m["pool"], int(m["node"])))
            else:
                hole = (DIGEST, (next(digests), m["digest"]))
            parts.append(raw[at:m.start()])
            parts.append(hole)
            at = m.end()
        parts.append(raw[at:])
        return [p for p in parts if p != b""]

    def event(self, e: StoredEvent) -> Cut:
        commands = None
        if e.topic == CELL_LOG_TOPIC:
            commands = [o["command_id"] for o in orjson.loads(e.state)["outcomes"]
                        if "digest" in o]
        return Cut.of(e.originator_id, e.originator_version, e.topic,
                      self.cut(e.state, commands))


class DayMover:
    """Fills a template day's holes for a copy `shift` days later than recorded, as if the
    template day had happened `shift` more times before it (negative: fewer)."""

    def __init__(self, template: Template, shift: int, sent: Sent):
        self.template = template
        self.shift = shift
        self.sent = sent
        self._ids: dict[UUID, UUID] = {}
        self._digests: dict[str, bytes] = {}
        # Every hole's bytes once per copy: most recur (dates, names, labels), and a dict
        # lookup costs a tenth of working one out (the copies are the bench's hot loop).
        self._filled = _Filled(self._hole)

    def fill(self, parts: Parts) -> bytes:
        filled = self._filled
        return b"".join([p if p.__class__ is bytes else filled[p]  # type: ignore[index]
                         for p in parts])

    def _hole(self, hole: Hole) -> bytes:
        kind, value = hole
        shift = self.shift
        if kind == DATE:
            return (value + timedelta(days=shift)).isoformat().encode() + b"T"
        if kind == NAME:
            return b"j%03d-" % (value + shift)
        if kind == SIM:
            return b"sim-%d" % (value + shift * ID_STRIDE)
        if kind == NODE:
            pool, number = value
            before, added = self.template.nodes[pool]
            return pool + b"-%05d" % (number + shift * added if number > before else number)
        if kind == LABEL:
            label, version = value
            return label + b"#%d" % (version + shift * self.template.moved_labels.get(label, 0))
        command_id, recorded = value
        return b'"digest":"' + (self._digest(command_id) if shift else recorded) + b'"'

    def _digest(self, command_id: str) -> bytes:
        found = self._digests.get(command_id)
        if found is None:
            canonical = self.sent.canonical(command_id)
            if canonical is None:  # not reproducible here: parse the renamed command
                raw = self.fill(self.sent.command(command_id))
                found = processor.content_digest(parse_command(raw)).encode()
            else:
                found = hashlib.sha256(self.fill(canonical)).hexdigest()[:32].encode()
            self._digests[command_id] = found
        return found

    def event(self, cut: Cut) -> StoredEvent:
        originator_id, version = cut.originator_id, cut.version
        if originator_id in self.template.daily:
            originator_id = self._daily_id(originator_id)
        else:
            version += self.shift * self.template.moved_versions.get(originator_id, 0)
        filled = self._filled
        return StoredEvent(originator_id, version, cut.topic,
                           cut.template % tuple([filled[h] for h in cut.holes]))

    def _daily_id(self, originator_id: UUID) -> UUID:
        found = self._ids.get(originator_id)
        if found is None:
            kind, parts = self.template.daily[originator_id]
            found = self._ids[originator_id] = DAILY_IDS[kind](*[self.fill(p).decode()
                                                                  for p in parts])
        return found


class _Filled(dict[Hole, bytes]):
    """Hole -> its bytes in one copy, worked out on first use."""

    def __init__(self, work_out: Callable[[Hole], bytes]):
        super().__init__()
        self.work_out = work_out

    def __missing__(self, hole: Hole) -> bytes:
        self[hole] = found = self.work_out(hole)
        return found


def history(template: Template, days: int) -> Iterator[tuple[str, list[StoredEvent]]]:
    """The history's events, a day at a time (name, events): the set-up and the template
    day D-1 times, then the last day."""
    if days > 1 and not template.day:
        raise HistoryError("this template was made for a history of one day")
    yield "setup", template.setup
    assert template.day_sent is not None and template.last_sent is not None
    for day in range(days - 1):
        mover = DayMover(template, day, template.day_sent)
        yield f"day {day}", [mover.event(e) for e in template.day]
    mover = DayMover(template, days - 1, template.last_sent)
    yield f"day {days - 1}", [mover.event(e) for e in template.last]


if __name__ == "__main__":  # the template day, recorded beside the last (make_template)
    path, launches, seed = sys.argv[1:]
    record_day(path, int(launches), 0, int(seed))
