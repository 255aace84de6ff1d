"""NodeIndex must decide exactly like the plain numpy policies and never over-commit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.policies.node_index import _ID_MASK, NodeIndex, OverCommitError, _Bag, _Blocks
from engine.policies.placement import POLICIES, Placed, Unplaceable

DIMS = ("cpu", "mem", "eni")
# Few capacity shapes (like instance types) plus awkward ones that make float near-ties likely.
SHAPES = [(4, 8, 3), (8, 16, 3), (3, 7, 5), (6, 9, 2)]
# Capacities whose scores are not exact (prod * d >= 2**53: best/worst defer to the scan) and
# values near the int64 limit (the packed fields must not carry into each other).
BIG_SHAPES = [(2**62, 2**40 + 7, 3), (2**62 + 12345, 2**40 + 7, 2), (5, 2**61, 1)]
POLICY_NAMES = ["first_fit", "best_fit", "worst_fit"]  # the ones that remember misses
ALL_POLICIES = [*POLICY_NAMES, "dot_product"]


def _plain(idx: NodeIndex, demand: list[int], policy: str, parts: tuple[int, ...] | None = None):
    """The reference: the numpy scan over the eligible nodes of `parts`."""
    eligible = idx.eligible.copy()
    if parts is not None:
        eligible &= np.isin([idx.part_of(i) for i in range(len(idx))], list(parts))
    return POLICIES[policy](idx.capacity.copy(), idx.allocated.copy(), eligible,
                            np.asarray(demand, dtype=np.int64), DIMS)


def _parts(r: int) -> tuple[int, ...] | None:
    """A query's parts drawn from r: all of them (None) a quarter of the time, else a subset
    of parts 0-2 (possibly empty: nothing eligible)."""
    return None if r % 4 == 0 else tuple(p for p in range(3) if (r >> 2) >> p & 1)


def _check_list(idx: NodeIndex, lst: _Blocks, has: int) -> list[int]:
    """Structural invariants of one sorted blocked list; returns its nodes."""
    guard = idx._guard
    entries = list(lst)
    assert entries == sorted(entries) and len(set(entries)) == len(entries)
    assert len(lst.blocks) == len(lst.lasts) == len(lst.bounds) == len(lst.misses)
    for blk, last, bound, misses in zip(lst.blocks, lst.lasts, lst.bounds, lst.misses,
                                        strict=True):
        assert blk and last == blk[-1]
        for e in blk:
            free = idx._free[e & _ID_MASK]
            assert (bound + guard - free) & guard == guard  # bound >= free, every dimension
            assert idx._has[e & _ID_MASK] == has
            for gx in misses or ():
                assert (free + gx) & guard != guard  # a remembered miss really misses
    return [e & _ID_MASK for e in entries]


def _check_invariants(idx: NodeIndex) -> None:
    n = len(idx)
    eligible = sorted(i for i in range(n) if idx.eligible[i])
    free = idx.capacity - idx.allocated
    assert [idx._unpack(f) for f in idx._free] == free.tolist()
    if idx._keyed:
        nodes: list[int] = []
        for gid, g in enumerate(idx._groups):
            for has, lst in g.lists.items():
                assert idx._active[has]
                for e in lst:
                    i = e & _ID_MASK
                    assert idx._gid[i] == gid and e >> 24 == g.key(free[i].tolist())
                    assert idx.part_of(i) == g.part
                nodes += _check_list(idx, lst, has)
            for has, bag in g.bags.items():
                assert all(idx._gid[i] == gid for i in bag)
                nodes += _check_bag(idx, bag, has)
        assert sorted(nodes) == eligible
    if idx._by_index is not None:
        nodes = []
        for (part, has), lst in idx._by_index.items():
            assert all(idx.part_of(e) == part for e in lst)
            nodes += _check_list(idx, lst, has)
        for (part, has), bag in idx._by_index_bags.items():
            assert all(idx.part_of(i) == part for i in bag)
            nodes += _check_bag(idx, bag, has)
        assert sorted(nodes) == eligible
    for has, active in idx._active.items():  # sorted exactly when a demand asked can use it
        assert active == any(has & needs == needs for needs in idx._needs_seen)


def _check_bag(idx: NodeIndex, bag: _Bag, has: int) -> list[int]:
    """Invariants of an unordered bag (a `has` no demand asked so far can use)."""
    guard = idx._guard
    assert not idx._active[has]
    assert sorted(bag.pos.items()) == sorted((i, k) for k, i in enumerate(bag.entries))
    assert len(bag.bounds) == -(-len(bag.entries) // 64)
    for k, i in enumerate(bag.entries):
        assert idx._has[i] == has
        assert (bag.bounds[k // 64] + guard - idx._free[i]) & guard == guard
    return list(bag.entries)


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
    _check_invariants(idx)


@pytest.mark.parametrize("policy", POLICY_NAMES)
@pytest.mark.parametrize("grow", ["release", "add_node", "toggle"])
def test_remembered_miss_is_forgotten_when_room_appears(policy: str, grow: str) -> None:
    """One node has the CPU, the other the memory: the block's per-dimension bound admits
    (5, 5, 1) but nothing fits, and the block remembers that. Room appearing in that block
    must make the demand placeable again."""
    cap = np.array([[10, 10, 3], [10, 10, 3], [10, 10, 3]])
    alloc = np.array([[2, 9, 1], [9, 2, 1], [6, 6, 1]])  # keys >= the demand's: full scans
    eligible = np.array([True, True, grow != "toggle"])
    idx = NodeIndex(cap, alloc, eligible, DIMS)
    demand = [5, 5, 1]
    for _ in range(2):
        assert isinstance(idx.place(demand, policy), Unplaceable)
    assert any(m for lst in _lists(idx) for m in lst.misses)
    if grow == "release":
        idx.release(0, [0, 5, 0])
        expected = 0
    elif grow == "add_node":
        expected = idx.add_node([10, 10, 3], [4, 4, 0])
    else:
        idx.release(2, [4, 4, 0])  # ineligible: must not count until it is eligible
        assert isinstance(idx.place(demand, policy), Unplaceable)
        idx.set_eligible(2, True)
        expected = 2
    got = idx.place(demand, policy)
    assert got == _plain(idx, demand, policy)
    assert isinstance(got, Placed) and got.node_index == expected
    _check_invariants(idx)


def _lists(idx: NodeIndex) -> list[_Blocks]:
    lists = [lst for g in idx._groups for lst in g.lists.values()]
    return lists + list((idx._by_index or {}).values())


def test_numpy_and_list_demands_agree() -> None:
    cap = np.array([[10, 10, 3], [10, 10, 3], [4, 8, 3]])
    idx = NodeIndex(cap, np.array([[2, 2, 0], [8, 8, 1], [1, 1, 1]]), np.ones(3, bool), DIMS)
    for policy in ALL_POLICIES:
        assert idx.place(np.array([2, 2, 1]), policy) == idx.place([2, 2, 1], policy)
        assert idx.place(np.array([2, 2, 1]), policy) == _plain(idx, [2, 2, 1], policy)
    idx.allocate(1, np.array([2, 2, 1], dtype=np.int64))
    assert idx.allocated.tolist() == [[2, 2, 0], [10, 10, 2], [1, 1, 1]]
    with pytest.raises(ValueError):
        idx.place([1, -1, 0], "best_fit")
    with pytest.raises(ValueError):
        idx.place([1, 1], "best_fit")
    with pytest.raises(KeyError):
        idx.place([1, 1, 1], "no_such_policy")


op = st.tuples(
    st.sampled_from(["place", "place", "place", "release", "toggle", "add"]),
    st.integers(0, 10_000),
    st.tuples(st.integers(0, 4), st.integers(0, 9), st.integers(0, 2)),
)
ops = st.lists(op, min_size=1, max_size=60)


@settings(max_examples=150, deadline=None)
@given(
    shapes=st.lists(st.sampled_from(SHAPES), min_size=0, max_size=20),
    policy=st.sampled_from(ALL_POLICIES),
    block=st.sampled_from([1, 2, 4, 64]),
    seq=ops,
)
def test_index_matches_plain_policy(shapes, policy, block, seq) -> None:
    _run_against_plain(shapes, [policy], block, seq, SHAPES)


@settings(max_examples=150, deadline=None)
@given(
    shapes=st.lists(st.sampled_from(SHAPES), min_size=0, max_size=40),
    block=st.sampled_from([1, 2, 4, 64]),
    seq=st.lists(op, min_size=1, max_size=150),
    policies=st.lists(st.sampled_from(ALL_POLICIES), min_size=1, max_size=3),
)
def test_index_matches_plain_policy_mixed_and_checked(shapes, block, seq, policies) -> None:
    """Policies interleaved on one index (each family of lists is built lazily, then kept up
    to date by every update), small blocks (splits, merges), invariants after every step."""
    _run_against_plain(shapes, policies, block, seq, SHAPES, check=True)


@settings(max_examples=60, deadline=None)
@given(
    shapes=st.lists(st.sampled_from(SHAPES + BIG_SHAPES), min_size=0, max_size=12),
    block=st.sampled_from([1, 4]),
    seq=st.lists(st.tuples(
        st.sampled_from(["place", "place", "big", "release", "toggle", "add"]),
        st.integers(0, 10_000),
        st.tuples(st.integers(0, 4), st.integers(0, 9), st.integers(0, 2)),
    ), min_size=1, max_size=60),
    policies=st.lists(st.sampled_from(ALL_POLICIES), min_size=1, max_size=3),
)
def test_index_matches_plain_policy_big_values(shapes, block, seq, policies) -> None:
    _run_against_plain(shapes, policies, block, seq, SHAPES + BIG_SHAPES, check=True)


def _run_against_plain(shapes, policies, block, seq, add_shapes, check: bool = False) -> None:
    """Random operations; nodes fall into parts 0-2 (label sets) and each query is limited to
    some parts, as a node selector limits it."""
    n = len(shapes)
    cap = np.array(shapes, dtype=np.int64).reshape(n, 3)
    idx = NodeIndex(cap, np.zeros_like(cap), np.ones(n, bool), DIMS, block=block,
                    parts=[k % 3 for k in range(n)])
    live: list[tuple[int, list[int]]] = []
    for step, (op, r, dem) in enumerate(seq):
        demand = list(dem)
        policy = policies[step % len(policies)]
        if op == "big":  # a demand in the range of the big shapes
            op, demand = "place", [2**39 + r, 2**20 * (r % 5), r % 3]
        if op == "place":
            parts = _parts(r)
            got = idx.place(demand, policy, parts)
            assert got == _plain(idx, demand, policy, parts)
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
            idx.add_node(add_shapes[r % len(add_shapes)], part=r % 3)
        assert (idx.allocated <= idx.capacity).all() and (idx.allocated >= 0).all()
        if check:
            _check_invariants(idx)


@pytest.mark.parametrize("policy", ALL_POLICIES)
def test_long_run_on_bench_shapes(policy: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Steady state on realistic shapes, long enough for blocks to split, merge and remember
    misses: every decision equals the plain scan's."""
    from simulations.bench_placement import _random_fill, make_demands, make_pool

    missed = 0
    real_missed = _Blocks._missed

    def counting_missed(self: _Blocks, b: int, gx: int) -> None:
        nonlocal missed
        missed += 1
        real_missed(self, b, gx)

    monkeypatch.setattr(_Blocks, "_missed", counting_missed)
    dims = ("millicores", "memory_mib", "enis", "pods")
    rng = np.random.default_rng(7)
    cap = make_pool(300, rng)
    start, live = _random_fill(cap, 0.7, rng)  # fragmented: misses happen
    idx = NodeIndex(cap, start, np.ones(300, bool), dims, block=4,
                    parts=[k % 3 for k in range(300)])
    for k, dem in enumerate(make_demands(3000, rng).tolist()):
        parts = _parts(k)
        got = idx.place(dem, policy, parts)
        allowed = [0, 1, 2] if parts is None else list(parts)
        eligible = idx.eligible & np.isin(np.arange(300) % 3, allowed)
        plain = POLICIES[policy](idx.capacity, idx.allocated, eligible,
                                 np.asarray(dem, dtype=np.int64), dims)
        assert got == plain
        if isinstance(got, Placed):
            idx.allocate(got.node_index, dem)
            live.append((got.node_index, dem))
        if k % 3 == 2 and live:  # keep the pool filling up, but churn
            node, old = live.pop(int(rng.integers(len(live))))
            idx.release(node, old)
        if k % 97 == 0:
            idx.set_eligible(k % 300, not bool(idx.eligible[k % 300]))
        if k % 50 == 0:
            _check_invariants(idx)
    _check_invariants(idx)
    assert missed or policy == "dot_product"  # the remembered-miss path was exercised


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
    idx.place([1, 1, 1], "best_fit")  # build the sorted lists too
    idx.place([1, 1, 1], "first_fit")
    for i, a, b, c in seq:
        i %= n
        before = idx.allocated.copy()
        try:
            idx.allocate(i, [a, b, c])
        except OverCommitError:
            assert (idx.allocated == before).all()
        assert (idx.allocated <= idx.capacity).all()
        try:
            idx.release(i, [c, a, b])
        except OverCommitError:
            pass
        assert (idx.allocated >= 0).all()
    _check_invariants(idx)


