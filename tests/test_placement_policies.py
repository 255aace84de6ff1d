"""Plain placement policies on hand-built cells, plus never-over-commit properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.policies.placement import POLICIES, Placed, Unplaceable

CAP = np.array([[4000, 8192, 3, 10]] * 3, dtype=np.int64)
ALLOC = np.array([[1000, 2048, 1, 1], [3000, 6144, 1, 2], [0, 0, 0, 0]], dtype=np.int64)
ALL = np.ones(3, dtype=bool)


def _place(policy: str, demand: list[int], eligible: np.ndarray = ALL, alloc=ALLOC):
    return POLICIES[policy](CAP, alloc, eligible, np.asarray(demand, dtype=np.int64))


def test_first_fit_takes_lowest_index() -> None:
    assert _place("first_fit", [500, 512, 1, 1]).node_index == 0
    assert _place("first_fit", [3500, 512, 1, 1]).node_index == 2


def test_best_fit_packs_and_worst_fit_spreads() -> None:
    assert _place("best_fit", [500, 1024, 1, 1]).node_index == 1
    assert _place("worst_fit", [500, 1024, 1, 1]).node_index == 2
    got = _place("best_fit", [1000, 2048, 1, 1])
    assert isinstance(got, Placed) and got.score == pytest.approx((1.0 + 1.0 + 2 / 3 + 0.3) / 4)


def test_dot_product_prefers_aligned_free_capacity() -> None:
    cap = np.array([[10, 10], [10, 10]])
    alloc = np.array([[0, 8], [8, 0]])  # node 0 has CPU free, node 1 memory free
    got = POLICIES["dot_product"](cap, alloc, np.ones(2, bool), np.array([1, 2]), ("c", "m"))
    assert got.node_index == 1


def test_ties_go_to_lowest_index() -> None:
    alloc = np.zeros_like(CAP)
    for name in POLICIES:
        assert _place(name, [1, 1, 1, 1], alloc=alloc).node_index == 0


def test_unplaceable_lists_every_short_dimension() -> None:
    got = _place("best_fit", [5000, 9000, 1, 1])
    assert isinstance(got, Unplaceable)
    assert [r[0] for r in got.reasons] == ["millicores", "memory_mib"]
    assert got.reasons[1][1] == "insufficient: need 9000, largest free 8192"


def test_unplaceable_when_nothing_eligible_or_fragmented() -> None:
    got = _place("first_fit", [1, 1, 1, 1], eligible=np.zeros(3, bool))
    assert isinstance(got, Unplaceable) and got.reasons[0][0] == "nodes"
    cap = np.array([[10, 10], [10, 10]])
    alloc = np.array([[0, 9], [9, 0]])
    got = POLICIES["first_fit"](cap, alloc, np.ones(2, bool), np.array([5, 5]), ("c", "m"))
    assert isinstance(got, Unplaceable) and got.reasons[0][0] == "all"


def test_ineligible_node_is_skipped() -> None:
    elig = np.array([True, False, True])
    assert _place("best_fit", [500, 1024, 1, 1], eligible=elig).node_index == 0


@settings(max_examples=100, deadline=None)
@given(
    policy=st.sampled_from(sorted(POLICIES)),
    n=st.integers(1, 6),
    seed=st.integers(0, 2**32 - 1),
    steps=st.integers(1, 30),
)
def test_policies_never_over_commit(policy: str, n: int, seed: int, steps: int) -> None:
    rng = np.random.default_rng(seed)
    cap = rng.integers(1, 12, size=(n, 3))
    alloc = np.zeros_like(cap)
    eligible = rng.random(n) < 0.8
    for _ in range(steps):
        demand = rng.integers(0, 6, size=3)
        got = POLICIES[policy](cap, alloc, eligible, demand, ("a", "b", "c"))
        if isinstance(got, Placed):
            assert eligible[got.node_index]
            alloc[got.node_index] += demand
            assert (alloc <= cap).all()
        else:
            free = (cap - alloc)[eligible]
            assert not (free >= demand).all(axis=1).any()
