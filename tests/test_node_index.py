"""NodeIndex must decide exactly like the plain numpy policies and never over-commit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.policies.node_index import NodeIndex, OverCommitError
from engine.policies.placement import POLICIES, Placed, Unplaceable

DIMS = ("cpu", "mem", "eni")
# Few capacity shapes (like instance types) plus awkward ones that make float near-ties likely.
SHAPES = [(4, 8, 3), (8, 16, 3), (3, 7, 5), (6, 9, 2)]


def _plain(idx: NodeIndex, demand: list[int], policy: str):
    return POLICIES[policy](idx.capacity.copy(), idx.allocated.copy(), idx.eligible.copy(),
                            np.asarray(demand, dtype=np.int64), DIMS)


def test_basic_first_and_best_fit() -> None:
    cap = np.array([[10, 10, 3], [10, 10, 3], [10, 10, 3]])
    alloc = np.array([[2, 2, 0], [8, 8, 1], [5, 5, 1]])
    idx = NodeIndex(cap, alloc, np.ones(3, bool), DIMS)
    assert idx.place([2, 2, 1], "first_fit").node_index == 0
    assert idx.place([2, 2, 1], "best_fit").node_index == 1
    assert idx.place([2, 2, 1], "worst_fit").node_index == 0
    assert idx.place([3, 3, 1], "best_fit").node_index == 2
    idx.set_eligible(2, False)
    assert idx.place([3, 3, 1], "best_fit").node_index == 0
    out = idx.place([20, 1, 1], "best_fit")
    assert isinstance(out, Unplaceable)
    assert out.reasons[0][0] == "cpu"


def test_allocate_refuses_over_commit() -> None:
    idx = NodeIndex(np.array([[4, 4, 1]]), np.zeros((1, 3), np.int64), np.ones(1, bool), DIMS)
    idx.allocate(0, [4, 1, 1])
    with pytest.raises(OverCommitError):
        idx.allocate(0, [0, 1, 1])
    with pytest.raises(OverCommitError):
        idx.release(0, [5, 0, 0])
    assert idx.allocated.tolist() == [[4, 1, 1]]


def test_add_node_grows_and_is_found() -> None:
    idx = NodeIndex(np.zeros((0, 3), np.int64), np.zeros((0, 3), np.int64),
                    np.zeros(0, bool), DIMS, block=4)
    assert isinstance(idx.place([1, 1, 1], "first_fit"), Unplaceable)
    for _ in range(40):
        idx.add_node([2, 2, 2])
    for i in range(39):
        idx.allocate(i, [2, 2, 2])
    assert idx.place([1, 1, 1], "first_fit").node_index == 39
    assert idx.place([1, 1, 1], "best_fit").node_index == 39


ops = st.lists(
    st.tuples(
        st.sampled_from(["place", "place", "place", "release", "toggle", "add"]),
        st.integers(0, 10_000),
        st.tuples(st.integers(0, 4), st.integers(0, 9), st.integers(0, 2)),
    ),
    min_size=1, max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(
    shapes=st.lists(st.sampled_from(SHAPES), min_size=0, max_size=20),
    policy=st.sampled_from(["first_fit", "best_fit", "worst_fit"]),
    block=st.sampled_from([1, 3, 64]),
    seq=ops,
)
def test_index_matches_plain_policy(shapes, policy, block, seq) -> None:
    n = len(shapes)
    cap = np.array(shapes, dtype=np.int64).reshape(n, 3)
    idx = NodeIndex(cap, np.zeros_like(cap), np.ones(n, bool), DIMS, block=block)
    live: list[tuple[int, list[int]]] = []
    for op, r, dem in seq:
        demand = list(dem)
        if op == "place":
            got = idx.place(demand, policy)
            assert got == _plain(idx, demand, policy)
            if isinstance(got, Placed):
                idx.allocate(got.node_index, demand)
                live.append((got.node_index, demand))
        elif op == "release" and live:
            node, d = live.pop(r % len(live))
            idx.release(node, d)
        elif op == "toggle" and len(idx):
            i = r % len(idx)
            idx.set_eligible(i, not bool(idx.eligible[i]))
        elif op == "add":
            idx.add_node(SHAPES[r % len(SHAPES)])
        assert (idx.allocated <= idx.capacity).all() and (idx.allocated >= 0).all()


@settings(max_examples=100, deadline=None)
@given(
    shapes=st.lists(st.sampled_from(SHAPES), min_size=1, max_size=8),
    seq=st.lists(st.tuples(st.integers(0, 7), st.integers(0, 5), st.integers(0, 9),
                           st.integers(0, 3)), max_size=40),
)
def test_allocate_never_over_commits(shapes, seq) -> None:
    n = len(shapes)
    cap = np.array(shapes, dtype=np.int64)
    idx = NodeIndex(cap, np.zeros_like(cap), np.ones(n, bool), DIMS)
    for i, a, b, c in seq:
        i %= n
        before = idx.allocated.copy()
        try:
            idx.allocate(i, [a, b, c])
        except OverCommitError:
            assert (idx.allocated == before).all()
        assert (idx.allocated <= idx.capacity).all()
