"""Property: whatever happens, no node is over-committed and the arrays are what the log says."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.bootstrap import connect
from engine.domain.instance import ON_NODE, Instance
from engine.domain.node import Node
from engine.policies.demand import DIMENSIONS
from engine.world import World
from tests import builders as b

SHARED = [{"name": "4C8G", "millicores": 4000, "memory_mib": 8192, "enis": 4, "pods": 6}]
SPECS = [("0.5", "1"), ("1", "2"), ("2", "4")]

op = st.one_of(
    st.tuples(st.just("create"), st.sampled_from(["general", "kata"]), st.sampled_from(SPECS)),
    st.tuples(st.just("stop"), st.integers(0, 30)),
    st.tuples(st.just("exit"), st.integers(0, 30), st.sampled_from([0, 1])),
    st.tuples(st.just("ready"), st.integers(0, 12)),
    st.tuples(st.just("lost"), st.integers(0, 12)),
    st.tuples(st.just("tick"),),
)


def _check(world: World) -> None:
    for (_, pool), placement in world.placements.items():
        cap, alloc = placement.index.capacity, placement.index.allocated
        assert (alloc <= cap).all() and (alloc >= 0).all()
        expected = np.zeros_like(alloc)
        for a in world.aggregates.values():
            if isinstance(a, Instance) and a.pool == pool and a.state in ON_NODE:
                expected[placement.position[a.node_id]] += [a.demand[d] for d in DIMENSIONS]
        assert (alloc == expected).all()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op, min_size=1, max_size=60))
def test_no_overcommit_and_rebuild_gives_the_same_arrays(ops: list[tuple]) -> None:
    with connect("memory://") as engine:
        engine.apply(b.lines(b.price_book(), b.networks(), b.pool(max_nodes=6), b.pool(
            "kata", kind="shared", node_models=SHARED, max_nodes=3, min_nodes=1)))
        t = 10.0
        created: list[str] = []
        for step in ops:
            t += 7
            world = engine.processor.world
            nodes = sorted((a for a in world.aggregates.values() if isinstance(a, Node)),
                           key=lambda n: (n.pool, n.node_id))
            kind = step[0]
            if kind == "create":
                name = f"i{len(created)}"
                created.append(name)
                runtime = "kata" if step[1] == "kata" else "runc"
                command = b.create(name, t=t, pool=step[1], runtime=runtime,
                                   vcpu=step[2][0], memory_gib=step[2][1])
            elif kind in ("stop", "exit") and created:
                name = created[step[1] % len(created)]
                command = (b.tenant("StopInstance", name, t) if kind == "stop" else
                           b.report("ReportContainerExited", t, instance_id=name,
                                    container="c0", exit_code=step[2]))
            elif kind in ("ready", "lost") and nodes:
                node = nodes[step[1] % len(nodes)]
                command = b.report("ReportNodeReady" if kind == "ready" else "ReportNodeLost",
                                   t, node_id=node.node_id)
            else:
                command = b.tick(t + 600)
                t += 600
            engine.apply(b.lines(command))
            _check(engine.processor.world)
        live = engine.processor.world
        from engine.processor import CommandProcessor  # a second writer, from the log alone
        rebuilt = CommandProcessor(engine.app).world
        assert live.placements.keys() == rebuilt.placements.keys()
        for key, placement in live.placements.items():
            again = rebuilt.placements[key]
            assert placement.node_ids == again.node_ids
            assert (placement.index.capacity == again.index.capacity).all()
            assert (placement.index.allocated == again.index.allocated).all()
            assert (placement.index.eligible == again.index.eligible).all()
