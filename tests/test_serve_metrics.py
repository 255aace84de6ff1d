"""`cis serve --metrics-port`: Prometheus metrics of intake and of the world it decides on."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from adapters.serve import ServeConfig, Server
from simulations.tansu import Broker
from tests import test_serve_helpers as h
from tests.test_serve_e2e import make_topics


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_count_commands_by_status_lag_events_instances_and_nodes(
        kafka_broker: Broker, kafka_topic_factory: Callable[..., str]) -> None:
    topics = make_topics(kafka_topic_factory, partitions=1)
    commands = h.workload(["az-1"], 4)
    setup, rest = h.split_setup(commands)
    # Some instances stay: no stops, and no ticks to time them out or expire them.
    rest = [c for c in rest if c["type"] not in ("StopInstance", "Tick")]
    commands = [*setup, *rest]
    h.produce_by_role(kafka_broker.bootstrap, topics, setup)
    server = Server(ServeConfig(
        store="memory://", kafka=kafka_broker.bootstrap, commands_topic=topics["commands"],
        reports_topic=topics["reports"], admin_topic=topics["admin"],
        outcomes_topic=topics["outcomes"], dlq_topic=topics["dlq"], outbox="off",
        projections="off", poll_timeout_ms=100, metrics_port=0, metrics_interval_s=0.0))
    try:
        server.start()
        assert server.metrics_port
        server.serve(until=lambda s: s.stats.commands >= len(setup))
        wrong = {**rest[0], "command_id": "on-the-wrong-topic"}  # a tenant's, on admin
        h.produce(kafka_broker.bootstrap, topics["admin"], h.keyed([wrong]))
        h.produce_by_role(kafka_broker.bootstrap, topics, rest)
        h.produce(kafka_broker.bootstrap, topics["commands"], [("az-1", b"{not json")])
        server.serve(until=lambda s: s.stats.commands >= len(commands) + 2)
        server.step()  # one more round of chores: gauges and lag counted after the last batch
        metrics = scrape(server.metrics_port)
    finally:
        server.close()

    def value(name: str, **labels: str) -> float:
        return metrics.get((name, tuple(sorted(labels.items()))), 0.0)

    by_status = server.stats.by_status
    assert sum(value("cis_commands_total", status=s, role=r)
               for s in ("accepted", "rejected", "dead_letter")
               for r in ("tenant", "agent", "operator")) == len(commands) + 2
    assert value("cis_commands_total", status="dead_letter", role="tenant") == 1
    assert value("cis_commands_total", status="accepted", role="tenant") > 0
    assert value("cis_commands_total", status="accepted", role="operator") \
        == by_status["accepted"] - sum(value("cis_commands_total", status="accepted", role=r)
                                       for r in ("tenant", "agent"))
    assert value("cis_commands_total", status="rejected", role="operator") >= 1  # wrong topic
    assert value("cis_events_appended_total") > 0
    (answer,) = h.outcomes_by_id(h.read_topic(kafka_broker.bootstrap,
                                              topics["outcomes"]))["on-the-wrong-topic"]
    assert answer["reasons"][0]["code"] == "wrong_topic"
    for key in h.ROLE_TOPICS:
        assert (("cis_intake_lag_records", (("partition", "0"), ("topic", topics[key])))
                in metrics), key
        assert value("cis_intake_lag_records", topic=topics[key], partition="0") == 0
    assert engine_nodes(server) == {s: value("cis_nodes", state=s) for s in engine_nodes(server)}
    placed, pending = counts(server)
    assert value("cis_instances_placed") == placed and value("cis_instances_pending") == pending
    assert placed + pending > 0


def engine_nodes(server: Server) -> dict[str, float]:
    assert server.engine is not None
    nodes: dict[str, float] = {}
    for node in server.engine.processor.world.nodes.values():
        nodes[node.state] = nodes.get(node.state, 0) + 1
    assert nodes, "the pools asked for nodes"
    return nodes


def counts(server: Server) -> tuple[int, int]:
    from engine.domain.instance import ON_NODE, PENDING

    assert server.engine is not None
    states = [i.state for i in server.engine.processor.world.instances.values()]
    return sum(s in ON_NODE for s in states), sum(s in PENDING for s in states)
