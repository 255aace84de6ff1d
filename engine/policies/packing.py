"""Vector bin packing for whole instances: online rules, an offline greedy portfolio, and a
bin-elimination local search. Pure (no I/O). The search is budgeted in iterations so results do
not depend on machine load; the caller's wall-clock budget is only a safety cap.

Items and capacity are integer vectors; feasibility is checked in integers (exact), while the
scores that rank choices use sizes normalised by the bin capacity so no dimension dominates.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

ONLINE_RULES = ("first_fit", "best_fit", "scarce_fit", "dot_product", "norm2", "worst_fit")
BEST_ONLINE = "scarce_fit"


@dataclass(frozen=True)
class Packing:
    """`assignment[i]` is the bin of item i; bins are numbered 0..bins-1."""

    assignment: tuple[int, ...]
    bins: int
    policy: str

    def bin_items(self) -> list[list[int]]:
        out: list[list[int]] = [[] for _ in range(self.bins)]
        for i, b in enumerate(self.assignment):
            out[b].append(i)
        return out


def lower_bound(items: np.ndarray, capacity: np.ndarray) -> int:
    """max over dimensions of ceil(total size / capacity) (at least 1 if any item)."""
    if len(items) == 0:
        return 0
    return max(1, int((-(-items.sum(axis=0) // capacity)).max()))


def _as_arrays(items: Sequence[Sequence[int]] | np.ndarray, capacity: Sequence[int] | np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    it = np.asarray(items, dtype=np.int64)
    cap = np.asarray(capacity, dtype=np.int64)
    if it.ndim != 2:
        it = it.reshape(len(it), len(cap))
    if cap.ndim != 1 or (cap <= 0).any() or it.shape[1] != cap.shape[0]:
        raise ValueError(f"bad capacity {cap.tolist()} for items of width {it.shape[1]}")
    if (it < 0).any() or (it > cap).any():
        raise ValueError("every item must satisfy 0 <= size <= capacity")
    return it, cap


def _finish(assign: np.ndarray, policy: str) -> Packing:
    # Renumber bins densely in order of first use.
    remap: dict[int, int] = {}
    out = tuple(remap.setdefault(int(b), len(remap)) for b in assign)
    return Packing(out, len(remap), policy)


# ---- item-centric rules (online when order is the file order) ---------------------------------

def _item_centric(
    items: np.ndarray, cap: np.ndarray, order: Sequence[int], rule: str
) -> np.ndarray:
    n, d = items.shape
    w = items / cap
    resid = np.empty((max(n, 1), d), dtype=np.int64)
    nb = 0
    assign = np.full(n, -1, dtype=np.int64)
    seen = np.empty_like(items)  # items placed so far, this one included (scarce_fit learns)
    for t, i in enumerate(order):
        it = items[i]
        seen[t] = it
        r = resid[:nb]
        fits = (r >= it).all(axis=1)
        if not fits.any():
            resid[nb] = cap - it
            assign[i] = nb
            nb += 1
            continue
        if rule == "first_fit":
            b = int(np.argmax(fits))
        else:
            after = (r - it) / cap  # normalised residual if placed
            if rule == "best_fit":
                score = after.sum(axis=1)
            elif rule == "worst_fit":
                score = -after.sum(axis=1)
            elif rule == "norm2":
                score = (after * after).sum(axis=1)
            elif rule == "scarce_fit":
                # The bin that the fewest items seen so far would fit is the least likely to be
                # filled later, so use it now and keep roomier bins for future items; best fit
                # breaks ties.
                cand = np.flatnonzero(fits)
                hits = (seen[None, : t + 1] <= r[cand, None]).all(axis=2).sum(axis=1)
                score = np.full(nb, np.inf)
                top = cand[hits == hits.min()]
                score[top] = after[top].sum(axis=1)
            elif rule == "dot_product":
                score = -((r / cap) @ w[i])
            else:
                raise KeyError(f"unknown rule {rule!r}")
            b = int(np.argmin(np.where(fits, score, np.inf)))
        resid[b] -= it
        assign[i] = b
    return assign


def pack_online(items: Sequence[Sequence[int]] | np.ndarray, capacity: Sequence[int] | np.ndarray,
                rule: str = BEST_ONLINE) -> Packing:
    """Items in given order, each placed immediately into an open bin or a new one."""
    it, cap = _as_arrays(items, capacity)
    if rule not in ONLINE_RULES:
        raise KeyError(f"unknown online rule {rule!r}; known: {ONLINE_RULES}")
    return _finish(_item_centric(it, cap, range(len(it)), rule), rule)


# ---- offline greedy portfolio ------------------------------------------------------------------

def _size_keys(items: np.ndarray, cap: np.ndarray) -> dict[str, np.ndarray]:
    w = items / cap
    avg = w.mean(axis=0)  # dimension weights by total demand (Panigrahy's FFDAvgSum)
    return {
        "sum": w.sum(axis=1),
        "max": w.max(axis=1),
        "l2": (w * w).sum(axis=1),
        "prod": np.prod(w + 1e-3, axis=1),
        "avgsum": w @ avg,
        "expsum": w @ np.exp(0.01 * w.sum(axis=0)),
    }


def _bin_centric(items: np.ndarray, cap: np.ndarray, rule: str, sizes: np.ndarray) -> np.ndarray:
    """Fill one bin at a time with the fitting item that scores best against its residual."""
    n = len(items)
    w = items / cap
    left = np.ones(n, dtype=bool)
    assign = np.full(n, -1, dtype=np.int64)
    b = 0
    while left.any():
        r = cap.copy()
        # Seed each bin with the largest remaining item.
        i = int(np.argmax(np.where(left, sizes, -np.inf)))
        while True:
            left[i] = False
            assign[i] = b
            r -= items[i]
            cand = left & (items <= r).all(axis=1)
            if not cand.any():
                break
            rn = r / cap
            if rule == "dot":
                score = w @ rn
            else:  # "norm": smallest distance between residual and item
                diff = rn - w
                score = -(diff * diff).sum(axis=1)
            i = int(np.argmax(np.where(cand, score, -np.inf)))
        b += 1
    return assign


def greedy_portfolio(items: np.ndarray, cap: np.ndarray, only: str | None = None
                     ) -> list[tuple[str, np.ndarray]]:
    """Every offline greedy (or just the one named `only`) as (name, assignment)."""
    keys = _size_keys(items, cap)
    out: list[tuple[str, np.ndarray]] = []

    def want(name: str) -> bool:
        return only is None or only == name

    for kname, key in keys.items():
        order = np.argsort(-key, kind="stable")
        for prefix, rule in (("ffd", "first_fit"), ("bfd", "best_fit")):
            if want(f"{prefix}_{kname}"):
                out.append((f"{prefix}_{kname}", _item_centric(items, cap, order, rule)))
    for rule in ("dot", "norm"):
        if want(f"bc_{rule}"):
            out.append((f"bc_{rule}", _bin_centric(items, cap, rule, keys["sum"])))
    # The given order too: some generators list items in their optimal groups (Triplet).
    if want("bf_given"):
        out.append(("bf_given", _item_centric(items, cap, range(len(items)), "best_fit")))
    return out


# ---- local search: empty the least-filled bin --------------------------------------------------

def _eliminate(items: np.ndarray, cap: np.ndarray, assign: np.ndarray, target: int,
               max_iters: int, deadline: float, rng: random.Random,
               pinned: np.ndarray | None = None) -> np.ndarray:
    """Repeatedly try to remove one bin: its items go to a pool that is emptied by direct
    insertion and size-reducing swaps (pool item, alone or with a second pool item, in; one
    smaller item out), with tabu-protected forced insertions when stuck. A failed attempt
    restarts from the best packing with another bin to empty. The budget is `max_iters`
    iterations, so results do not depend on machine load; `deadline` is only a safety cap.
    Returns the best assignment found (bin numbers may have gaps).

    `pinned` (bool per item) marks items that never move: their bins are never emptied, and
    a forced insertion only picks a bin whose pinned load leaves room (batch placement: what
    earlier batches placed stays where it is)."""
    n, d = items.shape
    movable = np.ones(n, dtype=bool) if pinned is None else ~pinned
    w = items / cap
    size = w.sum(axis=1) + (w * w).sum(axis=1)  # favours keeping large items out of the pool
    # An eliminated bin gets an unreachable load, so no feasibility test ever picks it.
    closed = np.iinfo(np.int64).max // 4
    nb = int(assign.max()) + 1
    best = assign.copy()
    bins_left = nb
    iters = 0
    per_attempt = 100 + 10 * n  # short attempts: restarts beat wandering
    tabu = np.zeros((n, nb), dtype=np.int64)  # tabu[i, b]: i may not enter b before this iter
    while bins_left > target and iters < max_iters:
        bin_of = best.copy()
        load = np.zeros((nb, d), dtype=np.int64)
        np.add.at(load, bin_of, items)
        load[np.bincount(bin_of, minlength=nb) == 0] = closed
        # Bin to empty: least normalised load, randomised so restarts try other bins.
        fill = (np.minimum(load, cap) / cap).sum(axis=1)
        fill = fill + np.array([rng.random() for _ in range(nb)])
        fill[load[:, 0] >= closed] = np.inf
        if pinned is not None:
            fill[bin_of[pinned]] = np.inf
            if np.isinf(fill).all():
                break
        victim = int(np.argmin(fill))
        pool = np.flatnonzero(bin_of == victim).tolist()
        bin_of[pool] = -1
        load[victim] = closed
        tabu[:] = 0
        stop = min(max_iters, iters + per_attempt)
        # A pool far larger than the emptied bin means the search is wandering: restart.
        max_pool = len(pool) + 6
        while pool and iters < stop and len(pool) <= max_pool:
            iters += 1
            if iters % 64 == 0 and time.perf_counter() > deadline:
                max_iters = iters  # safety cap: end the whole search
                break
            # Largest pool item first; if it can neither go in nor swap in, try the others
            # before resorting to a forced insertion.
            pool.sort(key=lambda j: size[j])
            moved = False
            for k in range(len(pool) - 1, -1, -1):
                i = pool[k]
                fits = (load + items[i] <= cap).all(axis=1)
                if fits.any():
                    slack = ((cap - load - items[i]) / cap).sum(axis=1)
                    b = int(np.argmin(np.where(fits, slack, np.inf)))
                    pool.pop(k)
                    bin_of[i] = b
                    load[b] += items[i]
                    moved = True
                    break
                rest = pool[:k] + pool[k + 1:]
                if _swap_in(items, cap, size, bin_of, load, tabu, i, rest, iters, movable):
                    pool[:] = rest
                    moved = True
                    break
            if moved:
                continue
            i = pool.pop()
            vec = items[i]
            # Stuck: force i into a random bin, evicting random other items until it fits.
            open_bins = np.flatnonzero(load[:, 0] < closed)
            if pinned is not None:
                fixed = np.zeros((nb, d), dtype=np.int64)
                np.add.at(fixed, bin_of[pinned], items[pinned])
                open_bins = open_bins[(fixed[open_bins] + vec <= cap).all(axis=1)]
                if not len(open_bins):  # no bin can ever take it: this attempt failed
                    pool.append(i)
                    break
            b = int(open_bins[rng.randrange(len(open_bins))])
            for _ in range(3):
                if tabu[i, b] < iters:
                    break
                b = int(open_bins[rng.randrange(len(open_bins))])
            mem = np.flatnonzero((bin_of == b) & movable).tolist()
            rng.shuffle(mem)
            bin_of[i] = b
            load[b] += vec
            while (load[b] > cap).any():
                j = mem.pop()
                bin_of[j] = -1
                load[b] -= items[j]
                pool.append(j)
                tabu[j, b] = iters + 10 + rng.randrange(10)
        if not pool:
            best = bin_of.copy()
            bins_left -= 1
    return best


def _swap_in(items: np.ndarray, cap: np.ndarray, size: np.ndarray, bin_of: np.ndarray,
             load: np.ndarray, tabu: np.ndarray, i: int, pool: list[int], it_no: int,
             movable: np.ndarray) -> bool:
    """Put pool item i into a bin in place of one smaller (movable) item (1-1), or together
    with another pool item in place of one item (2-1). Evaluated for all packed items at once."""
    placed = np.flatnonzero((bin_of >= 0) & movable)
    pb = bin_of[placed]
    base = load[pb] - items[placed]  # each bin's load without that member
    psize = size[placed]
    allowed = tabu[i, pb] < it_no  # skip moves undoing a recent eviction
    partners = np.asarray([-1, *pool], dtype=np.int64)
    adds = np.repeat(items[i][None, :], len(partners), axis=0)
    adds[1:] += items[partners[1:]]
    gains = size[i] + np.where(partners >= 0, size[partners], 0.0)
    # ok[p, j]: pool item i (with partner p) can replace packed item j. It must shrink the
    # pool; among such swaps push out the largest item still smaller than what goes in, so
    # bins end fuller and the pool shrinks steadily.
    ok = (adds[:, None, :] <= cap - base[None, :, :]).all(axis=2)
    ok &= allowed[None, :] & (psize[None, :] < gains[:, None] - 1e-12)
    if not ok.any():
        return False
    out = np.where(ok, psize[None, :], -np.inf)
    ks = out.argmax(axis=1)
    shrink = np.where(ok.any(axis=1), gains - out[np.arange(len(partners)), ks], np.inf)
    r = int(np.argmin(shrink))
    j, p = int(placed[ks[r]]), int(partners[r])
    b = int(bin_of[j])
    bin_of[j] = -1
    bin_of[i] = b
    load[b] += items[i] - items[j]
    if p >= 0:
        pool.remove(p)
        bin_of[p] = b
        load[b] += items[p]
    pool.append(j)
    tabu[j, b] = it_no + 7
    return True


def default_iterations(n: int) -> int:
    """Local-search budget for n items: a fixed amount of work (about 0.35 s of CPU on average
    over the Panigrahy instances, up to ~2 s at n = 500), so results do not vary with load."""
    return 1000 + 10 * n


def pack_offline(items: Sequence[Sequence[int]] | np.ndarray, capacity: Sequence[int] | np.ndarray,
                 policy: str | None = None, time_budget: float | None = 30.0,
                 known_lower_bound: int | None = None, seed: int = 0,
                 iterations: int | None = None) -> Packing:
    """Best of the greedy portfolio (or the named greedy `policy`), then, unless a policy is
    named, bin-elimination local search until the lower bound is reached or `iterations`
    (default `default_iterations(n)`) are spent. `time_budget` (seconds, wall clock) is only
    a safety cap; None disables it."""
    it, cap = _as_arrays(items, capacity)
    if len(it) == 0:
        return Packing((), 0, policy or "portfolio")
    start = time.perf_counter()
    lb = max(lower_bound(it, cap), known_lower_bound or 0)
    if policy is not None:
        named = greedy_portfolio(it, cap, only=policy)
        if not named:
            raise KeyError(f"unknown offline policy {policy!r}; known: {OFFLINE_POLICIES}")
        return _finish(named[0][1], policy)
    candidates = greedy_portfolio(it, cap)
    name, assign = min(candidates, key=lambda c: int(c[1].max()))
    bins = int(assign.max()) + 1
    if bins > lb:
        budget = default_iterations(len(it)) if iterations is None else iterations
        deadline = start + time_budget if time_budget is not None else float("inf")
        improved = _eliminate(it, cap, assign, lb, budget, deadline, random.Random(seed))
        if len(np.unique(improved)) < bins:
            assign, name = improved, f"{name}+ls"
    return _finish(assign, name)


OFFLINE_POLICIES: tuple[str, ...] = tuple(
    [f"{p}_{k}" for k in ("sum", "max", "l2", "prod", "avgsum", "expsum") for p in ("ffd", "bfd")]
    + ["bc_dot", "bc_norm", "bf_given"]
)

Packer = Callable[..., Packing]
