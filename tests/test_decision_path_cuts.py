"""CPU cuts on the decision path that must not change a decision: reasons not worked out where
they are dropped, smallest_model memoised on the frozen config, node groups kept per config."""

from __future__ import annotations

import pickle
import random
from types import SimpleNamespace

import numpy as np
import pytest

from adapters.bootstrap import Engine
from engine import scaling
from engine.domain.pool_config import NodeModel, PoolConfig
from engine.policies.demand import DIMENSIONS
from engine.policies.node_index import NO_ROOM, NodeIndex
from engine.policies.placement import Placed, Unplaceable
from tests import builders as b
from tests.helpers import accepted
from tests.test_determinism import _domain_events


def _full_index() -> NodeIndex:
    cap = np.array([[4000, 8192, 2, 10], [8000, 16384, 1, 10]], dtype=np.int64)
    return NodeIndex(cap, np.zeros_like(cap), np.ones(2, dtype=bool))


def _no_reasons(*_: object, **__: object) -> Unplaceable:
    raise AssertionError("reasons worked out though the caller drops them")


@pytest.mark.parametrize("policy", ["best_fit", "worst_fit", "first_fit"])
def test_a_place_without_why_answers_the_constant_and_skips_the_reasons(
        policy: str, monkeypatch: pytest.MonkeyPatch) -> None:
    idx = _full_index()
    too_big = [9000, 1, 1, 1]
    assert idx.place(too_big, policy).reasons[0][0] == "millicores"  # type: ignore[union-attr]
    monkeypatch.setattr(NodeIndex, "_unplaceable", _no_reasons)
    assert idx.place(too_big, policy, why=False) is NO_ROOM
    assert NO_ROOM.reasons  # non-empty: try_place's callers read empty reasons as placed
    # Where something fits, why changes nothing.
    assert idx.place([100, 1, 1, 1], policy, why=False) == idx.place([100, 1, 1, 1], policy)
    assert isinstance(idx.place([100, 1, 1, 1], policy, why=False), Placed)


def test_placing_the_waiting_works_out_no_reasons_but_a_create_still_records_them(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    accepted(engine, b.price_book(), b.networks(), b.pool("kata", kind="shared", max_nodes=1))
    accepted(engine, b.create("small", pool="kata", runtime="kata"))
    # The create's own reasons are recorded as before.
    assert "no eligible node" in repr(_domain_events(engine))
    calls: list[object] = []
    real = NodeIndex._unplaceable

    def counted(self: NodeIndex, *args: object, **kwargs: object) -> Unplaceable:
        calls.append(args)
        return real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(NodeIndex, "_unplaceable", counted)
    accepted(engine, b.tick(30))  # place_waiting retries "small": still no room
    assert calls == []
    assert [i.name for i in engine.processor.world.waiting_in(b.CELL, "kata")] == ["small"]


def _config(**extra: object) -> PoolConfig:
    return PoolConfig.of({**b.pool(), **extra})


def test_holds_and_the_memoised_smallest_model_answer_as_the_plain_scan() -> None:
    config = _config()
    rng = random.Random("smallest")
    for _ in range(500):
        demand = {"millicores": rng.randrange(0, 20_000), "memory_mib": rng.randrange(0, 70_000),
                  "enis": rng.randrange(0, 12), "pods": rng.randrange(0, 120)}
        for m in config.node_models:
            assert m.holds(demand) == all(demand[d] <= getattr(m, d) for d in DIMENSIONS)
        plain = min((m for m in config.node_models if m.holds(demand)),
                    key=lambda m: (m.millicores, m.memory_mib), default=None)
        assert config.smallest_model(demand) == plain
        assert config.smallest_model(dict(demand)) == plain  # from the memo


def test_the_memo_stays_out_of_pickles_and_equality() -> None:
    config = _config()
    built = dict(config._smallest)  # what __post_init__ asked (the holdable specs)
    config.smallest_model({"millicores": 1, "memory_mib": 1, "enis": 1, "pods": 1})
    assert len(config._smallest) == len(built) + 1
    scaling._groups(SimpleNamespace(config=config, pool="general"),  # type: ignore[arg-type]
                    {"millicores": 1, "memory_mib": 1, "enis": 1, "pods": 1}, {})
    assert config.derived
    again = pickle.loads(pickle.dumps(config))
    assert again == config and again.same(config)
    assert (again._smallest, again.derived) == (built, {})  # rebuilt, not carried
    assert _config() == config


def test_many_pools_keep_their_node_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    # bench intake's 200 pools: a memo of 64 configs was wiped at every lookup.
    pools = [SimpleNamespace(config=_config(pool=f"p{k}"), pool=f"p{k}") for k in range(200)]
    demand = {"millicores": 600, "memory_mib": 1100, "enis": 1, "pods": 1}
    first = [scaling._groups(p, demand, {}) for p in pools]  # type: ignore[arg-type]
    assert all(g and isinstance(g[0], NodeModel) for g in first)

    def recomputed(*_: object) -> bool:
        raise AssertionError("node groups worked out again")

    monkeypatch.setattr(scaling, "_matches", recomputed)
    assert [scaling._groups(p, dict(demand), {}) for p in pools] == first  # type: ignore[arg-type]
