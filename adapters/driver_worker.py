"""The driver worker: carries out the outbox's commands through a port and reports back.

It consumes `cis.vm-commands` (a `CloudDriver`) or `cis.pod-commands` (a `PodDriver`) with
manual partition assignment, its positions kept in its own ledger (adapters/driver_ledger.py),
and sends what the driver observes to the reports topic as the engine's report commands,
keyed by cell.

At most once per command_id, and no command lost. Recording a command as done *before*
acting would lose it to a crash in between; acting before recording could act twice. So
each command goes through three durable steps:

1. intent: the ledger records that an attempt starts (and counts it);
2. act: the driver carries the command out *idempotently*: a VM is launched with a client
   token derived from command_id and found again by its tags, a Pod by its name, a delete
   of what is gone succeeds; so an attempt repeated after a crash changes nothing more;
3. done: the ledger records the command done and moves the position past it, in one
   transaction.

A restart re-reads everything after the stored position: a command found done (or dead) is
skipped, one found only intended is attempted again, which the idempotent act makes safe.

Bad input is data, never a crash loop: a command that does not parse is dead-lettered at
once (reading it again cannot change it); one the infrastructure refuses for good (a
`DriverRefused`: a Pod the API server finds invalid, a namespace cis did not make) is
dead-lettered at once too, after the handler's reports of what the refusal ends (the
instance terminated), so one tenant's bad Pod neither waits out the back-off with every
command behind it nor leaves its instance waiting; one whose driver call fails otherwise is
logged and retried with exponential back-off, and after `max_attempts` dead-lettered with
the reason. Attempts
are counted in the ledger, so a command that kills the worker itself is also given up after
`max_attempts` restarts. A record is dead-lettered to the DLQ topic unchanged, with a
`reason` header and its source topic, partition and offset (kafka_io.Publisher.send_dlq).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from threading import Event
from typing import Any, Protocol

from pydantic import TypeAdapter, ValidationError

from adapters import driver_reports as reports
from adapters.driver_ledger import Ledger, NodeRow
from adapters.kafka_io import (
    BrokerUnavailable,
    CommandSource,
    Publisher,
    PublishFailed,
    Record,
    TopicNotFound,
)
from adapters.ports import CloudDriver, DriverRefused, NodeStatus, PodDriver
from adapters.workers import keep_following
from schemas.commands import CommandBase
from schemas.infra import (
    DeletePod,
    InfraCommandBase,
    PodCommand,
    ProvisionNode,
    RunPod,
    TerminateNode,
    VmCommand,
)

log = logging.getLogger("cis.driver")

OUTAGES = (BrokerUnavailable, PublishFailed, TopicNotFound)
Clock = Callable[[], datetime]


def wall_clock() -> datetime:
    return datetime.now(UTC)


class Handler(Protocol):
    """What differs between the cloud and the Pod worker."""

    def parse(self, raw: bytes) -> InfraCommandBase: ...

    def act(self, command: InfraCommandBase) -> NodeRow | None:
        """Carry the command out (idempotently); a node row to store with its done mark."""
        ...

    def observe(self, timeout_s: float) -> list[tuple[CommandBase, Any]]:
        """Reports due, each with what to remember once it is sent."""
        ...

    def observed(self, sent: Sequence[Any]) -> None: ...

    def refused(self, command: InfraCommandBase, refusal: DriverRefused) -> list[CommandBase]:
        """Reports of what a command refused for good ends (sent before it is dead)."""
        ...


class CloudHandler:
    """ProvisionNode and TerminateNode through a `CloudDriver`; node readiness and loss from
    describing the groups of the nodes it provisioned."""

    _adapter: TypeAdapter[Any] = TypeAdapter(VmCommand)

    def __init__(self, driver: CloudDriver, ledger: Ledger, clock: Clock = wall_clock) -> None:
        self.driver = driver
        self.ledger = ledger
        self.clock = clock

    def parse(self, raw: bytes) -> InfraCommandBase:
        return self._adapter.validate_json(raw)  # type: ignore[no-any-return]

    def act(self, command: InfraCommandBase) -> NodeRow | None:
        if isinstance(command, ProvisionNode):
            provider_id = self.driver.provision(command)
            known = self.ledger.node(command.node_id)
            state = known.state if known is not None else "provisioned"
            return NodeRow(command.node_id, command.cell, command.node_group, provider_id,
                           state)
        assert isinstance(command, TerminateNode)
        known = self.ledger.node(command.node_id)
        row = NodeRow(command.node_id, command.cell, command.node_group,
                      known.provider_id if known else "", "terminating")
        # Marked before the call: a describe in between must not take our own termination
        # for a loss.
        self.ledger.put_node(row)
        self.driver.terminate(command)
        return NodeRow(row.node_id, row.cell, row.node_group, row.provider_id, "terminated")

    def observe(self, timeout_s: float) -> list[tuple[CommandBase, Any]]:
        watched = self.ledger.nodes("provisioned", "ready")
        due: list[tuple[CommandBase, Any]] = []
        for group in sorted({n.node_group for n in watched}):
            seen: dict[str, NodeStatus] = {s.node_id: s for s in self.driver.describe(group)}
            for node in (n for n in watched if n.node_group == group):
                due.extend(self._changes(node, seen.get(node.node_id)))
        return due

    def _changes(self, node: NodeRow, status: NodeStatus | None
                 ) -> list[tuple[CommandBase, Any]]:
        """Reports with their memo: (the node's new row, whether its VM is left stopped)."""
        at = (status.since if status is not None else None) or self.clock()
        if status is not None and status.state == "running" and node.state == "provisioned":
            return [(reports.node_ready(node.cell, node.node_id, status.provider_id, at),
                     (_with(node, "ready", status.provider_id), False))]
        if status is not None and status.state in ("stopped", "gone"):
            reason = f"VM {status.provider_id} {status.detail or status.state} outside cis"
            return [(reports.node_lost(node.cell, node.node_id, status.provider_id, at, reason),
                     (_with(node, "lost", status.provider_id), status.state == "stopped"))]
        if status is None and node.state == "ready":
            # Not listed any more (a just-launched VM may not be listed yet: only a VM seen
            # running counts as vanished).
            return [(reports.node_lost(node.cell, node.node_id, node.provider_id, at,
                                       f"VM {node.provider_id} vanished"),
                     (_with(node, "lost", node.provider_id), False))]
        return []

    def observed(self, sent: Sequence[Any]) -> None:
        for row, stopped in sent:
            self.ledger.put_node(row)
            if stopped:
                self._clean_up(row)

    def refused(self, command: InfraCommandBase, refusal: DriverRefused) -> list[CommandBase]:
        return []  # no cloud driver refuses for good yet; a VM refused would report nothing

    def _clean_up(self, row: NodeRow) -> None:
        """A lost node gets no TerminateNode from the engine: a VM it left stopped (still
        billed for its disks, still in its group) is terminated here."""
        command_id = reports.report_id(row.cell, "node", row.node_id, "clean-up")
        try:
            self.driver.terminate(TerminateNode(
                command_id=command_id, caused_by=command_id.split(":", 1)[1], cell=row.cell,
                at=self.clock(), node_id=row.node_id, pool="", node_group=row.node_group,
                reason="reported lost while stopped"))
        except Exception as exc:  # the node is reported; the VM is the operator's to end
            log.error("could not terminate a lost node's stopped VM", extra={"fields": {
                "node_id": row.node_id, "vm": row.provider_id, "error": _short(exc)}})


def _with(node: NodeRow, state: str, provider_id: str) -> NodeRow:
    return NodeRow(node.node_id, node.cell, node.node_group, provider_id or node.provider_id,
                   state)  # type: ignore[arg-type]


class PodHandler:
    """RunPod and DeletePod through a `PodDriver`; instance reports from its watch."""

    _adapter: TypeAdapter[Any] = TypeAdapter(PodCommand)

    def __init__(self, driver: PodDriver) -> None:
        self.driver = driver
        # Watched but not yet sent: a watch may not show a fact twice (the simulation does
        # not), so it is kept until the broker has it.
        self._pending: list[tuple[CommandBase, Any]] = []

    def parse(self, raw: bytes) -> InfraCommandBase:
        return self._adapter.validate_json(raw)  # type: ignore[no-any-return]

    def act(self, command: InfraCommandBase) -> NodeRow | None:
        if isinstance(command, RunPod):
            self.driver.run(command)
        else:
            assert isinstance(command, DeletePod)
            self.driver.delete(command)
        return None

    def observe(self, timeout_s: float) -> list[tuple[CommandBase, Any]]:
        due = self._pending
        for fact in self.driver.watch(timeout_s):
            try:
                due.append((reports.pod_report(fact), None))
            except ValidationError as exc:  # a Pod of ours with unusable fields: say so, go on
                log.warning("observation not reportable", extra={"fields": {
                    "instance_id": fact.instance_id, "error": str(exc)[:500]}})
        return due

    def observed(self, sent: Sequence[Any]) -> None:
        self._pending = []

    def refused(self, command: InfraCommandBase, refusal: DriverRefused) -> list[CommandBase]:
        # A Pod that will never run ends its instance; a refused delete ends nothing.
        return [reports.refused_run(command, refusal)] if isinstance(command, RunPod) else []


@dataclass(frozen=True)
class WorkerConfig:
    kafka: str
    topic: str
    reports_topic: str = "cis.reports"
    dlq_topic: str = "cis.driver.dlq"
    partitions: list[int] | None = None
    max_attempts: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    poll_records: int = 100
    poll_timeout_ms: int = 500
    observe_timeout_s: float = 0.0  # how long a Pod watch may wait for a change
    observe_interval_s: float = 0.0  # look at the infrastructure at most this often
    client_id: str = "cis-driver"


class _Interrupted(Exception):
    """Asked to stop while waiting to retry: the command stays intended, not done."""


@dataclass
class Counters:
    done: int = 0
    skipped: int = 0  # already done or dead: at most once
    dead: int = 0
    retries: int = 0
    reports: int = 0


class DriverWorker:
    def __init__(self, handler: Handler, ledger: Ledger, config: WorkerConfig,
                 stop: Event | None = None) -> None:
        self.handler = handler
        self.ledger = ledger
        self.config = config
        self.stop = stop or Event()
        self.counters = Counters()
        self._source: CommandSource | None = None
        self._publisher: Publisher | None = None
        self._observed_at = float("-inf")

    # --- the loop -------------------------------------------------------------------

    def run(self, interval_s: float = 0.05) -> int:
        """Until `stop` is set; broker outages are waited out with back-off."""
        try:
            return keep_following(self.step, self.reset, self.stop, interval_s, OUTAGES, log)
        finally:
            self.reset()

    def step(self) -> int:
        """One poll's commands, then one look at the infrastructure. Returns the records
        and reports handled (0: idle)."""
        source, publisher = self._connect()
        handled = 0
        try:
            for records in source.poll_batch(self.config.poll_records,
                                             self.config.poll_timeout_ms).values():
                for record in records:
                    self._handle(record, publisher)
                    handled += 1
        except _Interrupted:
            self.reset()  # positions beyond the unfinished command are re-read from the ledger
            return handled
        return handled + self._observe(publisher)

    def reset(self) -> None:
        for closing in (self._source, self._publisher):
            if closing is not None:
                try:
                    closing.close()
                except Exception:  # closing a broken client: nothing more to do
                    log.debug("close failed", exc_info=True)
        self._source = self._publisher = None

    def _connect(self) -> tuple[CommandSource, Publisher]:
        if self._publisher is None:
            self._publisher = Publisher(self.config.kafka, client_id=self.config.client_id)
        if self._source is None:
            source = CommandSource(self.config.kafka, self.config.topic, self.config.partitions,
                                   client_id=self.config.client_id)
            stored = self.ledger.positions(self.config.topic)
            source.seek_all({p: stored.get(p, 0) for p in source.partitions})
            self._source = source
        return self._source, self._publisher

    # --- one command ----------------------------------------------------------------

    def _handle(self, record: Record, publisher: Publisher) -> None:
        topic, partition, after = record.topic, record.partition, record.offset + 1
        if record.unreadable:
            self._dead(publisher, record, None, f"unreadable: {record.unreadable}")
            return
        try:
            command = self.handler.parse(record.value)
        except (ValidationError, ValueError) as exc:
            self._dead(publisher, record, None, f"malformed: {_short(exc)}")
            return
        command_id = command.command_id
        known = self.ledger.command(command_id)
        if known is not None and known[0] in ("done", "dead"):
            self.counters.skipped += 1  # a re-delivery or a re-send by the outbox
            self.ledger.move(topic, partition, after)
            return
        fields: dict[str, Any] = {"command_id": command_id, "type": command.type}  # type: ignore
        while True:
            attempt = self.ledger.intend(command_id)
            if attempt > self.config.max_attempts:
                self._dead(publisher, record, command_id,
                           f"gave up after {attempt - 1} attempts (the worker stopped during "
                           "the last ones)")
                return
            try:
                node = self.handler.act(command)
            except DriverRefused as exc:  # the same call would be refused again: no retry
                log.warning("command refused", extra={"fields": {
                    **fields, "attempt": attempt, "error": _short(exc)}})
                self._report(publisher, self.handler.refused(command, exc))
                self._dead(publisher, record, command_id, f"refused: {_short(exc)}")
                return
            except Exception as exc:  # any driver or cloud error: retried, then dead-lettered
                log.warning("command failed", extra={"fields": {
                    **fields, "attempt": attempt, "error": _short(exc)}})
                if attempt >= self.config.max_attempts:
                    self._dead(publisher, record, command_id,
                               f"failed {attempt} times; last: {_short(exc)}")
                    return
                self.counters.retries += 1
                if self.stop.wait(self._backoff(attempt)):
                    raise _Interrupted() from exc
                continue
            self.ledger.finish(command_id, "done", topic, partition, after, node=node)
            self.counters.done += 1
            log.debug("command done", extra={"fields": fields})
            return

    def _backoff(self, attempt: int) -> float:
        return float(min(self.config.backoff_s * 2 ** (attempt - 1), self.config.max_backoff_s))

    def _dead(self, publisher: Publisher, record: Record, command_id: str | None,
              reason: str) -> None:
        log.error("command dead-lettered", extra={"fields": {
            "command_id": command_id, "topic": record.topic, "partition": record.partition,
            "offset": record.offset, "reason": reason}})
        publisher.send_dlq(self.config.dlq_topic, record, reason)
        publisher.flush()  # in the DLQ before the position moves past it
        self.ledger.finish(command_id, "dead", record.topic, record.partition,
                           record.offset + 1, detail=reason)
        self.counters.dead += 1

    # --- reports --------------------------------------------------------------------

    def _observe(self, publisher: Publisher) -> int:
        # Monotonic time paces the looking only (describe calls cost API quota); what is
        # reported carries the infrastructure's or the clock's time.
        if time.monotonic() - self._observed_at < self.config.observe_interval_s:
            return 0
        self._observed_at = time.monotonic()
        try:
            due = self.handler.observe(self.config.observe_timeout_s)
        except Exception as exc:  # the cloud's describe failed: look again next time
            log.warning("observing failed", extra={"fields": {"error": _short(exc)}})
            return 0
        if not due:
            return 0
        self._report(publisher, [report for report, _ in due])
        self.handler.observed([memo for _, memo in due if memo is not None])
        return len(due)

    def _report(self, publisher: Publisher, due: Sequence[CommandBase]) -> None:
        for report in due:
            publisher.send_command(self.config.reports_topic, report.cell,
                                   report.model_dump_json().encode())
        publisher.flush()  # sent before remembered: a crash between repeats a report (same id)
        self.counters.reports += len(due)


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]
