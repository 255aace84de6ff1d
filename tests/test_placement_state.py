"""A pool's placement state finds nodes through its index only, node selectors included, and
decides exactly as the plain policy over the nodes whose labels match; it pickles."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest

from engine.placement_state import Choice, NoRoom, PoolPlacement
from engine.policies import placement
from engine.policies.demand import DIMENSIONS
from engine.policies.placement import POLICIES, Placed

MODELS = {"2C4G": (2000, 4096, 3, 10), "4C8G": (4000, 8192, 4, 20), "8C16G": (8000, 16384, 8, 30)}
SPECS = [(250, 512, 1, 1), (500, 1024, 1, 1), (1000, 2048, 1, 1), (2000, 4096, 1, 1)]
SELECTORS = [{}, {"model": "4C8G"}, {"tier": "gold"}, {"tier": "gold", "model": "2C4G"},
             {"pool": "kata"}, {"tier": "silver", "zone": "a"}, {"tier": "bronze"}]


def _pool(kind: str, policy: str, nodes: int, seed: int) -> tuple[PoolPlacement, list]:
    """A pool of random nodes (models x tiers x zones), some cordoned, some partly full."""
    rng = random.Random(seed)
    pool = PoolPlacement(kind, policy)
    held: list[tuple[str, dict[str, int]]] = []
    for k in range(nodes):
        model = rng.choice(sorted(MODELS))
        labels = {"pool": "kata", "model": model, "tier": rng.choice(["gold", "silver"]),
                  "zone": rng.choice(["a", "b"])}
        node_id = f"n{k:03d}"
        pool.add_node(node_id, model, dict(zip(DIMENSIONS, MODELS[model], strict=True)), labels)
        pool.set_takes_work(node_id, rng.random() < 0.8)
        for _ in range(rng.randrange(4) if kind == "shared" else rng.randrange(2)):
            demand = dict(zip(DIMENSIONS, rng.choice(SPECS), strict=True))
            free = pool.free(node_id)
            if all(demand[d] <= free[d] for d in DIMENSIONS):
                pool.allocate(node_id, demand)
                held.append((node_id, demand))
    return pool, held


def _reference(pool: PoolPlacement, demand: dict[str, int], selector: dict[str, str]
               ) -> Choice | NoRoom:
    """The plain scan over every node whose labels match: what the pool decided before the
    index knew label sets."""
    n = len(pool.node_ids)
    capacity = np.array([pool.index.capacity_of(i) for i in range(n)], dtype=np.int64).reshape(
        n, len(DIMENSIONS))
    allocated = np.array([pool.index.allocated_of(i) for i in range(n)], dtype=np.int64
                         ).reshape(n, len(DIMENSIONS))
    mask = np.array([pool.index.is_eligible(i) and all(
        pool.labels[i].get(k) == v for k, v in selector.items()) for i in range(n)], dtype=bool)
    row = np.array([demand[d] for d in DIMENSIONS], dtype=np.int64)
    got = POLICIES[pool.policy](capacity, allocated, mask, row, DIMENSIONS)
    if isinstance(got, Placed):
        node_id = pool.node_ids[got.node_index]
        return Choice(node_id, got.policy, got.score, pool.lowest_free_eni(node_id))
    return NoRoom([{"field": f, "problem": p} for f, p in got.reasons])


@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("seed", range(4))
def test_selectors_decide_as_the_scan_over_matching_nodes(
        policy: str, seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    pool, held = _pool("shared", policy, 60, seed)
    rng = random.Random(seed)
    for step in range(300):
        demand = dict(zip(DIMENSIONS, rng.choice(SPECS), strict=True))
        selector = rng.choice(SELECTORS)
        expected = _reference(pool, demand, selector)
        with monkeypatch.context() as scan:  # the pool must not fall back to a scan
            if policy != "dot_product":  # the one policy the index decides by a masked scan
                for name in POLICIES:
                    scan.setitem(POLICIES, name, _no_scan)
                scan.setattr(placement, "unplaceable_reasons", _no_scan)
            got = pool.choose(demand, selector, "")
        assert got == expected, (step, selector)
        if isinstance(got, Choice):
            pool.allocate(got.node_id, demand, got.eni_index)
            held.append((got.node_id, demand))
        if held and step % 2:
            node_id, old = held.pop(rng.randrange(len(held)))
            pool.release(node_id, old)
        if step % 37 == 0:
            node_id = rng.choice(pool.node_ids)
            pool.set_takes_work(node_id, not pool.takes_work[pool.position[node_id]])


def _no_scan(*args: object, **kwargs: object) -> None:
    raise AssertionError("a node was looked for by a scan, not through the index")


def test_a_selector_matching_no_label_set_finds_nothing_and_says_so() -> None:
    pool, _ = _pool("shared", "best_fit", 10, 1)
    got = pool.choose(dict(zip(DIMENSIONS, SPECS[0], strict=True)), {"tier": "bronze"}, "")
    assert got == NoRoom([{"field": "nodes", "problem": "no eligible node among 10"}])


def test_label_sets_are_index_parts_and_selectors_map_to_them() -> None:
    pool, _ = _pool("shared", "best_fit", 40, 2)
    assert len(pool.label_sets) <= len(MODELS) * 2 * 2  # distinct label sets, not nodes
    for i, labels in enumerate(pool.labels):
        assert pool.label_sets[pool.index.part_of(i)] == tuple(sorted(labels.items()))
    gold = pool.parts({"tier": "gold"})
    assert gold is not None and all(dict(pool.label_sets[p])["tier"] == "gold" for p in gold)
    assert pool.parts({}) is None
    # A new label set is seen by selectors asked before it appeared.
    pool.add_node("new", "2C4G", dict(zip(DIMENSIONS, MODELS["2C4G"], strict=True)),
                  {"pool": "kata", "model": "2C4G", "tier": "bronze", "zone": "a"})
    pool.set_takes_work("new", True)
    assert pool.parts({"tier": "bronze"}) == (len(pool.label_sets) - 1,)
    got = pool.choose(dict(zip(DIMENSIONS, SPECS[0], strict=True)), {"tier": "bronze"}, "")
    assert isinstance(got, Choice) and got.node_id == "new"


def test_dedicated_takes_the_longest_free_matching_node_of_its_model() -> None:
    pool = PoolPlacement("dedicated", "best_fit")
    cap = dict(zip(DIMENSIONS, MODELS["4C8G"], strict=True))
    for k, tier in enumerate(["gold", "silver", "gold", "silver"]):
        pool.add_node(f"n{k}", "4C8G", cap, {"model": "4C8G", "tier": tier})
    for k in (2, 1, 3, 0):  # the order they become ready: the order they are taken in
        pool.set_takes_work(f"n{k}", True)
    demand = dict(zip(DIMENSIONS, SPECS[1], strict=True))
    assert pool.choose(demand, {}, "4C8G").node_id == "n2"
    assert pool.choose(demand, {"tier": "silver"}, "4C8G").node_id == "n1"
    pool.allocate("n1", demand)
    assert pool.choose(demand, {"tier": "silver"}, "4C8G").node_id == "n3"
    pool.release("n1", demand)  # free again: now the most recently freed
    assert pool.choose(demand, {"tier": "silver"}, "4C8G").node_id == "n3"
    assert isinstance(pool.choose(demand, {}, "2C4G"), NoRoom)
    assert pool.choose(demand, {"tier": "bronze"}, "4C8G") == NoRoom([{
        "field": "node", "problem": "no empty ready node of model 4C8G matching the node "
        "selector"}])


@pytest.mark.parametrize("kind", ["shared", "dedicated"])
def test_pickled_state_decides_the_same(kind: str) -> None:
    """The writer's state is snapshotted with pickle: a copy must decide as the original."""
    pool, held = _pool(kind, "best_fit", 50, 3)
    rng = random.Random(3)
    for _ in range(20):  # warm the caches the copy must not depend on
        pool.choose(dict(zip(DIMENSIONS, rng.choice(SPECS), strict=True)),
                    rng.choice(SELECTORS), "4C8G")
    copy = pickle.loads(pickle.dumps(pool))
    for step in range(200):
        demand = dict(zip(DIMENSIONS, rng.choice(SPECS), strict=True))
        selector = rng.choice(SELECTORS)
        got = pool.choose(demand, selector, "4C8G")
        assert copy.choose(demand, selector, "4C8G") == got
        if isinstance(got, Choice):
            for state in (pool, copy):
                state.allocate(got.node_id, demand, got.eni_index)
            held.append((got.node_id, demand))
        if held and step % 3 == 0:
            node_id, old = held.pop(rng.randrange(len(held)))
            for state in (pool, copy):
                state.release(node_id, old)
