"""Small helpers the engine tests share."""

from __future__ import annotations

from typing import Any

from adapters.bootstrap import Engine, connect
from engine.domain.instance import Instance
from schemas.outcomes import Outcome
from simulations.workloads import simulate  # noqa: F401 (the tests' shared workload)
from tests import builders as b


def run(engine: Engine, *commands: dict[str, Any] | str) -> list[Outcome]:
    return engine.apply([c if isinstance(c, str) else b.json.dumps(c) for c in commands])


def one(engine: Engine, command: dict[str, Any] | str) -> Outcome:
    (outcome,) = run(engine, command)
    return outcome


def accepted(engine: Engine, *commands: dict[str, Any]) -> list[Outcome]:
    outcomes = run(engine, *commands)
    for outcome in outcomes:
        assert outcome.status == "accepted", outcome
    return outcomes


def instance(engine: Engine, name: str, account: str = b.ACCOUNT) -> Instance:
    found = engine.processor.world.instance(b.CELL, account, name)
    assert found is not None
    return found


def state(engine: Engine, name: str) -> str:
    return instance(engine, name).state


def event_count(engine: Engine) -> int:
    return engine.app.recorder.max_notification_id() or 0


def domain_snapshot(engine: Engine) -> dict[str, Any]:
    """Every aggregate in the log but the command log, with its version: what 'changes
    nothing' is judged by (read from the log: the writer's memory holds only what is live)."""
    found: dict[str, Any] = {}
    for n in engine.app.recorder.select_notifications(start=1, limit=10**9):
        kind = n.topic.split(":")[1].split(".")[0]
        if kind != "CellLog":
            found[str(n.originator_id)] = (kind, n.originator_version)
    return found


def cell_with_ready_node(engine: Engine, **pool_config: Any) -> None:
    """A price book and a dedicated pool with one ready 1C2G node."""
    accepted(engine, b.price_book(), b.networks(), b.pool(min_nodes=1, **pool_config),
             b.report("ReportNodeReady", 0.5, node_id="general-00001"))


def simulated_lines(instances: int, seed: int, hours: float, tick_every_s: int) -> list[bytes]:
    """A simulated day's commands as intake lines, in the order they were decided (each
    batch as the simulation sent it)."""
    sent: list[bytes] = []
    with connect("memory://") as engine:
        apply = engine.apply

        def keep(items: Any, *args: Any, **kwargs: Any) -> Any:
            sent.extend(i if isinstance(i, bytes) else str(i).encode() for i in items)
            return apply(items, *args, **kwargs)

        engine.apply = keep  # type: ignore[method-assign]
        simulate(engine, instances, seed=seed, hours=hours, tick_every_s=tick_every_s)
    return sent