def test_fits_is_empty_and_fill() -> None:
    index = NodeIndex(np.array([[10, 4], [10, 4]]), np.array([[5, 1], [0, 0]]),
                      np.array([True, False]), dimensions=["cpu", "mem"])
    assert index.fits(0, [5, 3]) and not index.fits(0, [6, 1])
    assert index.fits(1, [10, 4])  # eligibility is not room
    assert not index.is_empty(0) and index.is_empty(1)
    assert index.fill(0) == 0.5 + 0.25 and index.fill(1) == 0.0
    index.allocate(1, [1, 0])
    assert not index.is_empty(1)
    index.release(1, [1, 0])
    assert index.is_empty(1)


def test_nodes_no_demand_can_use_wait_in_bags_until_one_can() -> None:
    """Nodes out of a dimension every demand so far needs sit in an unordered bag (O(1)
    updates); reasons for a failed placement still count them; a demand that can use them
    has them sorted into a list first."""
    cap = np.array([[10, 10, 3]] * 4)
    alloc = np.array([[2, 2, 3], [9, 1, 3], [5, 5, 0], [1, 8, 3]])  # nodes 0, 1, 3: no ENI left
    idx = NodeIndex(cap, alloc, np.ones(4, bool), DIMS)
    assert idx.place([1, 1, 1], "best_fit").node_index == 2
    g = idx._groups[0]
    assert sorted(i for bag in g.bags.values() for i in bag) == [0, 1, 3]
    idx.allocate(2, [5, 5, 1])
    got = idx.place([1, 1, 1], "best_fit")
    assert got == _plain(idx, [1, 1, 1], "best_fit")
    assert got == Unplaceable((("all", "fragmented: every dimension fits on some node but "
                                       "none fits all"),))  # the cpu is in the bag
    idx.allocate(2, [0, 0, 2])
    got = idx.place([10, 1, 1], "best_fit")
    assert got == _plain(idx, [10, 1, 1], "best_fit")
    assert got == Unplaceable((("cpu", "insufficient: need 10, largest free 9"),
                               ("eni", "insufficient: need 1, largest free 0")))
    _check_invariants(idx)
    # A demand needing no ENI can use the nodes out of ENIs: their bag becomes a sorted list
    # (node 2, out of everything, stays in its bag).
    got = idx.place([8, 1, 0], "best_fit")
    assert got == _plain(idx, [8, 1, 0], "best_fit") and got.node_index in (0, 3)
    assert sorted(i for bag in g.bags.values() for i in bag) == [2]
    _check_invariants(idx)


