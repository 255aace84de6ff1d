"""The outbox: VM and Pod commands from the event log to their topics, at least once.

Another consumer of the log, beside the projections. A page of events becomes commands
(`adapters/infra_commands.py`), they are sent, the broker acknowledges all of them, and
only then is the page's position stored (tracking name `outbox`). A crash in between sends
the page again: the same commands, byte for byte, under the same `command_id`s, which is
how consumers deduplicate. VM commands are keyed by cell (one controller per cell's node
groups), Pod commands by node (one agent per node sees its node's commands in order).

Nothing in the log can stop the outbox: a command whose record would exceed the broker's
limit (or that cannot be built at all) is logged and announced on its topic's dead-letter
topic (`<topic>.dlq`) by a small record naming it, its digest, size and the reason; the
outbox moves on, and every later command of every cell is still sent.

What it costs beside intake (`cis bench intake --outbox process`, `outbox_cpu_share`): each
step reads a window of at most PAGE notification ids, so the database reads only that stretch
(a query for "the next PAGE events of these kinds" scanned and sorted the whole backlog each
time). An instance's Requested event is kept as stored bytes and decoded only when a later
event of that instance needs its spec: an instance that is never placed costs its row, no
decoding; nor is an event of an instance leaving a node decoded when the instance is known to
be on none.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from threading import Event
from typing import Any

from eventsourcing.persistence import Notification, Tracking
from eventsourcing.utils import get_topic
from kafka.partitioner.default import DefaultPartitioner
from prometheus_client import start_http_server

from adapters.bootstrap import Engine, connect
from adapters.infra_commands import DELETED, LEAVES_NODE_TOPICS, TOPICS, InfraTranslator
from adapters.kafka_io import (
    RECORD_BUDGET_BYTES,
    BrokerUnavailable,
    KafkaIOError,
    Publisher,
    PublishFailed,
    RecordTooLarge,
    encode_json,
    key_hash,
    record_size,
)
from adapters.serve_metrics import OutboxMetrics
from adapters.stores import STORE_DOWN
from adapters.workers import WorkerProcess, keep_following
from engine.domain.instance import Instance
from schemas.infra import InfraCommandBase, ProvisionNode, TerminateNode

log = logging.getLogger("cis.outbox")

TRACKING_NAME = "outbox"
PAGE = 2000  # notification ids read per step
REQUESTED = get_topic(Instance.Requested)
HELD_AT_MOST = 100_000  # Requested events held undecoded; a forgotten one is loaded again
BROKER_DOWN = (BrokerUnavailable, PublishFailed)


@dataclass(frozen=True)
class OutboxTopics:
    vm: str = "cis.vm-commands"
    pod: str = "cis.pod-commands"

    @staticmethod
    def dlq(topic: str) -> str:
        """Where a command that cannot be sent on `topic` is announced."""
        return f"{topic}.dlq"

    def route(self, command: InfraCommandBase) -> tuple[str, str]:
        """(topic, key) of a command."""
        if isinstance(command, ProvisionNode | TerminateNode):
            return self.vm, command.cell
        return self.pod, command.node_id  # type: ignore[attr-defined]


class KeyHashPartitioner(DefaultPartitioner):
    """The default partitioner (`kafka_io.key_hash` modulo the partition count) with each
    key's hash remembered: the hash is pure Python and was
    about a quarter of a send, and the outbox sends every command of a cell or a node under
    one key."""

    def __init__(self, at_most: int = 100_000) -> None:
        self._hashes: dict[bytes, int] = {}
        self._at_most = at_most

    def partition(self, topic: str, key: Any, serialized_key: bytes | None, value: Any,
                  serialized_value: Any, cluster: Any) -> int:
        if serialized_key is None or topic not in cluster.topics():
            return super().partition(topic, key, serialized_key, value, serialized_value,
                                     cluster)
        hashed = self._hashes.get(serialized_key)
        if hashed is None:
            if len(self._hashes) >= self._at_most:
                self._hashes.clear()
            hashed = self._hashes[serialized_key] = key_hash(serialized_key)
        partitions = sorted(cluster.partitions_for_topic(topic))
        return partitions[hashed % len(partitions)]


def outbox_publisher(kafka: str, client_id: str = "cis-outbox") -> Publisher:
    return Publisher(kafka, client_id=client_id, partitioner=KeyHashPartitioner())


class Outbox:
    def __init__(self, engine: Engine, publisher: Publisher, topics: OutboxTopics,
                 metrics: OutboxMetrics | None = None) -> None:
        self.engine = engine
        self.metrics = metrics
        self.publisher = publisher
        self.topics = topics
        self.translator = InfraTranslator.of(engine.app)
        self.position = engine.view.max_tracking_id(TRACKING_NAME) or 0
        self._held: dict[Any, Notification] = {}  # instance id -> its Requested, undecoded
        self.sent = 0
        self.dead_letters = 0

    def step(self, limit: int = PAGE) -> int:
        """Send the commands of the next stretch of the log (at most `limit` notification
        ids); returns how many ids it moved past (0: caught up). Raises, its position
        unchanged, if the broker did not acknowledge every command."""
        app = self.engine.app
        # Only the few kinds of event that imply a command are read. The log's end is read
        # first: every event up to it is already stored (ids follow commit order), so a
        # stretch without a single such event still moves the position.
        end = app.recorder.max_notification_id() or 0
        if self.metrics is not None:
            self.metrics.log_end.set(end)
        if end <= self.position:
            return 0
        # A window of ids, not "the next `limit` rows": at most `limit` rows come back, so
        # the whole window is read, and the database reads nothing past it.
        end = min(end, self.position + limit)
        page = app.recorder.select_notifications(start=self.position + 1, limit=limit,
                                                 stop=end, topics=TOPICS)
        dead_before = self.dead_letters
        commands = [c for n in page for c in self._commands_of(n)]
        unsent = 0
        for command in commands:
            topic, key = self.topics.route(command)
            value = command.model_dump_json().encode()
            if record_size(value, key.encode()) > RECORD_BUDGET_BYTES:
                self._dead_letter(topic, key, value, command.command_id, "too large for the "
                                  f"broker: {len(value)} bytes")
                unsent += 1
                continue
            try:
                self.publisher.send(topic, value, key=key.encode())
            except RecordTooLarge as exc:
                self._dead_letter(topic, key, value, command.command_id, str(exc))
                unsent += 1
        self.publisher.flush()
        self.engine.view.commit([], {}, Tracking(TRACKING_NAME, end))
        moved, self.position = end - self.position, end
        self.sent += len(commands) - unsent
        if self.metrics is not None:
            self.metrics.sent.inc(len(commands) - unsent)
            self.metrics.dead_letters.inc(self.dead_letters - dead_before)
            self.metrics.position.set(end)
        return moved

    def _commands_of(self, notification: Notification) -> list[InfraCommandBase]:
        """The commands one stored event implies. A Requested event implies none: it is held
        as stored and given to the translator just before the first later event of its
        instance that needs the spec (one placing it). An instance leaving a node it is known
        not to be on (its Requested still held: never placed) implies none either, and is not
        decoded."""
        topic, instance = notification.topic, notification.originator_id
        if topic == REQUESTED:
            if len(self._held) >= HELD_AT_MOST:
                self._held.clear()  # a bound: the translator loads a forgotten spec
            self._held[instance] = notification
            return []
        if topic in LEAVES_NODE_TOPICS and (instance in self._held
                                            or self.translator.off_node(instance)):
            if topic == DELETED:  # nothing of it comes after
                self._held.pop(instance, None)
                self.translator.forget(instance)
            return []
        held = self._held.pop(instance, None)
        if held is not None:
            self._translate(held.id, self.engine.app.mapper.to_domain_event(held))
        return self._translate(notification.id,
                               self.engine.app.mapper.to_domain_event(notification))

    def _translate(self, notification: int, event: Any) -> list[InfraCommandBase]:
        try:
            return self.translator.translate(event)
        except STORE_DOWN:
            raise
        except Exception as exc:  # a bug must not stop every later command of every cell
            log.exception("no command for an event; skipped", extra={"fields": {
                "notification": notification}})
            self._dead_letter(self.topics.vm, "", b"", None,
                              f"event {notification} not translated: {exc!r}"[:1000])
            return []

    def _dead_letter(self, topic: str, key: str, value: bytes, command_id: str | None,
                     reason: str) -> None:
        """Log a command that cannot be sent and announce it on `<topic>.dlq` (small)."""
        notice: dict[str, Any] = {"command_id": command_id, "topic": topic, "key": key[:256],
                                  "size": len(value),
                                  "sha256": hashlib.sha256(value).hexdigest(),
                                  "reason": reason}
        log.error("command not sent; dead-lettered", extra={"fields": notice})
        dlq = self.topics.dlq(topic)
        def lost(exc: BaseException) -> None:  # the log line above still says it all
            log.error("dead letter not sent", extra={"fields": {"topic": dlq,
                                                                "error": repr(exc)[:300]}})

        try:
            # Untracked: a notice that fails (no such topic, no ACL) must not make the page
            # fail, or the outbox would send it again forever.
            self.publisher.send(dlq, encode_json(notice), key=key[:256].encode() or None,
                                headers=[("reason", reason.encode()[:1024])],
                                track=False).add_errback(lost)
        except KafkaIOError as exc:
            lost(exc)
        self.dead_letters += 1

    def catch_up(self) -> int:
        read = 0
        while done := self.step():
            read += done
        return read


def follow(store: str, kafka: str, topics: OutboxTopics, interval_s: float,
           stop: Event, metrics_port: int | None = None, metrics_host: str = "127.0.0.1") -> int:
    """Keep the topics current with the log until `stop` is set (then catch up once more).
    Returns the number of events whose commands were sent. With `metrics_port`, serves
    Prometheus metrics there."""
    metrics = OutboxMetrics() if metrics_port is not None else None
    if metrics is not None and metrics_port is not None:
        start_http_server(metrics_port, metrics_host, registry=metrics.registry)
    engine: Engine | None = None
    publisher: Publisher | None = None
    outbox: Outbox | None = None

    def step() -> int:
        nonlocal engine, publisher, outbox
        if engine is None:
            engine = connect(store)
        if publisher is None:
            publisher = outbox_publisher(kafka)
        if outbox is None:
            outbox = Outbox(engine, publisher, topics, metrics)
        return outbox.catch_up()

    def reset() -> None:
        nonlocal outbox
        outbox = None  # start again from the stored position: the unacknowledged is resent

    try:
        return keep_following(step, reset, stop, interval_s, (*STORE_DOWN, *BROKER_DOWN), log)
    finally:
        for closing in (publisher, engine):
            if closing is not None:
                closing.close()


def outbox_process(store: str, kafka: str, topics: OutboxTopics, interval_s: float = 0.5,
                   log_level: str = "info") -> WorkerProcess:
    return WorkerProcess("outbox", "adapters.outbox:follow", (store, kafka, topics, interval_s),
                         log_level)
