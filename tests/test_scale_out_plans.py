"""Scale-out planning is on the hot path of every create that waits, so it is written for
speed; these check that it answers exactly as the plain first-fit it replaced."""

from __future__ import annotations

import random

import pytest

from adapters.bootstrap import Engine
from engine import scaling
from engine.domain.pool_config import NodeModel
from engine.policies import autoscaling
from engine.policies.autoscaling import Pending, plan_scale_out
from engine.policies.demand import DIMENSIONS
from tests import builders as b
from tests.helpers import accepted

MODELS = [NodeModel.of({"name": n, "millicores": c, "memory_mib": m, "enis": e, "pods": p,
                        "price_per_hour": str(c / 20000)})
          for n, c, m, e, p in (("2C4G", 2000, 4096, 3, 4), ("4C16G", 4000, 16384, 8, 20),
                                ("16C64G", 16000, 65536, 15, 110))]


def reference_not_on_coming(pending: list[Pending], coming_free: list[dict[str, int]],
                            coming_models: list[str] | None, kind: str) -> list[Pending]:
    """The first fit scale-out used before it was made fast, verbatim."""
    still: list[Pending] = []
    coming = [dict(f) for f in coming_free]
    names = list(coming_models) if coming_models is not None else [None] * len(coming)
    for item in pending:
        k = next((k for k, f in enumerate(coming)
                  if all(item.demand[d] <= f[d] for d in DIMENSIONS)
                  and (names[k] is None or item.allows(names[k]))
                  and (kind != "dedicated" or None in (names[k], item.model)
                       or names[k] == item.model)), None)
        if k is None:
            still.append(item)
        elif kind == "dedicated":
            del coming[k], names[k]
        else:
            for d in DIMENSIONS:
                coming[k][d] -= item.demand[d]
    return still


def random_case(rng: random.Random, kind: str
                ) -> tuple[list[Pending], list[dict[str, int]], list[str] | None]:
    pending = []
    for k in range(rng.randint(1, 60)):
        demand = {"millicores": rng.choice([250, 500, 1100, 2100, 4100]),
                  "memory_mib": rng.choice([512, 1024, 2184, 4096, 9000]),
                  "enis": rng.choice([0, 1]), "pods": 1}
        models = rng.choice([None, frozenset({"16C64G"}), frozenset({"2C4G", "4C16G"})])
        own = rng.choice([m.name for m in MODELS]) if kind == "dedicated" else None
        pending.append(Pending(f"i{k}", demand, own, models))
    coming_models = [rng.choice(MODELS) for _ in range(rng.randint(0, 12))]
    coming = [m.capacity for m in coming_models]
    names = [m.name for m in coming_models] if rng.random() < 0.7 else None
    return pending, coming, names


@pytest.mark.parametrize("kind", ["shared", "dedicated"])
def test_first_fit_on_coming_nodes_answers_as_the_plain_one(kind: str) -> None:
    rng = random.Random(f"coming-{kind}")
    for _ in range(2000):
        pending, coming, names = random_case(rng, kind)
        fast = autoscaling._not_on_coming(pending, coming, names, kind)
        assert fast == reference_not_on_coming(pending, coming, names, kind)


@pytest.mark.parametrize("kind", ["shared", "dedicated"])
def test_plans_do_not_change_their_inputs(kind: str) -> None:
    rng = random.Random(f"inputs-{kind}")
    for _ in range(200):
        pending, coming, names = random_case(rng, kind)
        before = [dict(f) for f in coming]
        plan_scale_out(pending, coming, MODELS, 5, "least-waste", kind, coming_models=names)
        assert coming == before


def test_node_groups_are_worked_out_once_per_config(engine: Engine) -> None:
    accepted(engine, b.price_book(), b.networks(), b.pool(labels={"tier": "gold"}))
    pool = engine.processor.world.pool(b.CELL, "general")
    assert pool is not None
    demand = {"millicores": 1100, "memory_mib": 2184, "enis": 1, "pods": 1}
    first = scaling._groups(pool, demand, {"tier": "gold"})
    assert first and scaling._groups(pool, dict(demand), {"tier": "gold"}) is first
    assert scaling._groups(pool, demand, {"tier": "silver"}) == ()
    assert scaling.groups_for(pool, demand, {}) == list(first)


@pytest.mark.parametrize("kind", ["shared", "dedicated"])
def test_a_resumed_first_fit_answers_as_a_fresh_one(kind: str) -> None:
    # As creates that wait see it: one more pending at a time, the oldest sometimes leaving
    # the window, nodes sometimes asked for; a smaller demand than any before now and then.
    rng = random.Random(f"memo-{kind}")
    memo = autoscaling.FitMemo()
    pending, coming, names = random_case(rng, kind)
    for _ in range(3000):
        step = rng.random()
        if step < 0.7:
            pending = [*pending, *random_case(rng, kind)[0][:1]]
        elif step < 0.85:
            pending = pending[1:] or pending
        else:
            pending, coming, names = random_case(rng, kind)
        fast = autoscaling._not_on_coming(pending, coming, names, kind, memo)
        assert fast == reference_not_on_coming(pending, coming, names, kind)


def test_a_shared_pool_skips_larger_shapes_once_a_smaller_finds_no_room(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    accepted(engine, b.price_book(), b.networks(), b.pool("kata", kind="shared", max_nodes=1))
    accepted(engine, b.create("small", pool="kata", runtime="kata", vcpu="0.5",
                              memory_gib="1"),
             b.create("large", pool="kata", runtime="kata", vcpu="1", memory_gib="2"))
    tried: list[str] = []
    place = scaling.try_place

    def counted(draft: object, pool: object, instance: object, at: object,
                why: bool = True) -> list[dict]:
        tried.append(instance.name)  # type: ignore[attr-defined]
        return place(draft, pool, instance, at, why)  # type: ignore[arg-type]

    monkeypatch.setattr(scaling, "try_place", counted)
    accepted(engine, b.tick(30))  # no node is ready: the small one finds no room
    assert tried == ["small"]
    waiting = engine.processor.world.waiting_in(b.CELL, "kata")
    assert [i.name for i in waiting] == ["small", "large"]
