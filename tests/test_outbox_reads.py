"""What the outbox reads: a window of notification ids per step, and an instance's spec only
once a later event of that instance needs it (docs/design.md §1.4)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from eventsourcing.utils import get_topic

from adapters.bootstrap import Engine
from adapters.kafka_io import Publisher
from adapters.outbox import Outbox, OutboxTopics
from engine.domain.instance import Instance
from simulations.tansu import Broker
from tests import builders as b
from tests.helpers import accepted, cell_with_ready_node
from tests.test_outbox import per_event, simulate_day


def _topics(factory: Callable[..., str]) -> OutboxTopics:
    return OutboxTopics(vm=factory("vm", partitions=1), pod=factory("pod", partitions=1))


def _decoded(engine: Engine) -> Counter[str]:
    """Counts the events the engine's mapper decodes from now on, by topic."""
    seen: Counter[str] = Counter()
    decode = engine.app.mapper.to_domain_event

    def counting(stored: Any) -> Any:
        seen[stored.topic] += 1
        return decode(stored)

    engine.app.mapper.to_domain_event = counting  # type: ignore[method-assign]
    return seen


def test_each_step_reads_a_window_of_ids_and_the_steps_send_everything(
        engine: Engine, kafka_broker: Broker, kafka_topic_factory: Callable[..., str]) -> None:
    simulate_day(engine)
    end = engine.app.recorder.max_notification_id() or 0
    expected = sum(len(cs) for cs in per_event(engine).values())
    with Publisher(kafka_broker.bootstrap, client_id="test-outbox") as publisher:
        outbox = Outbox(engine, publisher, _topics(kafka_topic_factory))
        moves = []
        while moved := outbox.step(limit=50):
            moves.append(moved)
    assert max(moves) == 50 and sum(moves) == end, "never past its window, and to the end"
    assert outbox.sent == expected


def test_an_instance_never_placed_is_never_decoded(
        engine: Engine, kafka_broker: Broker, kafka_topic_factory: Callable[..., str]) -> None:
    # A pool that may not grow: every create waits, unschedulable.
    accepted(engine, b.price_book(), b.networks(), b.pool(max_nodes=0),
             *(b.create(f"wait-{i}", t=1 + i) for i in range(30)))
    decoded = _decoded(engine)
    with Publisher(kafka_broker.bootstrap, client_id="test-outbox") as publisher:
        outbox = Outbox(engine, publisher, _topics(kafka_topic_factory))
        assert outbox.catch_up() == engine.app.recorder.max_notification_id()
        assert outbox.sent == 0
        assert decoded[get_topic(Instance.Requested)] == 0
        # Deleted, it leaves no node it was ever on: no DeletePod, and nothing decoded.
        accepted(engine, b.tenant("DeleteInstance", "wait-3", t=40))
        outbox.catch_up()
        assert outbox.sent == 0
        assert decoded[get_topic(Instance.Requested)] == 0
        assert decoded[get_topic(Instance.Deleted)] == 0


def test_an_instance_that_left_its_node_is_not_decoded_again(
        engine: Engine, kafka_broker: Broker, kafka_topic_factory: Callable[..., str]) -> None:
    cell_with_ready_node(engine)
    accepted(engine, b.create("web-1", t=2))
    decoded = _decoded(engine)
    with Publisher(kafka_broker.bootstrap, client_id="test-outbox") as publisher:
        outbox = Outbox(engine, publisher, _topics(kafka_topic_factory))
        outbox.catch_up()
        provisioned_and_run = outbox.sent
        accepted(engine, b.tenant("StopInstance", "web-1", t=10))
        outbox.catch_up()
        assert outbox.sent == provisioned_and_run + 1, "its DeletePod"
        # Deleted after its stop: the outbox knows it is on no node, so no DeletePod, and the
        # event is skipped undecoded.
        accepted(engine, b.tenant("DeleteInstance", "web-1", t=20))
        outbox.catch_up()
        assert outbox.sent == provisioned_and_run + 1
        assert decoded[get_topic(Instance.Stopped)] == 1
        assert decoded[get_topic(Instance.Deleted)] == 0
