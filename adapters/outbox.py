"""The outbox: VM and Pod commands from the event log to their topics, at least once.

Another consumer of the log, beside the projections. A page of events becomes commands
(`adapters/infra_commands.py`), they are sent, the broker acknowledges all of them, and
only then is the page's position stored (tracking name `outbox`). A crash in between sends
the page again: the same commands, byte for byte, under the same `command_id`s, which is
how consumers deduplicate. VM commands are keyed by cell (one controller per cell's node
groups), Pod commands by node (one agent per node sees its node's commands in order).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from threading import Event

from eventsourcing.persistence import Tracking

from adapters.bootstrap import Engine, connect
from adapters.infra_commands import TOPICS, InfraTranslator
from adapters.kafka_io import BrokerUnavailable, Publisher, PublishFailed
from adapters.stores import STORE_DOWN
from adapters.workers import WorkerProcess, keep_following
from schemas.infra import InfraCommandBase, ProvisionNode, TerminateNode

log = logging.getLogger("cis.outbox")

TRACKING_NAME = "outbox"
PAGE = 2000
BROKER_DOWN = (BrokerUnavailable, PublishFailed)


@dataclass(frozen=True)
class OutboxTopics:
    vm: str = "cis.vm-commands"
    pod: str = "cis.pod-commands"

    def route(self, command: InfraCommandBase) -> tuple[str, str]:
        """(topic, key) of a command."""
        if isinstance(command, ProvisionNode | TerminateNode):
            return self.vm, command.cell
        return self.pod, command.node_id  # type: ignore[attr-defined]


class Outbox:
    def __init__(self, engine: Engine, publisher: Publisher, topics: OutboxTopics) -> None:
        self.engine = engine
        self.publisher = publisher
        self.topics = topics
        self.translator = InfraTranslator.of(engine.app)
        self.position = engine.view.max_tracking_id(TRACKING_NAME) or 0
        self.sent = 0

    def step(self, limit: int = PAGE) -> int:
        """Send the commands of the next stretch of the log; returns how many events it
        moved past (0: caught up). Raises, its position unchanged, if the broker did not
        acknowledge every command."""
        app = self.engine.app
        # Only the few kinds of event that imply a command are read. The log's end is read
        # first: every event up to it is already stored (ids follow commit order), so a
        # stretch without a single such event still moves the position.
        end = app.recorder.max_notification_id() or 0
        if end <= self.position:
            return 0
        page = app.page(self.position, limit, topics=TOPICS, stop=end)
        if len(page) == limit:
            end = page[-1][0]
        commands = [c for _, event in page for c in self.translator.translate(event)]
        for command in commands:
            topic, key = self.topics.route(command)
            self.publisher.send(topic, command.model_dump_json().encode(), key=key.encode())
        self.publisher.flush()
        self.engine.view.commit([], {}, Tracking(TRACKING_NAME, end))
        moved, self.position = end - self.position, end
        self.sent += len(commands)
        return moved

    def catch_up(self) -> int:
        read = 0
        while done := self.step():
            read += done
        return read


def follow(store: str, kafka: str, topics: OutboxTopics, interval_s: float,
           stop: Event) -> int:
    """Keep the topics current with the log until `stop` is set (then catch up once more).
    Returns the number of events whose commands were sent."""
    engine: Engine | None = None
    publisher: Publisher | None = None
    outbox: Outbox | None = None

    def step() -> int:
        nonlocal engine, publisher, outbox
        if engine is None:
            engine = connect(store)
        if publisher is None:
            publisher = Publisher(kafka, client_id="cis-outbox")
        if outbox is None:
            outbox = Outbox(engine, publisher, topics)
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
