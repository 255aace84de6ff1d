"""`cis serve`: Kafka commands in, events and positions in one transaction, outcomes out.

Roles are kept apart by topic: tenants write the commands topic, node agents and cloud
drivers the reports topic, operators (and the ticker) the admin topic; each record is decided
with the role of its topic, and the engine rejects a command type of another role.

Nothing a record holds can stop a partition: a record that cannot be parsed, decided, or
answered gets a rejected outcome (or goes to the DLQ, cut to fit the broker's limit), and
intake goes on.

Exactly once (docs/design.md §2.3): a partition's position is the tracking row `kafka:{topic}:{p}`,
written in the same transaction as the events of the records up to it; Kafka's committed
offsets are never used. Outcomes are published after the commit (at least once): a second
row, `kafka-published:{topic}:{p}`, advanced lazily after successful flushes, tells a restart
where to re-publish from. Re-publishing re-applies already-processed records without
tracking; idempotent commands (§2.4) answer their recorded outcome and write nothing.

Partitions are given (`partitions`), or assigned by a Kafka consumer group (`group`, §8):
when a writer dies its partitions move to the survivors. The group only assigns: positions
still come from the tracking rows, and the store stays the fence (§2.6), so a writer that
lost a partition without noticing can store nothing on top of its new owner's work.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from queue import Queue
from threading import Event, Thread
from typing import Any, TypeVar

from eventsourcing.persistence import IntegrityError, Tracking
from prometheus_client import start_http_server

from adapters.batching import cut
from adapters.bootstrap import Engine, connect
from adapters.kafka_io import (
    RECORD_BUDGET_BYTES,
    BrokerUnavailable,
    Publisher,
    PublishFailed,
    Record,
    RecordTooLarge,
    Slot,
    TopicsSource,
    partition_for,
    record_size,
)
from adapters.outbox import OutboxTopics, outbox_process
from adapters.projector import projector_process
from adapters.serve_metrics import ServeMetrics
from adapters.stores import STORE_DOWN, parse_store
from adapters.ticker import Ticker
from adapters.workers import WorkerProcess
from schemas.commands import CommandBase, Role
from schemas.outcomes import NotACommand, Outcome, Reason, parse_command

log = logging.getLogger("cis.serve")
T = TypeVar("T")

BROKER_DOWN = (BrokerUnavailable,)
NOT_A_COMMAND = ("not UTF-8", "not JSON")
# Without a readable command id: to the DLQ.
DEAD_LETTER_CODES = ("line_too_long", "unreadable_record")
SOURCE_HEADER = "cis.source"
# Smaller batches send their outcomes on the loop's thread: handing a few records to another
# thread costs the loop a GIL hand-off at every store wait (batches of one: 20 % slower).
THREAD_SENDS_FROM = 50
# An outcome whose record would not fit the broker is sent without its event list.
MAX_REASONS_SENT = 20


@dataclass
class ServeConfig:
    store: str
    kafka: str
    commands_topic: str = "cis.commands"  # tenants
    reports_topic: str = "cis.reports"  # node agents, cloud drivers
    admin_topic: str = "cis.admin"  # operators, the ticker
    outcomes_topic: str = "cis.outcomes"
    dlq_topic: str = "cis.commands.dlq"
    partitions: list[int] | None = None  # None: every partition of the topic
    group: str | None = None  # a consumer group assigns the partitions (not with `partitions`)
    # A group member silent this long loses its partitions to the others.
    session_timeout_s: float = 10.0
    batch_size: int = 1000  # records per transaction
    poll_records: int = 1000  # records per poll (at least batch_size): polls cost ~1 ms each
    poll_timeout_ms: int = 500
    # process: a child process keeps the projections current (another core); inline: this
    # loop does, between batches; off: someone else does (`cis project`).
    projections: str = "process"
    # process: a child process sends the VM and Pod commands the log implies; off: someone
    # else does (`cis outbox`).
    outbox: str = "process"
    vm_topic: str = "cis.vm-commands"
    pod_topic: str = "cis.pod-commands"
    projection_interval_s: float = 1.0
    published_interval_s: float = 1.0
    progress_interval_s: float = 10.0
    tick_interval_s: float = 0.0  # 0: no ticker
    status_file: Path | None = None
    max_backoff_s: float = 10.0
    flush_timeout_s: float = 5.0
    # Outcomes leave at once (the producer's own thread sends them); waiting for the broker's
    # acknowledgements, which advances the published position, happens at most this often,
    # so a batch of one command does not wait a broker round trip.
    flush_interval_s: float = 0.1
    # Per connection attempt; eventsourcing retries each store call ~10 times inside.
    store_timeout_s: float = 2.0
    stall_warning_s: float = 5.0  # report a call that hangs this long (e.g. a lost server)
    metrics_port: int | None = None  # serve Prometheus metrics on this port (0: any free)
    metrics_host: str = "127.0.0.1"
    metrics_interval_s: float = 5.0  # how often the world's gauges are counted again

    @property
    def roles(self) -> dict[str, Role]:
        """Topic → the role of whoever may write it."""
        return {self.commands_topic: "tenant", self.reports_topic: "agent",
                self.admin_topic: "operator"}


@dataclass
class Stats:
    commands: int = 0
    by_status: dict[str, int] = field(default_factory=dict)  # accepted, rejected, dead_letter
    dead_letters: int = 0
    republished: int = 0
    transactions: int = 0
    polls: int = 0
    seconds: dict[str, float] = field(default_factory=dict)  # time per phase

    def timed(self, phase: str, began: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - began


class Stopping(Exception):
    """Raised inside a retry loop when a stop was requested: abandon the open batch."""


def opened_cells(engine: Engine) -> frozenset[str]:
    """Every cell opened in the store (without loading any)."""
    return engine.processor.cells()


def log_event(level: int, event: str, **fields: Any) -> None:
    log.log(level, event, extra={"fields": fields})


def _weight(record: Any) -> int:
    """A record's bytes, as a batch's byte bound counts them (adapters/batching.py)."""
    return len(record.value or b"")


def tracking_name(topic: str, partition: int) -> str:
    return f"kafka:{topic}:{partition}"


def published_name(topic: str, partition: int) -> str:
    return f"kafka-published:{topic}:{partition}"


def decode(value: bytes) -> CommandBase | Outcome:
    """A record's command, or the outcome that answers it. Never raises: input the parser
    cannot cope with (a parser bug, a pathological input) is answered, not crashed on."""
    try:
        return parse_command(value)
    except NotACommand as exc:
        return exc.outcome
    except Exception as exc:
        log_event(logging.ERROR, "record unreadable; rejected", error=repr(exc)[:300])
        return Outcome.rejected(None, [Reason(field="$", code="unreadable",
                                              problem=f"unreadable: {type(exc).__name__}")])


def unreadable(record: Record) -> Outcome:
    """The answer to a record the Kafka client could not read at all (kafka_io.Record)."""
    return Outcome.rejected(None, [Reason(field="$", code="unreadable_record", problem=(
        f"the Kafka client could not read this record: {record.unreadable}"))])


def internal_error(item: CommandBase | Outcome, exc: BaseException) -> Outcome:
    """The answer to a record whose decision or storage failed for a reason of its own."""
    return Outcome.rejected(item.command_id, [Reason(field="$", code="internal_error",
                                                problem=f"internal error: {type(exc).__name__}")])


def sendable(outcome: Outcome, key: bytes | None, headers: list[tuple[str, bytes]]
             ) -> tuple[bytes | None, bytes]:
    """(key, value) of an outcome's record, made to fit the broker's limit: without its
    event list if need be, or as a bare rejection if it cannot be encoded at all (e.g. a
    lone surrogate in its command id). Never raises."""
    try:
        value = outcome.to_json().encode()
        if record_size(value, key, headers) <= RECORD_BUDGET_BYTES:
            return key, value
        summary = outcome.model_copy(update={
            "events": [], "reasons": outcome.reasons[:MAX_REASONS_SENT],
            "note": f"{len(outcome.events)} events, {len(outcome.reasons)} reasons: "
                    "too large to send whole"})
        value = summary.to_json().encode()
        if record_size(value, key, headers) <= RECORD_BUDGET_BYTES:
            return key, value
    except Exception as exc:
        log_event(logging.WARNING, "outcome not encodable; sending a bare rejection",
                  error=repr(exc)[:300])
    # Its status stands (the decision is recorded); only its wording could not be sent.
    bare = Outcome(status=outcome.status, reasons=[Reason(
        field="$", code="unencodable_outcome", problem="the outcome could not be sent as it was")])
    return None, bare.to_json().encode()


def is_dead_letter(outcome: Outcome) -> bool:
    """Bytes that are not a command (not UTF-8, not JSON), or a line too long to be one whose
    command id cannot be read: nobody could match an outcome, so the DLQ keeps them."""
    if outcome.command_id is not None or outcome.status != "rejected":
        return False
    if len(outcome.reasons) == 1 and outcome.reasons[0].field == "$" \
            and outcome.reasons[0].problem.startswith(NOT_A_COMMAND):
        return True
    return any(r.code in DEAD_LETTER_CODES for r in outcome.reasons)


def dead_letter_reason(outcome: Outcome) -> str:
    return next((r.problem for r in outcome.reasons if r.code in DEAD_LETTER_CODES),
                outcome.reasons[0].problem)


class FaultInjector:
    """Test hook: `CIS_CRASH_AT=point:n` kills the process (exit 137) the n-th time it
    reaches `point`: after-poll, mid-batch (events inserted, transaction still open),
    after-commit (outcomes not yet published) or after-publish (flushed, before the next
    poll). `CIS_STALL_AT=point:n` freezes it there instead (SIGSTOP, until a SIGCONT): a
    writer that stalls longer than its group session, as a long pause or a lost network
    would make it."""

    POINTS = ("after-poll", "mid-batch", "after-commit", "after-publish")

    def __init__(self, spec: str | None, stall: str | None = None) -> None:
        self.point, self.nth, self.count = self._parse("CIS_CRASH_AT", spec)
        self.stall_point, self.stall_nth, self.stalls = self._parse("CIS_STALL_AT", stall)

    @classmethod
    def _parse(cls, variable: str, spec: str | None) -> tuple[str | None, int, int]:
        if not spec:
            return None, 0, 0
        point, _, nth = spec.partition(":")
        if point not in cls.POINTS:
            raise ValueError(f"{variable}: unknown point {point!r}; use {cls.POINTS}")
        return point, int(nth or 1), 0

    def reached(self, point: str) -> None:
        if point == self.stall_point:
            self.stalls += 1
            if self.stalls == self.stall_nth:
                log_event(logging.WARNING, "stall injected", point=point, nth=self.stall_nth)
                os.kill(os.getpid(), signal.SIGSTOP)
        if point == self.point:
            self.count += 1
            if self.count == self.nth:
                log_event(logging.WARNING, "crash injected", point=point, nth=self.nth)
                logging.shutdown()
                os._exit(137)

    def arm_mid_batch(self, engine: Engine) -> None:
        if self.point != "mid-batch":
            return
        recorder = engine.app.recorder
        insert = recorder._insert_events  # type: ignore[attr-defined]

        def insert_then_crash(curs: Any, stored_events: Any, **kwargs: Any) -> None:
            insert(curs, stored_events, **kwargs)
            if kwargs.get("tracking") is not None:
                self.reached("mid-batch")

        recorder._insert_events = insert_then_crash  # type: ignore[attr-defined]


class OutcomeSender:
    """Sends outcomes on a thread of its own: kafka-python's `send` is Python through and
    through (~75 µs a record), and here it runs while the loop waits on the store. After a
    failure it skips the rest; `drain` reports it and the caller sends them all again."""

    def __init__(self) -> None:
        self._queue: Queue[Callable[[], object] | None] = Queue()
        self._failed: Exception | None = None
        self._thread = Thread(target=self._run, name="cis-outcomes", daemon=True)
        self._thread.start()

    def put(self, send: Callable[[], object]) -> None:
        self._queue.put(send)

    def drain(self) -> Exception | None:
        """Wait until every send was tried; the first failure since the last drain, if any."""
        self._queue.join()
        failed, self._failed = self._failed, None
        return failed

    def close(self) -> None:
        self._queue.put(None)

    def _run(self) -> None:
        while (send := self._queue.get()) is not None:
            if self._failed is None:
                try:
                    send()
                except Exception as exc:  # reported by drain; the caller resends
                    self._failed = exc
            self._queue.task_done()


def child_mode(configured: str, store_kind: str, instead: str) -> str:
    """A memory store is private to this process, so a child process could not see it:
    there `process` becomes `instead` (projections: inline; outbox: off)."""
    return instead if configured == "process" and store_kind == "memory" else configured


class Server:
    """The engine process: one loop; outcomes are sent by a thread (OutcomeSender), the
    ticker has its own, projections a process."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.stats = Stats()
        self.faults = FaultInjector(os.environ.get("CIS_CRASH_AT"),
                                    os.environ.get("CIS_STALL_AT"))
        self._stop = Event()
        self.fenced = False  # another writer took one of our partitions
        self.engine: Engine | None = None
        self.source: TopicsSource | None = None
        self.publisher: Publisher | None = None
        self.ticker: Ticker | None = None
        self.projector: WorkerProcess | None = None
        self.outbox: WorkerProcess | None = None
        self.projections = config.projections  # as configured, until start() sees the store
        self.roles = config.roles
        self.metrics = ServeMetrics() if config.metrics_port is not None else None
        self.metrics_port: int | None = None  # the port bound, once started
        self._metrics_server: Any = None
        # Per (topic, partition):
        self.processed: dict[Slot, int] = {}  # last offset whose events are stored
        self.published: dict[Slot, int] = {}  # last offset whose outcome was flushed
        self._published_saved: dict[Slot, int] = {}
        self.cells: frozenset[str] = frozenset()  # owned cells, read by the ticker thread
        self._cells_stale = False  # the group moved partitions: count the owned cells again
        self._closing = False
        self._pending: list[Callable[[], object]] = []  # sends not yet acknowledged
        self.outcome_sender = OutcomeSender()
        self._unflushed: dict[Slot, int] = {}  # last offset per partition with a pending send
        self._unflushed_replays = False
        self._flushed_at = time.monotonic()
        self._due = {"projections": 0.0, "published": 0.0, "progress": 0.0}
        self._last_progress = (time.monotonic(), 0)
        self._busy: tuple[str, float] | None = None  # service called, since (watchdog)

    # --- lifecycle ----------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self, until: Callable[[Server], bool] | None = None) -> None:
        """Serve until `stop()` (or `until(self)` is true); then close everything."""
        try:
            self.start()
            self.serve(until)
        except Stopping:
            log_event(logging.INFO, "stopping: open batch abandoned")
        finally:
            self.close()
        log_event(logging.INFO, "stopped", **self._progress_fields(lag=None))

    def serve(self, until: Callable[[Server], bool] | None = None) -> None:
        """The loop (after `start`): one `step` at a time until stopped or `until(self)`."""
        while not self.stopping and not (until and until(self)):
            self.step()
        # The flag is only checked between steps, so no batch is open here.
        self._flush_outcomes()
        self.retry("store", self._save_published)

    def start(self) -> None:
        """Connect to the store and broker, read positions, seek; start the ticker."""
        c = self.config
        Thread(target=self._watchdog, name="cis-watchdog", daemon=True).start()
        timeout = {"POSTGRES_CONNECT_TIMEOUT": str(int(max(1, c.store_timeout_s)))}
        self.engine = self.retry("store", lambda: connect(c.store, timeout))
        self.faults.arm_mid_batch(self.engine)
        self.source = self.retry("broker", lambda: TopicsSource(
            c.kafka, list(self.roles), c.partitions, client_id="cis-serve", group=c.group,
            listener=self if c.group is not None else None,
            session_timeout_ms=int(c.session_timeout_s * 1000)))
        self.publisher = self.retry("broker", lambda: Publisher(c.kafka, client_id="cis-serve"))
        self.retry("store", self._load_positions)
        self.retry("store", self._load_cells)
        kind = parse_store(c.store).kind
        self.projections = child_mode(c.projections, kind, instead="inline")
        if self.projections == "process":
            self.projector = projector_process(c.store, c.projection_interval_s,
                                              logging.getLevelName(log.getEffectiveLevel()))
            self.projector.start()
        if child_mode(c.outbox, kind, instead="off") != c.outbox:
            log_event(logging.WARNING, "outbox off: a memory store is private to this process")
        elif c.outbox == "process":
            self.outbox = outbox_process(c.store, c.kafka, OutboxTopics(c.vm_topic, c.pod_topic),
                                         c.projection_interval_s,
                                         logging.getLevelName(log.getEffectiveLevel()))
            self.outbox.start()
        if c.tick_interval_s > 0:
            self.ticker = Ticker(c.kafka, c.admin_topic, lambda: self.cells,
                                 c.tick_interval_s)
            self.ticker.start()
        if self.metrics is not None and c.metrics_port is not None:
            server, _ = start_http_server(c.metrics_port, c.metrics_host,
                                          registry=self.metrics.registry)
            self.metrics_port = server.server_port
            self._metrics_server = server
        log_event(logging.INFO, "serving", topics=self.roles, group=c.group,
                  partitions=list(self.source.partitions), processed=_named(self.processed),
                  published=_named(self.published), cells=len(self.cells),
                  metrics_port=self.metrics_port)

    def _load_positions(self, slots: Iterable[Slot] | None = None) -> None:
        """Positions of `slots` (default: every assigned one) from the store; seek there."""
        assert self.engine and self.source
        recorder = self.engine.app.process_recorder
        for slot in self.source.slots if slots is None else sorted(slots):
            done = recorder.max_tracking_id(tracking_name(*slot))
            sent = recorder.max_tracking_id(published_name(*slot))
            self.processed[slot] = -1 if done is None else done
            self.published[slot] = min(self.processed[slot], -1 if sent is None else sent)
            self._published_saved[slot] = self.published[slot]
            # Resume where outcomes stop, not where events stop: re-publish the gap.
            self.source.seek(slot, self.published[slot] + 1)

    def _load_cells(self) -> None:
        assert self.engine and self.source
        n, owned = self.source.topic_partition_count, set(self.source.partitions)
        self._cells_stale = False
        self.cells = frozenset(c for c in opened_cells(self.engine)
                               if partition_for(c, n) in owned) if owned else frozenset()

    # --- group membership (PartitionListener: called inside a poll, between batches) -----

    def partitions_revoked(self, slots: frozenset[Slot]) -> None:
        """Another writer may take `slots` once this returns: publish what is decided and
        record that it was, then drop the slots and the state of every cell (the next
        owner's decisions will make ours stale). No batch is open: polls come between."""
        assert self.engine is not None
        if not self._closing:  # when closing, the next owner re-publishes what is unsaved
            self._flush_outcomes()
            self.retry("store", self._save_published)
        for slot in slots:
            for positions in (self.processed, self.published, self._published_saved,
                              self._unflushed):
                positions.pop(slot, None)
        self.engine.processor.forget()
        self._cells_stale = True
        log_event(logging.INFO, "partitions revoked", group=self.config.group,
                  partitions=_partition_numbers(slots))

    def partitions_assigned(self, slots: frozenset[Slot]) -> None:
        """`slots` are ours: resume each where the store says (as at start-up). State of a
        cell loaded before is dropped: another writer may have decided for it since."""
        assert self.engine is not None and self.source is not None
        new = {slot for slot in slots if slot not in self.processed}
        if new:
            self.engine.processor.forget()
        self.retry("store", lambda: self._load_positions(new))
        self._cells_stale = True
        by_topic = {t: sorted(p for s, p in slots if s == t) for t in self.roles}
        if len({tuple(p) for p in by_topic.values()}) > 1:  # the range assignor never does
            log_event(logging.WARNING, "topics assigned different partitions; a cell's "
                      "commands are split between writers (the store still fences them)",
                      assigned=by_topic)
        log_event(logging.INFO, "partitions assigned", group=self.config.group,
                  partitions=_partition_numbers(slots),
                  processed=_named({s: self.processed[s] for s in sorted(new)}))

    def close(self) -> None:
        self._closing = True
        if self.ticker is not None:
            self.ticker.shutdown()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
        self.outcome_sender.close()
        workers = [w for w in (self.projector, self.outbox) if w is not None]
        for worker in workers:  # both finish their last round at once
            worker.ask_to_stop()
        for worker in workers:
            worker.stop()
        for closing in (self.source, self.publisher, self.engine):
            if closing is not None:
                try:
                    closing.close()
                except Exception as exc:  # closing must not hide why we stop
                    log_event(logging.WARNING, "close failed", error=repr(exc))

    # --- the loop -----------------------------------------------------------------------

    def step(self) -> None:
        """One poll: apply each partition's records, publish, then the periodic chores."""
        assert self.source is not None
        began = time.perf_counter()
        batch = self.retry("broker", lambda: self.source.poll_batch(  # type: ignore[union-attr]
            max(self.config.batch_size, self.config.poll_records), self.config.poll_timeout_ms))
        self.stats.timed("poll", began)
        if self._cells_stale:
            self.retry("store", self._load_cells)
        if batch:
            self.stats.polls += 1
            self.faults.reached("after-poll")
            replayed = self.stats.republished
            for slot, records in batch.items():
                for n, chunk in enumerate(cut(records, self.config.batch_size, _weight)):
                    if n and self.stopping:
                        break  # the rest is read again after a restart
                    if not self._process(slot, chunk):
                        break  # the store refused it: the rest is read again
                    self._unflushed[slot] = chunk[-1].offset
            self._unflushed_replays |= self.stats.republished > replayed
            if time.monotonic() - self._flushed_at >= self.config.flush_interval_s:
                self._flush_outcomes()
        else:
            self._flush_outcomes()
            self._check_broker()
        self._chores(idle=not batch)

    def _flush_outcomes(self) -> None:
        """Wait until the broker holds every sent outcome, then advance `published`."""
        self._flushed_at = time.monotonic()
        if not self._unflushed:
            return
        self._flush()
        self.published.update(self._unflushed)
        self._unflushed.clear()
        if self._unflushed_replays:  # don't make a second crash replay it all
            self._unflushed_replays = False
            self.retry("store", self._save_published)
        self.faults.reached("after-publish")

    def _process(self, slot: Slot, records: list[Record]) -> bool:
        """Decide and answer `records`; False if the store refused them to us (§2.6)."""
        done = self.processed[slot]
        role = self.roles[slot[0]]
        replay = [r for r in records if r.offset <= done]
        fresh = [r for r in records if r.offset > done]
        if replay:  # outcomes lost in a crash: recorded, so applying changes nothing
            outcomes = self._decide(replay, None, role)
            self._send(replay, outcomes)
            self.stats.republished += len(replay)
        if fresh:
            tracking = Tracking(tracking_name(*slot), fresh[-1].offset)
            decided = self._decide_fresh(slot, fresh, tracking, role)
            if decided is None:
                return False
            self.processed[slot] = fresh[-1].offset
            self.faults.reached("after-commit")
            self._send(fresh, decided, count=role)
            self._note_cells(fresh)
            self.stats.commands += len(fresh)
        return True

    def _decide(self, records: list[Record], tracking: Tracking | None, role: Role
                ) -> list[Outcome]:
        """Outcomes of `records`, their events stored with `tracking` in one transaction.
        A failure that is not an outage (a record the engine cannot decide or store) is
        narrowed down to its record, which is rejected; the others are decided as usual."""
        items = [unreadable(r) if r.unreadable else decode(r.value) for r in records]
        try:
            return self.retry("store", lambda: self._apply(items, tracking, role))
        except (Stopping, IntegrityError):
            raise
        except Exception as exc:
            if len(records) == 1:
                if tracking is not None:  # move past it; if even that fails, it is not the record
                    self.retry("store", lambda: self._apply([], tracking, role))
                log_event(logging.ERROR, "record could not be decided; rejected",
                          topic=records[0].topic, partition=records[0].partition,
                          offset=records[0].offset, error=repr(exc)[:300])
                return [internal_error(items[0], exc)]
            log_event(logging.WARNING, "batch failed; deciding its records one by one",
                      records=len(records), error=repr(exc)[:300])
            return [outcome for r in records for outcome in self._decide(
                [r], None if tracking is None else Tracking(tracking.application_name,
                                                            r.offset), role)]

    def _apply(self, items: list[CommandBase | Outcome], tracking: Tracking | None,
               role: Role) -> list[Outcome]:
        assert self.engine is not None
        began = time.perf_counter()
        commands = [i for i in items if isinstance(i, CommandBase)]
        decided = iter(self.engine.apply(commands, tracking, role=role))
        outcomes = [i if isinstance(i, Outcome) else next(decided) for i in items]
        self.stats.timed("apply", began)
        self.stats.transactions += 1
        if self.metrics is not None and tracking is not None:
            self.metrics.decided(outcomes)
        return outcomes

    def _decide_fresh(self, slot: Slot, records: list[Record], tracking: Tracking,
                      role: Role) -> list[Outcome] | None:
        """Outcomes of fresh records, stored with `tracking`; None if another writer's
        decisions for the same cells or partition came first (the store refused ours)."""
        try:
            return self._decide(records, tracking, role)
        except IntegrityError:
            # Our position moved under us: another writer owns this partition (§2.6).
            assert self.engine is not None
            stored = self.engine.app.process_recorder.max_tracking_id(tracking.application_name)
            ours = (-1 if stored is None else stored) == self.processed[slot]
            if ours or self.config.group is not None:
                # Still ours: another writer decided one of these cells (one cell's records
                # keyed onto two partitions) until the processor's retries ran out. Or the
                # group gave the partition to another writer while we were not looking (a
                # stall longer than the session); the next poll rejoins and says whose it is.
                # Either way nothing of the batch was stored and none of it is answered
                # here: read on from where the store says, on fresh state.
                log_event(logging.WARNING, "another writer decided a cell of this batch"
                          if ours else "another writer advanced this partition; batch "
                          "abandoned, reading on from the stored position",
                          tracking=tracking.application_name, stored=stored,
                          records=len(records))
                self.engine.processor.forget()
                self._unflushed.pop(slot, None)
                self.retry("store", lambda: self._load_positions([slot]))
                return None
            log_event(logging.ERROR, "another writer advanced this partition; stopping",
                      tracking=tracking.application_name, stored=stored)
            self.fenced = True
            self.stop()
            raise Stopping() from None

    def _send(self, records: list[Record], outcomes: list[Outcome],
              count: Role | None = None) -> None:
        """Send each record's outcome (`count`: fresh records of that role, counted)."""
        began = time.perf_counter()
        for record, outcome in zip(records, outcomes, strict=True):
            send = self._sender(record, outcome)
            if count is not None:
                status = "dead_letter" if is_dead_letter(outcome) else outcome.status
                self.stats.by_status[status] = self.stats.by_status.get(status, 0) + 1
                if self.metrics is not None:
                    self.metrics.commands.labels(status=status, role=count).inc()
            self._pending.append(send)
            if len(records) >= THREAD_SENDS_FROM:
                self.outcome_sender.put(send)
            else:
                self.retry("broker", send)
        self.stats.timed("send", began)

    def _sender(self, record: Record, outcome: Outcome) -> Callable[[], object]:
        assert self.publisher is not None
        pub, c = self.publisher, self.config
        if is_dead_letter(outcome):
            self.stats.dead_letters += 1
            return lambda: self._skip_too_large(record, "dead letter", lambda: pub.send_dlq(
                c.dlq_topic, record, dead_letter_reason(outcome)))
        try:
            key = outcome.command_id.encode() if outcome.command_id is not None else None
        except UnicodeEncodeError:  # e.g. a lone surrogate: the producer cannot match it
            key = None
        # Outcomes without a command id can only be matched by where they came from.
        headers = [] if key else [_source(record)]
        key, value = sendable(outcome, key, headers)
        if key is None and not headers:  # made bare: it lost its command id
            headers = [_source(record)]
        return lambda: self._skip_too_large(record, "outcome", lambda: pub.send(
            c.outcomes_topic, value, key=key, headers=headers))

    @staticmethod
    def _skip_too_large(record: Record, what: str, send: Callable[[], object]) -> object:
        """`send()`; a record the broker can never take is logged and skipped (the senders
        keep theirs under the limit, so this is a last resort, never a crash loop)."""
        try:
            return send()
        except RecordTooLarge as exc:
            log_event(logging.ERROR, f"{what} too large to send; skipped", topic=record.topic,
                      partition=record.partition, offset=record.offset, error=str(exc)[:300])
            return None

    def _flush(self) -> None:
        assert self.publisher is not None
        began = time.perf_counter()
        self._busy = ("broker", time.monotonic())  # the watchdog reports a long wait
        failed = self.outcome_sender.drain()
        self._busy = None
        # A send that failed (the broker is away) left the rest unsent: send them all again.
        resend = failed is not None
        if failed is not None:
            log_event(logging.WARNING, "broker unavailable; retrying", service="broker",
                      error=repr(failed)[:300])

        def flush() -> None:
            nonlocal resend
            assert self.publisher is not None
            if resend:  # the publisher forgot the whole batch: send all of it again
                for send in self._pending:
                    send()
                resend = False
            try:
                # Short enough that a frozen broker is reported, not waited out silently.
                self.publisher.flush(timeout_s=self.config.flush_timeout_s)
            except PublishFailed as exc:
                resend = True
                raise BrokerUnavailable(f"{len(exc.errors)} outcomes not acknowledged") from exc

        self.retry("broker", flush)
        self._pending.clear()
        self.stats.timed("publish", began)

    def _note_cells(self, records: list[Record]) -> None:
        assert self.engine is not None
        keys = {r.key.decode("utf-8", "replace") for r in records if r.key and len(r.key) <= 256}
        unseen = keys - self.cells
        if not unseen:  # the usual case: no need to look at the state
            return
        processor = self.engine.processor  # the records were just decided: their cells are loaded
        new = {k for k in unseen if processor.has_log(k)}
        if new:
            self.cells = self.cells | new

    # --- chores -------------------------------------------------------------------------

    def _chores(self, idle: bool) -> None:
        now = time.monotonic()
        c = self.config
        if self.projections == "inline" and (idle or now >= self._due["projections"]):
            self._due["projections"] = now + c.projection_interval_s
            began = time.perf_counter()
            try:
                self.retry("store", self.engine.update_projections)  # type: ignore[union-attr]
            except Stopping:
                raise
            except Exception:  # read models are caches: a bug there must not stop intake
                log.exception("projection update failed; intake continues",
                              extra={"fields": {}})
            self.stats.timed("projections", began)
        if idle or now >= self._due["published"]:
            self._due["published"] = now + c.published_interval_s
            self.retry("store", self._save_published)
        if now >= self._due["progress"]:
            self._due["progress"] = now + c.progress_interval_s
            self.report_progress()
        if self.metrics is not None and now >= self._due.get("metrics", 0.0):
            self._due["metrics"] = now + c.metrics_interval_s
            self._count_world()
        if now >= self._due.get("workers", 0.0):  # a dead child is started again
            self._due["workers"] = now + 1.0
            for worker in (self.projector, self.outbox):
                if worker is not None:
                    worker.revive()

    def _save_published(self) -> None:
        assert self.engine is not None
        recorder = self.engine.app.process_recorder
        for slot, offset in self.published.items():
            if offset > self._published_saved[slot]:
                try:
                    recorder.insert_tracking(Tracking(published_name(*slot), offset))
                except IntegrityError:
                    if self.config.group is None:
                        raise
                    # A writer the group moved this partition to has published further.
                    log_event(logging.INFO, "published position already further",
                              tracking=published_name(*slot), offset=offset)
                self._published_saved[slot] = offset

    def _count_world(self) -> None:
        """The world's gauges (on the loop's thread: the world is only read here)."""
        assert self.engine is not None and self.metrics is not None
        self.metrics.world_is(self.engine.processor.loaded_world)
        if self.source is not None and self._due.get("lag", 0.0) <= time.monotonic():
            self._due["lag"] = time.monotonic() + self.config.metrics_interval_s
            try:
                self.metrics.lag_is(self.source.lag(timeout_ms=2000))
            except BrokerUnavailable:
                pass  # the gauge keeps its last value; the outage is logged elsewhere

    def _check_broker(self) -> None:
        # An idle poll looks the same as a frozen broker: ask it, at most every few seconds.
        assert self.source is not None
        if time.monotonic() - self._due.get("ping", 0.0) > 5.0:
            self._due["ping"] = time.monotonic()
            self.retry("broker", self.source.ping)

    def _progress_fields(self, lag: dict[Slot, int] | None) -> dict[str, Any]:
        now, commands = time.monotonic(), self.stats.commands
        then, before = self._last_progress
        self._last_progress = (now, commands)
        return {"positions": _named({s: o + 1 for s, o in self.processed.items()}),
                "lag": None if lag is None else _named(lag),
                "commands": commands, "by_status": dict(self.stats.by_status),
                "dead_letters": self.stats.dead_letters,
                "republished": self.stats.republished,
                "commands_per_s": round((commands - before) / max(now - then, 1e-6), 1),
                "cells": len(self.cells),
                "partitions": _partition_numbers(self.processed)}

    def report_progress(self) -> dict[str, Any]:
        """Log (and write to the status file) positions, lag and commands/s."""
        assert self.source is not None
        try:
            lag: dict[Slot, int] | None = self.source.lag(timeout_ms=2000)
        except BrokerUnavailable:
            lag = None
        if self.metrics is not None and lag is not None:
            self.metrics.lag_is(lag)
        fields = self._progress_fields(lag)
        log_event(logging.INFO, "progress", **fields)
        if self.config.status_file is not None:
            path = self.config.status_file
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_text(json.dumps({**fields, "at": time.time()}))
            tmp.replace(path)
        return fields

    # --- back-off -----------------------------------------------------------------------

    def retry(self, service: str, attempt: Callable[[], T]) -> T:
        """`attempt()` until it works, backing off while `service` is down; logs the outage."""
        errors = STORE_DOWN if service == "store" else BROKER_DOWN
        delay, failures, began = 0.2, 0, time.monotonic()
        while True:
            self._busy = (service, time.monotonic())
            try:
                result = attempt()
            except errors as exc:
                failures += 1
                log_event(logging.WARNING, f"{service} unavailable; retrying",
                          service=service, attempt=failures, retry_in_s=round(delay, 2),
                          error=repr(exc)[:300])
                if self._stop.wait(delay):
                    raise Stopping() from exc
                delay = min(delay * 2, self.config.max_backoff_s)
                continue
            finally:
                self._busy = None
            if failures:
                log_event(logging.WARNING, f"{service} available again", service=service,
                          attempts=failures, outage_s=round(time.monotonic() - began, 1))
            return result

    def _watchdog(self) -> None:
        """Report a call that hangs: the libraries retry inside before we see an error."""
        warned: tuple[str, float] | None = None
        while not self._stop.wait(1.0):
            busy = self._busy
            if busy is None or busy == warned:
                continue
            waited = time.monotonic() - busy[1]
            if waited >= self.config.stall_warning_s:
                warned = busy
                log_event(logging.WARNING, f"{busy[0]} not answering", service=busy[0],
                          waited_s=round(waited, 1))


def _source(record: Record) -> tuple[str, bytes]:
    return SOURCE_HEADER, f"{record.topic}:{record.partition}:{record.offset}".encode()


def _partition_numbers(slots: Iterable[Slot]) -> list[int]:
    return sorted({partition for _, partition in slots})


def _named(by_slot: dict[Slot, int]) -> dict[str, int]:
    """{"topic:partition": n}: JSON keys for logs and the status file."""
    return {f"{topic}:{partition}": n for (topic, partition), n in by_slot.items()}
