"""Incremental placement index: the decisions of `placement.py` without a full scan per call.

Two structures, both updated in O(block + log n) on every allocate/release:

* first_fit -- nodes are cut into fixed blocks of `block` consecutive indices; for each block we
  keep the per-dimension max free capacity over its eligible nodes. A query scans that small
  (n/block, d) summary, then only the candidate blocks, in index order.
* best_fit / worst_fit -- nodes are grouped by identical capacity row (an instance type). In a
  group, "most allocated after placement" is "least normalised free capacity", and that is an
  exact integer key: sum_k free_k * lcm(cap) / cap_k. Each group keeps (key, node) sorted in a
  Python list; a query bisects to the first key that could hold the demand and walks upwards in
  growing vectorised chunks until a node fits. Near-ties (keys within float noise) are resolved
  with the very same float scores as the plain policy, so decisions are identical, including
  the lowest-index tie-break.

dot_product is delegated to the plain numpy scan (documented: no index for it).
Fast when nodes come in few capacity shapes; each distinct shape costs one bisect per query.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Sequence
from math import lcm

import numpy as np

from engine.policies.placement import (
    DEFAULT_DIMENSIONS,
    POLICIES,
    Decision,
    Placed,
    unplaceable_reasons,
    utilisation_score_row,
)

_ID_BITS = 24  # a sort entry is (key << 24) | node, so ties in key order by node index
_ID_MASK = (1 << _ID_BITS) - 1


class OverCommitError(ValueError):
    """Raised when an allocation would exceed capacity or a release would go below zero."""


class _Group:
    """Nodes sharing one capacity row, sorted by exact normalised free capacity."""

    __slots__ = ("cap", "weights", "denom", "exact", "lists", "fast")

    def __init__(self, cap: tuple[int, ...]) -> None:
        self.cap = cap
        big = lcm(*cap)
        self.weights = tuple(big // c for c in cap)
        d = len(cap)
        self.denom = d * big
        # Same criterion as placement.utilisation_scores: scores are exact rationals rounded once,
        # so the integer key order is the float order. Otherwise we defer to the plain scan.
        prod = 1.0
        for c in cap:
            prod *= float(c)
        self.exact = prod * d < float(1 << 53)
        # Sorted entry lists per "exhausted mask" (bit k set: no free capacity in dimension k),
        # so nodes full in a dimension the demand needs (typically ENIs) are never walked.
        self.lists: dict[int, list[int]] = {}
        # Entries fit in int64 (vectorised unpacking) unless lcm(cap) is huge.
        self.fast = ((d * big + 1) << _ID_BITS) < (1 << 63)

    def ids(self, chunk: list[int]) -> np.ndarray:
        if self.fast:
            return np.array(chunk, dtype=np.int64) & _ID_MASK
        return np.fromiter((e & _ID_MASK for e in chunk), dtype=np.int64, count=len(chunk))

    def key(self, free: Sequence[int]) -> int:
        return sum(f * w for f, w in zip(free, self.weights, strict=True))

    def insert(self, mask: int, entry: int) -> None:
        lst = self.lists.get(mask)
        if lst is None:
            self.lists[mask] = [entry]
        else:
            insort(lst, entry)

    def remove(self, mask: int, entry: int) -> None:
        lst = self.lists[mask]
        del lst[bisect_left(lst, entry)]
        if not lst:
            del self.lists[mask]


class NodeIndex:
    """Mutable index over one cell's nodes; `place` matches `placement.POLICIES` exactly for
    first_fit, best_fit and worst_fit (see module doc for the float-tie argument)."""

    def __init__(
        self,
        capacity: np.ndarray,
        allocated: np.ndarray,
        eligible: np.ndarray,
        dimensions: Sequence[str] = DEFAULT_DIMENSIONS,
        block: int = 64,
    ) -> None:
        capacity = np.asarray(capacity, dtype=np.int64)
        allocated = np.asarray(allocated, dtype=np.int64)
        eligible = np.asarray(eligible, dtype=bool)
        n, d = capacity.shape
        if allocated.shape != (n, d) or eligible.shape != (n,):
            raise ValueError("capacity, allocated and eligible shapes disagree")
        if len(dimensions) != d:
            raise ValueError(f"{len(dimensions)} dimension names for {d} dimensions")
        if n and ((capacity <= 0).any() or (allocated < 0).any() or (allocated > capacity).any()):
            raise ValueError("need capacity > 0 and 0 <= allocated <= capacity")
        self.dimensions = tuple(dimensions)
        self._d = d
        self._block = block
        self._n = 0
        room = max(16, n)
        self._cap = np.zeros((room, d), dtype=np.int64)
        self._alloc = np.zeros((room, d), dtype=np.int64)
        self._elig = np.zeros(room, dtype=bool)
        # free where eligible, -1 otherwise: one comparison answers "eligible and fits".
        self._eff = np.full((room, d), -1, dtype=np.int64)
        self._bmax = np.full((-(-room // block), d), -1, dtype=np.int64)
        self._free_l: list[list[int]] = []
        self._cap_l: list[tuple[int, ...]] = []
        self._gid: list[int] = []
        self._key: list[int] = []
        self._mask: list[int] = []
        self._query = np.zeros(d, dtype=np.int64)  # demand of the query in progress
        self._groups: list[_Group] = []
        self._group_of: dict[tuple[int, ...], int] = {}
        for i in range(n):
            self.add_node(capacity[i], allocated[i], bool(eligible[i]))

    # ---- views -------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._n

    @property
    def capacity(self) -> np.ndarray:
        return self._cap[: self._n]

    @property
    def allocated(self) -> np.ndarray:
        return self._alloc[: self._n]

    @property
    def eligible(self) -> np.ndarray:
        return self._elig[: self._n]

    # ---- mutation ----------------------------------------------------------------------
    def add_node(
        self, capacity_row: Sequence[int] | np.ndarray,
        allocated_row: Sequence[int] | np.ndarray | None = None, eligible: bool = True,
    ) -> int:
        """Append a node; returns its index."""
        cap = tuple(int(c) for c in capacity_row)
        alloc = [0] * self._d if allocated_row is None else [int(a) for a in allocated_row]
        if len(cap) != self._d or len(alloc) != self._d:
            raise ValueError(f"node rows must have {self._d} dimensions")
        i = self._n
        if i >= 1 << _ID_BITS:
            raise ValueError(f"at most {1 << _ID_BITS} nodes per index")
        if any(c <= 0 for c in cap) or any(a < 0 or a > c for a, c in zip(alloc, cap, strict=True)):
            raise ValueError(f"need capacity > 0 and 0 <= allocated <= capacity: {cap} {alloc}")
        if i == self._cap.shape[0]:
            self._grow()
        self._n += 1
        self._cap[i] = cap
        self._alloc[i] = alloc
        self._elig[i] = eligible
        free = [c - a for c, a in zip(cap, alloc, strict=True)]
        self._free_l.append(free)
        self._cap_l.append(cap)
        g = self._group_of.get(cap)
        if g is None:
            g = self._group_of[cap] = len(self._groups)
            self._groups.append(_Group(cap))
        self._gid.append(g)
        self._key.append(self._groups[g].key(free))
        self._mask.append(_exhausted(free))
        if eligible:
            self._eff[i] = free
            self._groups[g].insert(self._mask[i], (self._key[i] << _ID_BITS) | i)
        self._refresh_block(i)
        return i

    def _grow(self) -> None:
        room = self._cap.shape[0] * 2
        d = self._d

        def bigger(a: np.ndarray, fill: int | bool) -> np.ndarray:
            out = np.full((room, d) if a.ndim == 2 else room, fill, dtype=a.dtype)
            out[: a.shape[0]] = a
            return out

        self._cap = bigger(self._cap, 0)
        self._alloc = bigger(self._alloc, 0)
        self._elig = bigger(self._elig, False)
        self._eff = bigger(self._eff, -1)
        bmax = np.full((-(-room // self._block), d), -1, dtype=np.int64)
        bmax[: self._bmax.shape[0]] = self._bmax
        self._bmax = bmax

    def _refresh_block(self, i: int) -> None:
        b = i // self._block
        self._bmax[b] = self._eff[b * self._block : (b + 1) * self._block].max(axis=0)

    def _set_free(self, i: int, free: list[int]) -> None:
        self._free_l[i] = free
        self._alloc[i] = [c - f for c, f in zip(self._cap_l[i], free, strict=True)]
        g = self._groups[self._gid[i]]
        new_key = g.key(free)
        new_mask = _exhausted(free)
        if self._elig[i]:
            self._eff[i] = free
            g.remove(self._mask[i], (self._key[i] << _ID_BITS) | i)
            g.insert(new_mask, (new_key << _ID_BITS) | i)
            self._refresh_block(i)
        self._key[i] = new_key
        self._mask[i] = new_mask

    def allocate(self, i: int, demand: Sequence[int] | np.ndarray) -> None:
        """Reserve `demand` on node i; raises OverCommitError rather than exceed capacity."""
        dem = self._demand(demand)
        free = self._free_l[i]
        new = [f - x for f, x in zip(free, dem, strict=True)]
        if min(new) < 0:
            raise OverCommitError(
                f"node {i}: demand {dem} exceeds free {free} in "
                + ", ".join(n for n, v in zip(self.dimensions, new, strict=True) if v < 0)
            )
        self._set_free(i, new)

    def release(self, i: int, demand: Sequence[int] | np.ndarray) -> None:
        """Return `demand` to node i; raises OverCommitError if more than allocated."""
        dem = self._demand(demand)
        free = self._free_l[i]
        new = [f + x for f, x in zip(free, dem, strict=True)]
        if any(v > c for v, c in zip(new, self._cap_l[i], strict=True)):
            raise OverCommitError(f"node {i}: releasing {dem} exceeds allocation")
        self._set_free(i, new)

    def set_eligible(self, i: int, eligible: bool) -> None:
        if bool(self._elig[i]) == eligible:
            return
        self._elig[i] = eligible
        g = self._groups[self._gid[i]]
        entry = (self._key[i] << _ID_BITS) | i
        if eligible:
            self._eff[i] = self._free_l[i]
            g.insert(self._mask[i], entry)
        else:
            self._eff[i] = -1
            g.remove(self._mask[i], entry)
        self._refresh_block(i)

    def _demand(self, demand: Sequence[int] | np.ndarray) -> list[int]:
        dem = [int(x) for x in demand]
        if len(dem) != self._d or min(dem) < 0:
            raise ValueError(f"demand must be {self._d} non-negative integers, got {dem}")
        return dem

    # ---- queries -----------------------------------------------------------------------
    def place(self, demand: Sequence[int] | np.ndarray, policy: str = "best_fit") -> Decision:
        """Choose a node (does not allocate; call `allocate` with the result)."""
        dem = self._demand(demand)
        if policy == "first_fit":
            i = self._first_fit(np.asarray(dem, dtype=np.int64))
            if i is not None:
                return Placed(i, policy, utilisation_score_row(
                    self._cap_l[i], [c - f for c, f in zip(self._cap_l[i], self._free_l[i],
                                                           strict=True)], dem))
        elif policy in ("best_fit", "worst_fit") and all(g.exact for g in self._groups):
            found = self._sorted_fit(dem, policy == "best_fit")
            if found is not None:
                return Placed(found[0], policy, found[1])
        elif policy in POLICIES:
            return POLICIES[policy](self.capacity, self.allocated, self.eligible,
                                    np.asarray(dem, dtype=np.int64), self.dimensions)
        else:
            raise KeyError(f"unknown policy {policy!r}; known: {sorted(POLICIES)}")
        return unplaceable_reasons(self.capacity, self.allocated, self.eligible,
                                   np.asarray(dem, dtype=np.int64), self.dimensions)

    def _first_fit(self, dem: np.ndarray) -> int | None:
        nb = -(-self._n // self._block)
        for b in np.flatnonzero((self._bmax[:nb] >= dem).all(axis=1)).tolist():
            lo = b * self._block
            ok = (self._eff[lo : lo + self._block] >= dem).all(axis=1)
            if ok.any():
                return lo + int(np.argmax(ok))
        return None

    def _sorted_fit(self, dem: list[int], most: bool) -> tuple[int, float] | None:
        demand_np = self._query = np.asarray(dem, dtype=np.int64)
        best: tuple[int, int, int] | None = None  # (numerator, denominator, -index)
        best_score = 0.0
        for g in self._groups:
            limit = None
            if most and best is not None:
                # Keys above this cannot reach best_score (+1 keeps float-equal ties in play).
                limit = int(g.denom * (1.0 - best_score)) + g.key(dem) + 1
            found = self._group_fit(g, dem, demand_np, most, limit)
            if found is None:
                continue
            key, i = found
            num = g.denom - key + g.key(dem)  # sum_k (alloc_k + demand_k) * lcm / cap_k
            score = num / g.denom
            # Compare the correctly rounded floats, as the plain policy does.
            if best is None or (score > best_score if most else score < best_score) or (
                score == best_score and i < -best[2]
            ):
                best, best_score = (num, g.denom, -i), score
        if best is None:
            return None
        return -best[2], best_score

    def _group_fit(
        self, g: _Group, dem: list[int], demand_np: np.ndarray, most: bool,
        limit: int | None = None,
    ) -> tuple[int, int] | None:
        """(key, node) of the group's fitting node with the extreme key, lowest index on ties;
        for `most`, only keys <= limit are of interest."""
        need_mask = _needs(dem)
        need = g.key(dem)
        best: int | None = None if limit is None else ((limit + 1) << _ID_BITS)
        for mask, lst in g.lists.items():
            if mask & need_mask:
                continue  # every node here is out of a dimension the demand needs
            if most:
                # Only entries smaller than the best so far can improve on it.
                stop = len(lst) if best is None else bisect_left(lst, best)
                e = self._first_fit_from(g, lst, bisect_left(lst, need << _ID_BITS), stop)
                if e is not None:
                    best = e
            else:
                key = self._max_key(g, lst, need, demand_np)
                if key is None or (best is not None and key < best >> _ID_BITS):
                    continue
                lo = bisect_left(lst, key << _ID_BITS)
                e = self._first_fit_from(g, lst, lo, bisect_left(lst, (key + 1) << _ID_BITS))
                assert e is not None
                if best is None or key > best >> _ID_BITS or e < best:
                    best = e
        if best is None or (limit is not None and best >> _ID_BITS > limit):
            return None
        return best >> _ID_BITS, best & _ID_MASK

    def _first_fit_from(self, g: _Group, lst: list[int], pos: int, stop: int) -> int | None:
        """First entry in lst[pos:stop] whose node fits, in growing vectorised chunks."""
        step = 16
        demand_np = self._query
        while pos < stop:
            chunk = lst[pos : min(pos + step, stop)]
            ok = (self._eff[g.ids(chunk)] >= demand_np).all(axis=1)
            if ok.any():
                return chunk[int(np.argmax(ok))]
            pos += step
            step = min(step * 2, 1024)
        return None

    def _max_key(self, g: _Group, lst: list[int], need: int, demand_np: np.ndarray) -> int | None:
        """Largest key in lst of a node that fits, walking down from the top."""
        pos = len(lst)
        step = 16
        while pos > 0:
            start = max(0, pos - step)
            chunk = lst[start:pos]
            if (chunk[-1] >> _ID_BITS) < need:
                return None  # less free capacity in total than demanded
            ok = (self._eff[g.ids(chunk)] >= demand_np).all(axis=1)
            if ok.any():
                return chunk[len(ok) - 1 - int(np.argmax(ok[::-1]))] >> _ID_BITS
            pos = start
            step = min(step * 2, 1024)
        return None


def _exhausted(free: Sequence[int]) -> int:
    return sum(1 << k for k, f in enumerate(free) if f <= 0)


def _needs(demand: Sequence[int]) -> int:
    return sum(1 << k for k, x in enumerate(demand) if x > 0)
