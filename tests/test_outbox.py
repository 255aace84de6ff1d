"""The outbox: every VM and Pod command the log implies reaches its topic, at least once,
and a re-send after a crash is the same message (so consumers deduplicate by command_id)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable

import pytest
from kafka.partitioner.default import DefaultPartitioner

from adapters.bootstrap import Engine
from adapters.infra_commands import InfraTranslator
from adapters.kafka_io import Publisher, partition_for
from adapters.outbox import TRACKING_NAME, KeyHashPartitioner, Outbox, OutboxTopics
from adapters.serve_metrics import OutboxMetrics
from engine.domain.instance import TERMINAL
from schemas.infra import (
    DeletePod,
    InfraCommandBase,
    ProvisionNode,
    RunPod,
    TerminateNode,
    infra_command_adapter,
)
from simulations.tansu import Broker
from tests import builders as b
from tests import test_serve_helpers as h
from tests.helpers import accepted, simulate


def simulate_day(engine: Engine) -> None:
    simulate(engine, 30, seed=7, hours=12, tick_every_s=600)


def per_event(engine: Engine, after: int = 0) -> dict[int, list[InfraCommandBase]]:
    """Each event's commands, by a translator that starts reading after `after`."""
    translator = InfraTranslator.of(engine.app)
    return {n: translator.translate(event) for n, event in engine.app.read(after)}


def test_commands_follow_placements_endings_and_node_decisions(engine: Engine) -> None:
    simulate_day(engine)
    commands = [c for cs in per_event(engine).values() for c in cs]
    assert len({c.command_id for c in commands}) == len(commands), "command ids are unique"
    world = engine.processor.world
    runs = Counter(c.instance_id for c in commands if isinstance(c, RunPod))
    deletes = {c.instance_id: c for c in commands if isinstance(c, DeletePod)}
    placed = {i.name: i for i in world.instances.values() if i.node_id is not None}
    assert placed and runs == Counter(list(placed)), "one RunPod per placed instance"
    for name, instance in placed.items():
        if instance.state in TERMINAL:
            assert deletes[name].node_id == instance.node_id, name
        else:
            assert name not in deletes, f"{name} still runs: its pod stays"
    assert set(deletes) <= set(placed), "never a DeletePod for a pod that was never run"
    provisioned = {c.node_id for c in commands if isinstance(c, ProvisionNode)}
    terminated = {c.node_id for c in commands if isinstance(c, TerminateNode)}
    assert provisioned == {n.node_id for n in world.nodes.values()}
    assert terminated == {n.node_id for n in world.nodes.values() if n.state == "terminated"}
    assert terminated, "the workload scales in"


