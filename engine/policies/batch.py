"""Batch placement: the creates of one poll batch placed together, as a reorder window.

Pure apart from tentative updates of the `NodeIndex` it is given, which it always undoes: the
index reads the same before and after a call. A window's decisions depend only on the index's
state and the window's demands (no clock, no randomness beyond a fixed seed, budgets in
iterations), so the same batch on the same state gives the same nodes, also after a restart.

The policy, for up to K demands:
1. Best-fit-decreasing under each size key of `SIZE_KEYS` (ties keep the given order): place
   every demand with the index's best_fit, largest first. The first key that places all
   demands without opening an empty node wins at once (the usual case on a busy pool: the
   cost is then one best-fit pass). Otherwise the key with the fewest unplaced demands, then
   fewest empty nodes opened, then the fullest nodes (sum of squared fill) wins.
2. If it opened empty nodes, a bin-elimination local search (`packing._eliminate`) tries to
   close them, moving only this window's demands (what earlier windows placed is pinned).
   It runs only when the candidate nodes (non-empty eligible nodes plus those opened) share one
   capacity row and number at most `SEARCH_MAX_NODES`: its cost grows with the node count.
3. If empty nodes are still opened, consolidation: each of the window's demands, largest
   first, moves to its best-fit node when that ends fuller than the node it leaves (free room
   gathered on fewer nodes fits later windows better).
Steps 2 and 3 run only when a window opens an empty node, so a busy pool pays one best-fit
pass plus the undo; the rest is for pools that scale out (and for `cis pack --window`).

K = 1 is exactly one-by-one best fit (a single demand has one order and nothing to close).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engine.policies.node_index import NodeIndex
from engine.policies.packing import Packing, _as_arrays, _eliminate, _finish
from engine.policies.placement import Placed

SIZE_KEYS = ("sum", "max", "l2", "avgsum")
SEARCH_MAX_NODES = 1024  # the search keeps a (items x nodes) tabu table: bounded
SEARCH_ITERATIONS_PER_DEMAND = 40  # plus SEARCH_BASE_ITERATIONS per window
SEARCH_BASE_ITERATIONS = 3000
SEED = 0


@dataclass(frozen=True)
class WindowPlan:
    """`nodes[j]` is the node index for demand j (None: no node holds it); `key` the order that
    won (`bfd_<size key>`, `+ls` if the search closed nodes, `+c` if consolidation moved
    some); `opened` the empty nodes it uses."""

    nodes: tuple[int | None, ...]
    key: str
    opened: int


def _keys(demands: np.ndarray, scale: np.ndarray) -> dict[str, np.ndarray]:
    w = demands / scale
    avg = w.mean(axis=0)
    return {"sum": w.sum(axis=1), "max": w.max(axis=1), "l2": (w * w).sum(axis=1),
            "avgsum": w @ avg}


def _greedy(index: NodeIndex, demands: list[list[int]], order: Sequence[int],
            rule: str = "best_fit") -> tuple[list[int | None], int, float]:
    """Best fit in `order`, undone before returning: (nodes, empty nodes opened, fill gain).
    The gain (sum of squared fill added) is only worked out when something went unplaced or
    an empty node was opened: otherwise no caller compares it."""
    nodes: list[int | None] = [None] * len(demands)
    opened = 0
    touched: dict[int, None] = {}
    done: list[tuple[int, list[int]]] = []
    gain = 0.0
    try:
        for j in order:
            got = index.place(demands[j], rule)
            if not isinstance(got, Placed):
                continue
            i = got.node_index
            if i not in touched:
                touched[i] = None
                opened += index.is_empty(i)
            index.allocate(i, demands[j])
            done.append((i, demands[j]))
            nodes[j] = i
        if opened or len(done) < len(demands):
            after = {i: index.fill(i) for i in touched}
            added = dict.fromkeys(touched, 0.0)
            for i, dem in done:
                added[i] += sum(x / c for x, c in zip(dem, index.capacity_of(i), strict=True))
            gain = sum(a * a - (a - added[i]) ** 2 for i, a in after.items())
    finally:
        for i, dem in reversed(done):
            index.release(i, dem)
    return nodes, opened, gain


def plan_window(index: NodeIndex, demands: Sequence[Sequence[int]], search: bool = True
                ) -> WindowPlan:
    """The node of each demand, placed together (see module doc)."""
    dems = [[int(x) for x in d] for d in demands]
    if not dems:
        return WindowPlan((), "bfd_sum", 0)
    if len(dems) == 1:  # one order, nothing to close: exactly one-by-one best fit
        nodes, opened, _ = _greedy(index, dems, [0])
        return WindowPlan(tuple(nodes), "bfd_sum", opened)
    arr = np.asarray(dems, dtype=np.int64)
    # Normalise by the largest node so no unit dominates the size keys.
    scale = np.asarray(index.largest_capacity() or [1] * arr.shape[1], dtype=np.int64)
    best: tuple[tuple[int, int, float], str, list[int | None], int] | None = None
    candidates = [(f"bfd_{name}", "best_fit", np.argsort(-key, kind="stable").tolist())
                  for name, key in _keys(arr, scale).items()]
    for name, rule, order in candidates:
        nodes, opened, gain = _greedy(index, dems, order, rule)
        unplaced = nodes.count(None)
        score = (unplaced, opened, -gain)
        if best is None or score < best[0]:
            best = (score, name, nodes, opened)
        if unplaced == 0 and opened == 0:
            break  # nothing to gain: every demand went to a node already in use
    assert best is not None
    _, name, nodes, opened = best
    if search and opened:
        better = _close_opened(index, arr, nodes)
        if better is not None:
            nodes, name = better, f"{name}+ls"
            opened = sum(index.is_empty(i) for i in {n for n in nodes if n is not None})
    if search and opened:
        moved = _consolidate(index, dems, nodes, arr, scale)
        if moved is not None:
            nodes, name = moved, f"{name}+c"
            opened = sum(index.is_empty(i) for i in {n for n in nodes if n is not None})
    return WindowPlan(tuple(nodes), name, opened)


def _consolidate(index: NodeIndex, dems: list[list[int]], nodes: list[int | None],
                 arr: np.ndarray, scale: np.ndarray) -> list[int | None] | None:
    """Move this window's demands, largest first, to the best-fit node whenever that node
    ends fuller than the one left (never to an empty node): the same nodes hold the same
    demands with the free room gathered on fewer nodes, where later demands fit better."""
    out = list(nodes)
    placed = [(j, n) for j, n in enumerate(nodes) if n is not None]
    for j, n in placed:
        index.allocate(n, dems[j])
    changed = False
    try:
        order = np.argsort(-(arr / scale).sum(axis=1), kind="stable").tolist()
        for j in order:
            n = out[j]
            if n is None:
                continue
            before = index.fill(n)
            index.release(n, dems[j])
            got = index.place(dems[j], "best_fit")
            to = n
            if isinstance(got, Placed) and got.node_index != n and not index.is_empty(
                    got.node_index):
                m = got.node_index
                index.allocate(m, dems[j])
                if index.fill(m) > before:
                    to = m
                index.release(m, dems[j])
            index.allocate(to, dems[j])
            if to != n:
                out[j] = to
                changed = True
    finally:
        for j, n in enumerate(out):
            if n is not None:
                index.release(n, dems[j])
    return out if changed else None


def _close_opened(index: NodeIndex, demands: np.ndarray, nodes: list[int | None]
                  ) -> list[int | None] | None:
    """Bin elimination over the non-empty eligible nodes and the ones this plan opens, moving
    only this window's demands; None when not applicable or no node could be closed."""
    eligible = index.eligible
    alloc = index.allocated
    cap_all = index.capacity
    used = {n for n in nodes if n is not None}
    busy = np.flatnonzero(eligible & alloc.any(axis=1)).tolist()
    opened = sorted(n for n in used if index.is_empty(n))
    bins = busy + opened
    if len(bins) > SEARCH_MAX_NODES:
        return None
    caps = cap_all[bins]
    if not (caps == caps[0]).all():
        return None
    cap = caps[0]
    slot = {n: b for b, n in enumerate(bins)}
    placed = [j for j, n in enumerate(nodes) if n is not None]
    items = np.vstack([alloc[busy], demands[placed]]) if busy else demands[placed]
    assign = np.asarray([*range(len(busy)), *(slot[nodes[j]] for j in placed)],  # type: ignore[index]
                        dtype=np.int64)
    pinned = np.zeros(len(items), dtype=bool)
    pinned[: len(busy)] = True
    lower = max(len(busy), int((-(-items.sum(axis=0) // cap)).max()))
    if len(bins) <= lower:
        return None
    budget = SEARCH_BASE_ITERATIONS + SEARCH_ITERATIONS_PER_DEMAND * len(placed)
    out = _eliminate(items, cap, assign, lower, budget, float("inf"), random.Random(SEED),
                     pinned)
    new = out[len(busy):]
    if len(set(new.tolist()) - set(range(len(busy)))) >= len(opened):
        return None
    result = list(nodes)
    # Bins the search kept open map back to the opened nodes in order (lowest index first).
    remap: dict[int, int] = {}
    spare = iter(opened)
    for j, b in zip(placed, new.tolist(), strict=True):
        if b < len(busy):
            result[j] = bins[b]
        else:
            if b not in remap:
                remap[b] = next(spare)
            result[j] = remap[b]
    return result


def pack_windows(items: Sequence[Sequence[int]] | np.ndarray, capacity: Sequence[int],
                 window: int, search: bool = True) -> Packing:
    """Online packing in windows of `window` items (file order): the engine's batch policy on
    identical bins, a new bin opening whenever no open one holds an item. window=1 is
    one-by-one best fit."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    it, cap = _as_arrays(items, capacity)
    d = len(cap)
    index = NodeIndex(np.zeros((0, d), dtype=np.int64), np.zeros((0, d), dtype=np.int64),
                      np.zeros(0, dtype=bool), dimensions=[f"d{k}" for k in range(d)])
    empty = 0
    assign = np.full(len(it), -1, dtype=np.int64)
    rows = it.tolist()
    for lo in range(0, len(rows), window):
        win = rows[lo : lo + window]
        while empty < len(win):  # enough empty bins for every item of the window
            index.add_node(cap.tolist())
            empty += 1
        plan = plan_window(index, win, search)
        for j, node in enumerate(plan.nodes):
            assert node is not None  # an empty bin holds any item
            empty -= index.is_empty(node)
            index.allocate(node, win[j])
            assign[lo + j] = node
    name = "best_fit" if window == 1 else f"window{window}"
    return _finish(assign, name)
