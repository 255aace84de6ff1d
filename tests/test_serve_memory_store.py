"""`cis serve` in-process on a memory store: projections run inline, the config stays put."""

from __future__ import annotations

from collections.abc import Callable

from adapters.serve import ServeConfig, Server
from simulations.tansu import Broker
from tests import test_serve_helpers as h


def test_memory_store_projects_inline_without_rewriting_config(
        kafka_broker: Broker, kafka_topic_factory: Callable[..., str]) -> None:
    topics = {name: kafka_topic_factory(name) for name in ("commands", "outcomes", "dlq")}
    commands = h.workload(["az-1"], 3)
    h.produce(kafka_broker.bootstrap, topics["commands"], h.keyed(commands))
    config = ServeConfig(store="memory://", kafka=kafka_broker.bootstrap,
                         commands_topic=topics["commands"], outcomes_topic=topics["outcomes"],
                         dlq_topic=topics["dlq"], projections="process",
                         projection_interval_s=0.0)
    server = Server(config)
    done = len(commands) - 1  # offsets start at 0

    def consumed(s: Server) -> bool:
        return s.processed.get(0, -1) >= done and s.engine is not None and bool(
            s.engine.view.select(s.engine.projection("instances").tables[0]))

    try:
        server.start()
        assert server.projections == "inline", "a child process cannot see a memory store"
        assert server.projector is None
        server.serve(until=consumed)
        assert server.engine is not None
        rows = server.engine.view.select(server.engine.projection("instances").tables[0])
        assert {r["instance_id"] for r in rows} == {
            c["instance_id"] for c in commands if c["type"] == "CreateInstance"}
    finally:
        server.close()
    assert config.projections == "process", "the caller's config is not rewritten"