def test_a_translator_started_mid_log_says_what_one_from_the_start_says(
        engine: Engine) -> None:
    simulate_day(engine)
    full = per_event(engine)
    middle = sorted(full)[len(full) // 2]
    tail = per_event(engine, after=middle)
    assert tail == {n: cs for n, cs in full.items() if n > middle}
    assert any(tail.values())


def test_outbox_sends_everything_and_resends_identically_after_a_crash(
        engine: Engine, kafka_broker: Broker, kafka_topic_factory: Callable[..., str]) -> None:
    simulate_day(engine)
    expected = {c.command_id: c for cs in per_event(engine).values() for c in cs}
    topics = OutboxTopics(vm=kafka_topic_factory("vm", partitions=2),
                          pod=kafka_topic_factory("pod", partitions=2))
    with Publisher(kafka_broker.bootstrap, client_id="test-outbox") as publisher:
        outbox = Outbox(engine, publisher, topics)
        commit = engine.view.commit

        def crash(*args: object, **kwargs: object) -> None:
            raise RuntimeError("crashed after the broker acknowledged, before the position")

        engine.view.commit = crash  # type: ignore[method-assign]
        with pytest.raises(RuntimeError):
            outbox.step(limit=300)
        engine.view.commit = commit  # type: ignore[method-assign]
        assert (engine.view.max_tracking_id(TRACKING_NAME) or 0) == 0
        restarted = Outbox(engine, publisher, topics)  # a new process: nothing in memory
        restarted.catch_up()
        assert engine.view.max_tracking_id(TRACKING_NAME) \
            == engine.app.recorder.max_notification_id()
        # A stretch of the log that implies no command still moves the position.
        accepted(engine, b.tick(10 ** 6, catch_up=True))  # weeks past the simulated day
        before = restarted.sent
        assert restarted.catch_up() > 0 and restarted.sent == before
    assert engine.view.max_tracking_id(TRACKING_NAME) == engine.app.recorder.max_notification_id()

    records = [*h.read_topic(kafka_broker.bootstrap, topics.vm),
               *h.read_topic(kafka_broker.bootstrap, topics.pod)]
    sent: dict[str, set[bytes]] = {}
    for record in records:
        command = infra_command_adapter.validate_json(record.value)
        topic, key = topics.route(command)
        assert (record.topic, record.key) == (topic, key.encode())
        sent.setdefault(command.command_id, set()).add(record.value)
    assert sent.keys() == expected.keys(), "every command, and only those"
    assert all(len(values) == 1 for values in sent.values()), "a re-send is the same bytes"
    assert len(records) > len(sent), "the first page was sent twice"
    assert {c.command_id: infra_command_adapter.validate_json(next(iter(v)))
            for c, v in ((expected[k], v) for k, v in sent.items())} == expected


def test_a_command_too_large_for_the_broker_is_dead_lettered_and_the_rest_still_sent(
        engine: Engine, kafka_broker: Broker, kafka_topic_factory: Callable[..., str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    simulate_day(engine)
    expected = {c.command_id: c for cs in per_event(engine).values() for c in cs}
    runs = [c for c in expected.values() if isinstance(c, RunPod)]
    victim = runs[len(runs) // 3].command_id
    translate = InfraTranslator.translate

    def inflating(self: InfraTranslator, event: object) -> list[InfraCommandBase]:
        # What a 1 MB CreateInstance once made of its RunPod (issue 11, item 17).
        out = translate(self, event)
        for c in out:
            if c.command_id == victim:
                c.manifest["metadata"]["annotations"]["cis.io/pad"] = "x" * 1_100_000
        return out

    monkeypatch.setattr(InfraTranslator, "translate", inflating)
    vm, pod = kafka_topic_factory("vm", partitions=2), kafka_topic_factory("pod", partitions=2)
    topics = OutboxTopics(vm=vm, pod=pod)
    dlq = kafka_topic_factory("pod-dlq", partitions=1)  # stands for `<pod topic>.dlq`
    monkeypatch.setattr(OutboxTopics, "dlq", staticmethod(
        lambda topic: dlq if topic == pod else f"{topic}.dlq"))
    metrics = OutboxMetrics()
    with Publisher(kafka_broker.bootstrap, client_id="test-outbox") as publisher:
        outbox = Outbox(engine, publisher, topics, metrics)
        outbox.catch_up()
        assert outbox.dead_letters == 1
    assert engine.view.max_tracking_id(TRACKING_NAME) == engine.app.recorder.max_notification_id()
    sent = {infra_command_adapter.validate_json(r.value).command_id
            for t in (vm, pod) for r in h.read_topic(kafka_broker.bootstrap, t)}
    assert sent == set(expected) - {victim}, "every other command, of every cell, went out"
    (notice,) = h.read_topic(kafka_broker.bootstrap, dlq)
    body = json.loads(notice.value)
    assert body["command_id"] == victim and body["topic"] == pod
    assert body["size"] > 1_100_000 and len(body["sha256"]) == 64
    assert "too large" in body["reason"]
    value = metrics.registry.get_sample_value
    assert value("cis_outbox_dead_letters_total") == 1
    assert value("cis_outbox_commands_sent_total") == len(expected) - 1 == outbox.sent
    assert value("cis_outbox_position") == value("cis_outbox_log_end") \
        == engine.app.recorder.max_notification_id()


class _Cluster:
    """What a partitioner asks of kafka-python's cluster metadata."""

    def __init__(self, partitions: dict[str, int]) -> None:
        self.partitions = partitions

    def topics(self) -> set[str]:
        return set(self.partitions)

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self.partitions[topic]))

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return self.partitions_for_topic(topic)


def test_the_outbox_partitions_every_key_as_the_default_partitioner_does() -> None:
    remembering, default = KeyHashPartitioner(at_most=50), DefaultPartitioner()
    keys = [f"node-{k:05d}".encode() for k in range(120)] + [b"az-1", b""]
    for partitions in (1, 4, 7, 4):  # the count changed: hashes are kept, not partitions
        cluster = _Cluster({"cis.pod-commands": partitions})
        for key in [*keys, *keys]:  # the second time, from memory (or forgotten: at_most)
            assert remembering.partition("cis.pod-commands", None, key, None, None, cluster) \
                == default.partition("cis.pod-commands", None, key, None, None, cluster) \
                == partition_for(key.decode(), partitions)