def test_per_node_values_stay_shared_and_demand_keys_complete() -> None:
    """What keeps a large pool's updates in cache: nodes with the same `has` and the same
    capacity row share one int object, the stale-row flags grow with the pool, and a demand
    asked before a new capacity row appears already knows its key in that row's group."""
    idx = NodeIndex(np.zeros((0, 3), np.int64), np.zeros((0, 3), np.int64),
                    np.zeros(0, bool), DIMS)
    for _ in range(20):  # past the initial 16 rows: the arrays and the flags grow
        idx.add_node([4, 8, 3])
    idx.place([1, 1, 1], "best_fit")
    for i in range(20):
        idx.allocate(i, [1, 2, 1])
    assert len({id(idx._has[i]) for i in range(20)}) == 1
    assert len({id(idx._cap_p[i]) for i in range(20)}) == 1
    dem = idx._dems[(1, 1, 1)]
    j = idx.add_node([6, 9, 2])
    assert dem.keys == [g.key([1, 1, 1]) for g in idx._groups]
    idx.allocate(j, [1, 1, 1])
    idx.allocate(19, [3, 6, 2])  # node 19 is full: it leaves the sorted list
    assert idx._has[19] is not idx._has[0]
    assert idx.allocated.tolist() == [[1, 2, 1]] * 19 + [[4, 8, 3], [1, 1, 1]]
    assert idx.place([1, 1, 1], "best_fit") == _plain(idx, [1, 1, 1], "best_fit")
    _check_invariants(idx)


def test_best_fit_compares_lists_of_one_group_by_score_then_index() -> None:
    """A demand that needs no ENI walks two lists of one capacity group (nodes with ENIs
    left, nodes without): the smaller key wins wherever it sits, an equal key goes to the
    lower node index, whichever list was walked first."""
    cap = np.array([[10, 10, 3]] * 3)
    alloc = np.array([[2, 2, 3], [7, 7, 0], [5, 5, 3]])  # free 8,8,0 / 3,3,3 / 5,5,0
    idx = NodeIndex(cap, alloc, np.ones(3, bool), DIMS)
    assert idx.place([1, 1, 1], "best_fit").node_index == 1  # the only node with an ENI
    g = idx._groups[0]
    got = idx.place([3, 3, 0], "best_fit")  # now two lists: node 2's key is the smallest
    assert len(g.lists) == 2 and got == _plain(idx, [3, 3, 0], "best_fit")
    assert got.node_index == 2
    idx.allocate(2, [3, 3, 0])  # node 2 has 2,2,0 left: nodes 0 and 1 tie on key 48
    got = idx.place([3, 3, 0], "best_fit")
    assert got == _plain(idx, [3, 3, 0], "best_fit") and got.node_index == 0
    _check_invariants(idx)
