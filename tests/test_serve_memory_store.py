"""`cis serve` in-process on a memory store: projections run inline, the config stays put."""

from __future__ import annotations

from collections.abc import Callable

from adapters.serve import ServeConfig, Server
from simulations.tansu import Broker
from tests import test_serve_helpers as h


def test_memory_store_projects_inline_without_rewriting_config(
        kafka_broker: Broker, kafka_topic_factory: Callable[..., str]) -> None:
    topics = {name: kafka_topic_factory(name)
              for name in ("commands", "reports", "admin", "outcomes", "dlq")}
    setup, commands = h.split_setup(h.workload(["az-1"], 3))
    h.produce_by_role(kafka_broker.bootstrap, topics, setup)
    config = ServeConfig(store="memory://", kafka=kafka_broker.bootstrap,
                         commands_topic=topics["commands"], reports_topic=topics["reports"],
                         admin_topic=topics["admin"], outcomes_topic=topics["outcomes"],
                         dlq_topic=topics["dlq"], projections="process",
                         projection_interval_s=0.0)
    server = Server(config)
    def consumed(s: Server) -> bool:
        return s.stats.commands >= len(setup) + len(commands) and s.engine is not None \
            and bool(s.engine.view.select(s.engine.projection("instances").tables[0]))

    try:
        server.start()
        server.serve(until=lambda s: s.stats.commands >= len(setup))  # pools before tenants
        h.produce_by_role(kafka_broker.bootstrap, topics, commands)
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
