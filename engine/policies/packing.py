"""Vector bin packing for whole instances: online rules, an offline greedy portfolio, and a
bin-elimination local search. Pure (no I/O); the only clock is the caller-given time budget.

Items and capacity are integer vectors; feasibility is checked in integers (exact), while the
scores that rank choices use sizes normalised by the bin capacity so no dimension dominates.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

ONLINE_RULES = ("first_fit", "best_fit", "dot_product", "norm2", "worst_fit")
BEST_ONLINE = "best_fit"


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
    for i in order:
        it = items[i]
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

class _State:
    """Mutable packing: loads per bin, item -> bin, members per bin."""

    def __init__(self, items: np.ndarray, cap: np.ndarray, assign: np.ndarray) -> None:
        self.items = items
        self.cap = cap
        nb = int(assign.max()) + 1
        self.members: list[list[int]] = [[] for _ in range(nb)]
        for i, b in enumerate(assign.tolist()):
            self.members[b].append(i)
        self.load = np.zeros((nb, items.shape[1]), dtype=np.int64)
        np.add.at(self.load, assign, items)

    def assignment(self) -> np.ndarray:
        out = np.empty(len(self.items), dtype=np.int64)
        for b, mem in enumerate(self.members):
            out[mem] = b
        return out


def _eliminate(items: np.ndarray, cap: np.ndarray, assign: np.ndarray, target: int,
               deadline: float, rng: random.Random) -> np.ndarray:
    """Repeatedly try to remove one bin: its items go to a pool that is emptied by direct
    insertion, size-reducing swaps (pool item in, smaller item out) and 2-for-1 swaps, with
    random forced insertions (tabu-protected) when stuck. Returns the best assignment found."""
    w = items / cap
    size = w.sum(axis=1) + (w * w).sum(axis=1)  # favours keeping large items out of the pool
    best = assign.copy()
    st = _State(items, cap, assign)
    n = len(items)
    while len(st.members) > target and time.perf_counter() < deadline:
        # Bin to remove: least normalised load (ties random).
        fill = (st.load / cap).sum(axis=1) + np.array([rng.random() * 0.3 for _ in st.members])
        victim = int(np.argmin(fill))
        pool = list(st.members[victim])
        st.members.pop(victim)
        st.load = np.delete(st.load, victim, axis=0)
        tabu: dict[tuple[int, int], int] = {}
        it_no = 0
        max_iters = 200 + 40 * n
        while pool and it_no < max_iters:
            it_no += 1
            if it_no % 64 == 0 and time.perf_counter() > deadline:
                break
            pool.sort(key=lambda j: size[j])
            i = pool.pop()  # largest pool item first
            vec = items[i]
            fits = (st.load + vec <= cap).all(axis=1)
            if fits.any():
                slack = ((cap - st.load - vec) / cap).sum(axis=1)
                b = int(np.argmin(np.where(fits, slack, np.inf)))
                st.members[b].append(i)
                st.load[b] += vec
                continue
            if _swap_in(st, i, pool, size, tabu, it_no):
                continue
            # Stuck: force i into a random bin, evicting random other items until it fits.
            b = rng.randrange(len(st.members))
            for _ in range(3):
                if tabu.get((i, b), -1) < it_no:
                    break
                b = rng.randrange(len(st.members))
            mem = st.members[b]
            rng.shuffle(mem)
            mem.append(i)
            st.load[b] += vec
            k = 0
            while (st.load[b] > cap).any():
                j = mem[k]
                if j == i:
                    k += 1
                    continue
                mem.pop(k)
                st.load[b] -= items[j]
                pool.append(j)
                tabu[(j, b)] = it_no + 10 + rng.randrange(10)
        if pool:
            break
        best = st.assignment()
    return best


def _swap_in(st: _State, i: int, pool: list[int], size: np.ndarray,
             tabu: dict[tuple[int, int], int], it_no: int) -> bool:
    """Put pool item i into a bin in place of one smaller item (1-1), or together with another
    pool item in place of one item (2-1). Chooses the swap that keeps the pool smallest."""
    items, cap = st.items, st.cap
    best: tuple[float, int, int, int] | None = None  # (pool size after, bin, out item, extra)
    partners = [-1] + pool
    for b, mem in enumerate(st.members):
        if not mem:
            continue
        mem_arr = np.asarray(mem)
        base = st.load[b] - items[mem_arr]  # load without each member
        for p in partners:
            add = items[i] if p < 0 else items[i] + items[p]
            gain = size[i] + (size[p] if p >= 0 else 0.0)
            ok = (base + add <= cap).all(axis=1)
            if not ok.any():
                continue
            out_sizes = np.where(ok, size[mem_arr], np.inf)
            k = int(np.argmin(out_sizes))
            j = mem[k]
            # Must shrink the pool; skip moves undoing a recent eviction.
            if out_sizes[k] >= gain - 1e-12 or tabu.get((i, b), -1) >= it_no:
                continue
            # Among acceptable swaps prefer the one that pushes out the largest item still
            # smaller than what goes in: the bin ends fuller, the pool shrinks steadily.
            ok2 = ok & (size[mem_arr] < gain - 1e-12)
            k = int(np.argmax(np.where(ok2, size[mem_arr], -np.inf)))
            j = mem[k]
            cand = (gain - size[j], b, j, p)
            if best is None or cand[0] < best[0]:
                best = cand
    if best is None:
        return False
    _, b, j, p = best
    st.members[b].remove(j)
    st.members[b].append(i)
    st.load[b] += items[i] - items[j]
    if p >= 0:
        pool.remove(p)
        st.members[b].append(p)
        st.load[b] += items[p]
    pool.append(j)
    tabu[(j, b)] = it_no + 7
    return True


def pack_offline(items: Sequence[Sequence[int]] | np.ndarray, capacity: Sequence[int] | np.ndarray,
                 policy: str | None = None, time_budget: float = 0.5,
                 known_lower_bound: int | None = None, seed: int = 0) -> Packing:
    """Best of the greedy portfolio (or the named greedy `policy`), then, unless a policy is
    named, bin-elimination local search until the lower bound or the time budget is hit."""
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
        improved = _eliminate(it, cap, assign, lb, start + time_budget, random.Random(seed))
        if int(improved.max()) + 1 < bins:
            assign, name = improved, f"{name}+ls"
    return _finish(assign, name)


OFFLINE_POLICIES: tuple[str, ...] = tuple(
    [f"{p}_{k}" for k in ("sum", "max", "l2", "prod", "avgsum", "expsum") for p in ("ffd", "bfd")]
    + ["bc_dot", "bc_norm", "bf_given"]
)

Packer = Callable[..., Packing]
