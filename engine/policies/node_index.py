"""Incremental placement index: the decisions of `placement.py` without a full scan per call.

Free capacity is kept per node as one packed Python int (SWAR): dimension k occupies bits
[65k, 65k + 64) and bit 65k + 64 is a guard. With G the guard bits and X the packed demand,
"free >= demand in every dimension" is `(F + G - X) & G == G` (a field that would go negative
borrows its own guard bit and never its neighbour's), so one test costs three big-int
operations whatever the number of dimensions. The same trick gives a per-dimension max.

Eligible nodes sit in sorted *blocked lists* (`_Blocks`): blocks of ~64-128 entries, each block
with a packed per-dimension upper bound of its nodes' free capacity. "First entry at or after a
position that fits" skips whole blocks whose bound cannot hold the demand, then tests entries
one by one. Bounds are only ever loosened on update (an upper bound stays valid when a node's
free shrinks or it leaves the block) and are made exact when a query scans a whole block and
finds nothing, so an update costs O(log n + block) and no numpy call.

Lists are partitioned by the set of dimensions with any free capacity left, so nodes out of a
dimension the demand needs (typically ENIs) are never walked:

* first_fit -- entries are node indices; the first fitting entry of each partition, lowest wins.
* best_fit / worst_fit -- nodes are grouped by identical capacity row (an instance type). In a
  group, "most allocated after placement" is "least normalised free capacity", and that is an
  exact integer key: sum_k free_k * lcm(cap) / cap_k. Entries are (key << 24) | node, so equal
  keys order by node index. best_fit takes the first fitting entry at or after the demand's own
  key; worst_fit the last fitting entry, then the first fitting one with that same key (lowest
  index). Groups are compared with the very same float scores as the plain policy (distinct
  keys of one group never round to the same float), so decisions are identical, including the
  lowest-index tie-break.

Each family of lists is built on first use, so a pool that only runs best_fit does not pay
for first_fit's lists. dot_product is delegated to the plain numpy scan (no index for it).
The numpy views (`allocated`, ...) are refreshed lazily from the packed ints when read.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterator, Sequence
from math import lcm
from operator import mul

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
_FIELD = 64  # bits per packed dimension; values are int64, so < 2**63 always fits
_STRIDE = _FIELD + 1  # plus one guard bit
_FIELD_MASK = (1 << _FIELD) - 1
_VALUE_LIMIT = 1 << 63
_LOAD = 64  # default block load: split above 2 * load entries, merge below load // 2


class OverCommitError(ValueError):
    """Raised when an allocation would exceed capacity or a release would go below zero."""


def _vmax(a: int, b: int, guard: int) -> int:
    """Per-dimension max of two packed vectors."""
    a_ge = (((a | guard) - b) & guard) >> _FIELD  # bit 65k set where a_k >= b_k
    pick_a = a_ge * _FIELD_MASK  # ... spread over the whole field (no carries: 65-bit stride)
    return (a & pick_a) | (b & ~pick_a)


class _Blocks:
    """Sorted ints, cut into blocks with a packed upper bound of the free capacity of the
    nodes (entry & _ID_MASK) in each block. Only eligible nodes are ever entries.

    A per-dimension bound can pass while no single node fits (one node has the CPU, another
    the memory), so a block also remembers the demands (as gx) that a full scan found no room
    for, until an entry enters it or gains free capacity; leaving never makes room."""

    __slots__ = ("blocks", "lasts", "bounds", "misses", "free", "guard", "load")

    def __init__(
        self, free: list[int], guard: int, load: int, entries: Sequence[int] = ()
    ) -> None:
        self.free = free  # shared with NodeIndex: packed free capacity per node
        self.guard = guard
        self.load = load
        self.blocks: list[list[int]] = []
        self.lasts: list[int] = []  # last entry of each block, to bisect for a block
        self.bounds: list[int] = []
        self.misses: list[set[int] | None] = []
        for lo in range(0, len(entries), load):
            blk = list(entries[lo : lo + load])
            self.blocks.append(blk)
            self.lasts.append(blk[-1])
            self.bounds.append(self._bound(blk))
            self.misses.append(None)

    def __iter__(self) -> Iterator[int]:  # for tests and checks
        for blk in self.blocks:
            yield from blk

    def _bound(self, blk: list[int]) -> int:
        free, guard = self.free, self.guard
        bound = 0
        for e in blk:
            bound = _vmax(bound, free[e & _ID_MASK], guard)
        return bound

    def _split(self, b: int) -> None:
        # Both halves inherit bound and misses: still true of a subset, tightened when scanned.
        blk = self.blocks[b]
        self.blocks.insert(b + 1, blk[self.load :])
        del blk[self.load :]
        self.lasts.insert(b, blk[-1])
        self.bounds.insert(b, self.bounds[b])
        miss = self.misses[b]
        self.misses.insert(b, None if miss is None else set(miss))

    def add(self, e: int, f: int) -> None:
        lasts = self.lasts
        b = bisect_left(lasts, e)
        if b == len(lasts):
            if not b:
                self.blocks.append([e])
                lasts.append(e)
                self.bounds.append(f)
                self.misses.append(None)
                return
            b -= 1
            blk = self.blocks[b]
            blk.append(e)
            lasts[b] = e
        else:
            blk = self.blocks[b]
            insort(blk, e)
        self.misses[b] = None
        bound = self.bounds[b]
        guard = self.guard
        if (bound + guard - f) & guard != guard:  # f exceeds the bound somewhere: raise it
            self.bounds[b] = _vmax(bound, f, guard)
        if len(blk) > 2 * self.load:
            self._split(b)

    def remove(self, e: int) -> None:
        lasts = self.lasts
        b = bisect_left(lasts, e)
        blk = self.blocks[b]
        i = bisect_left(blk, e)
        del blk[i]
        if not blk:
            del self.blocks[b], lasts[b], self.bounds[b], self.misses[b]
            return
        if len(blk) >= self.load // 2 or len(lasts) == 1:
            if i == len(blk):
                lasts[b] = blk[-1]
            return
        # Few left: fold into a neighbour so the block count tracks the entry count.
        a = b - 1 if b + 1 == len(lasts) else b
        merged = self.blocks[a] + self.blocks[a + 1]
        bound = _vmax(self.bounds[a], self.bounds[a + 1], self.guard)
        del self.blocks[a + 1], lasts[a + 1], self.bounds[a + 1], self.misses[a + 1]
        self.blocks[a] = merged
        lasts[a] = merged[-1]
        self.bounds[a] = bound
        self.misses[a] = None
        if len(merged) > 2 * self.load:
            self._split(a)

    def move(self, old: int, new: int, f: int) -> None:
        """Replace entry old by new, whose node now has free capacity f."""
        lasts = self.lasts
        b = bisect_left(lasts, old)
        blk = self.blocks[b]
        if (b == 0 or new > lasts[b - 1]) and (b + 1 == len(lasts) or new < self.blocks[b + 1][0]):
            # Stays in this block: no second search, no split or merge.
            del blk[bisect_left(blk, old)]
            insort(blk, new)
            lasts[b] = blk[-1]
            self.bounds[b] = _vmax(self.bounds[b], f, self.guard)
            self.misses[b] = None
        else:
            self.remove(old)
            self.add(new, f)

    def raise_bound(self, e: int, f: int) -> None:
        """Entry e's node gained free capacity f (its position is unchanged)."""
        b = bisect_left(self.lasts, e)
        self.bounds[b] = _vmax(self.bounds[b], f, self.guard)
        self.misses[b] = None

    def _missed(self, b: int, gx: int) -> None:
        """A scan of all of block b found no room for gx."""
        blk = self.blocks[b]
        bound = self.bounds[b] = self._bound(blk)  # tighten
        guard = self.guard
        if (bound + gx) & guard == guard:  # the exact bound still lets gx in: remember
            miss = self.misses[b]
            if miss is None:
                self.misses[b] = {gx}
            elif len(miss) < 64:
                miss.add(gx)

    def first_fit(self, lo: int, hi: int | None, gx: int) -> int | None:
        """First entry e with lo <= e < hi (None: no upper limit) whose node fits:
        (free + gx) & guard == guard, where gx = guard - packed demand."""
        lasts = self.lasts
        b = bisect_left(lasts, lo)
        nb = len(lasts)
        if hi is None:
            if b == nb:
                return None
            hi = lasts[-1] + 1
        guard, free, blocks, bounds, misses = (
            self.guard, self.free, self.blocks, self.bounds, self.misses)
        while b < nb:
            blk = blocks[b]
            if blk[0] >= hi:
                return None
            if (bounds[b] + gx) & guard == guard:
                if blk[0] >= lo and lasts[b] < hi:  # all of the block
                    miss = misses[b]
                    if miss is None or gx not in miss:
                        for e in blk:
                            if (free[e & _ID_MASK] + gx) & guard == guard:
                                return e
                        self._missed(b, gx)
                else:
                    i = bisect_left(blk, lo)
                    for e in blk[i : bisect_left(blk, hi, i)]:
                        if (free[e & _ID_MASK] + gx) & guard == guard:
                            return e
            b += 1
        return None

    def max_key_fit(self, lo: int, gx: int) -> int | None:
        """Among entries e >= lo (entries being (key << _ID_BITS) | node) whose node fits,
        the lowest-index one of the largest key."""
        lasts = self.lasts
        guard, free, blocks, bounds, misses = (
            self.guard, self.free, self.blocks, self.bounds, self.misses)
        b = len(lasts) - 1
        while b >= 0 and lasts[b] >= lo:
            if (bounds[b] + gx) & guard == guard:
                blk = blocks[b]
                i = bisect_left(blk, lo) if blk[0] < lo else 0
                miss = misses[b]
                if i or miss is None or gx not in miss:
                    for k in range(len(blk) - 1, i - 1, -1):
                        e = blk[k]
                        if (free[e & _ID_MASK] + gx) & guard == guard:
                            # e is the highest index of its key; usually also the only one.
                            key_lo = (e >> _ID_BITS) << _ID_BITS
                            prev = blk[k - 1] if k else lasts[b - 1] if b else -1
                            return e if prev < key_lo else self.first_fit(key_lo, e + 1, gx)
                    if not i:
                        self._missed(b, gx)
            b -= 1
        return None


class _Group:
    """Nodes sharing one capacity row, sorted by exact normalised free capacity."""

    __slots__ = ("cap", "weights", "denom", "exact", "lists")

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
        # One sorted list per set of dimensions with free capacity left (packed guard bits).
        self.lists: dict[int, _Blocks] = {}

    def key(self, vals: Sequence[int]) -> int:
        return sum(map(mul, vals, self.weights))


class _Demand:
    """A demand with everything a query or update derives from it (cached per demand)."""

    __slots__ = ("vals", "packed", "gx", "needs", "keys", "seen", "lists", "by_index")

    def __init__(self, vals: list[int], packed: int, guard: int, ones: int) -> None:
        self.vals = vals
        self.packed = packed
        self.gx = guard - packed  # (free + gx) & guard == guard <=> free fits the demand
        self.needs = (packed + guard - ones) & guard  # guard bits of the non-zero dimensions
        self.keys: list[int] = []  # the demand's key in each capacity group, by group id
        # The lists whose nodes have free capacity in every dimension the demand needs, per
        # group and for first fit; valid while `seen` is the index's list count.
        self.seen = -1
        self.lists: list[list[_Blocks]] = []
        self.by_index: list[_Blocks] = []


class NodeIndex:
    """Mutable index over one cell's nodes; `place` matches `placement.POLICIES` exactly for
    first_fit, best_fit and worst_fit (see module doc for the float-tie argument).

    The numpy views are snapshots: read them again after a mutation."""

    def __init__(
        self,
        capacity: np.ndarray,
        allocated: np.ndarray,
        eligible: np.ndarray,
        dimensions: Sequence[str] = DEFAULT_DIMENSIONS,
        block: int = _LOAD,
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
        self._n = 0
        if block < 1:
            raise ValueError(f"block must be >= 1, got {block}")
        self._load = block  # entries per block of the sorted lists (64 to 128 by default)
        self._shifts = tuple(_STRIDE * k for k in range(d))
        self._guard = sum(1 << (s + _FIELD) for s in self._shifts)
        self._ones = sum(1 << s for s in self._shifts)
        room = max(16, n)
        self._cap = np.zeros((room, d), dtype=np.int64)
        self._alloc = np.zeros((room, d), dtype=np.int64)
        self._elig = np.zeros(room, dtype=bool)
        self._dirty: set[int] = set()  # rows of _alloc behind _free
        self._free: list[int] = []  # packed free capacity
        self._cap_p: list[int] = []  # packed capacity
        self._cap_l: list[tuple[int, ...]] = []
        self._cap_max: tuple[int, ...] = ()
        self._elig_l: list[bool] = []
        self._has: list[int] = []  # guard bits of the dimensions with free capacity left
        self._gid: list[int] = []
        self._key: list[int] = []  # valid while the key lists exist
        self._groups: list[_Group] = []
        self._group_of: dict[tuple[int, ...], int] = {}
        self._keyed = False  # best/worst fit lists built
        self._exact = True  # every group's scores are exact (else best/worst use the scan)
        self._dems: dict[tuple, _Demand] = {}
        self._list_count = 0  # lists ever created: a new one invalidates _Demand.lists
        self._by_index: dict[int, _Blocks] | None = None  # first fit lists, once built
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
        if self._dirty:
            for i in self._dirty:
                self._alloc[i] = self._unpack(self._cap_p[i] - self._free[i])
            self._dirty.clear()
        return self._alloc[: self._n]

    @property
    def eligible(self) -> np.ndarray:
        return self._elig[: self._n]

    def is_empty(self, i: int) -> bool:
        """Node i holds nothing (its free capacity is its capacity)."""
        return self._free[i] == self._cap_p[i]

    def fits(self, i: int, demand: Sequence[int] | np.ndarray) -> bool:
        """Node i has room for demand in every dimension (eligible or not)."""
        dem = self._demand(demand)
        return (self._free[i] + dem.gx) & self._guard == self._guard

    def capacity_of(self, i: int) -> tuple[int, ...]:
        return self._cap_l[i]

    def largest_capacity(self) -> tuple[int, ...]:
        """Per dimension, the largest capacity of any node (() with no nodes)."""
        return self._cap_max

    def fill(self, i: int) -> float:
        """Sum over dimensions of node i's allocated share (0 empty, d full)."""
        free = self._unpack(self._free[i])
        return sum((c - f) / c for c, f in zip(self._cap_l[i], free, strict=True))

    # ---- packing -----------------------------------------------------------------------
    def _pack(self, vals: Sequence[int]) -> int:
        x = 0
        for v, s in zip(vals, self._shifts):  # noqa: B905 -- lengths checked by callers
            x |= v << s
        return x

    def _unpack(self, x: int) -> list[int]:
        return [(x >> s) & _FIELD_MASK for s in self._shifts]

    def _has_bits(self, x: int) -> int:
        """Guard bits of the dimensions where x >= 1."""
        return (x + self._guard - self._ones) & self._guard

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
        if any(c <= 0 or c >= _VALUE_LIMIT for c in cap) or any(
            a < 0 or a > c for a, c in zip(alloc, cap, strict=True)
        ):
            raise ValueError(f"need 0 < capacity < 2**63 and 0 <= allocated <= capacity: "
                             f"{cap} {alloc}")
        if i == self._cap.shape[0]:
            self._grow()
        self._n += 1
        self._cap[i] = cap
        self._alloc[i] = alloc
        self._elig[i] = eligible
        free = self._pack([c - a for c, a in zip(cap, alloc, strict=True)])
        self._free.append(free)
        self._cap_p.append(self._pack(cap))
        self._cap_l.append(cap)
        self._cap_max = tuple(map(max, self._cap_max, cap)) if self._cap_max else cap
        self._elig_l.append(eligible)
        self._has.append(self._has_bits(free))
        g = self._group_of.get(cap)
        if g is None:
            g = self._group_of[cap] = len(self._groups)
            self._groups.append(_Group(cap))
            self._list_count += 1  # cached candidates list no lists for this group yet
            self._exact = self._exact and self._groups[g].exact
        self._gid.append(g)
        self._key.append(self._groups[g].key(self._unpack(free)) if self._keyed else 0)
        if eligible:
            self._enter(i)
        return i

    def _grow(self) -> None:
        room = self._cap.shape[0] * 2

        def bigger(a: np.ndarray) -> np.ndarray:
            out = np.zeros((room, *a.shape[1:]), dtype=a.dtype)
            out[: a.shape[0]] = a
            return out

        self._cap = bigger(self._cap)
        self._alloc = bigger(self._alloc)
        self._elig = bigger(self._elig)

    def _list(self, lists: dict[int, _Blocks], has: int) -> _Blocks:
        lst = lists.get(has)
        if lst is None:
            lst = lists[has] = _Blocks(self._free, self._guard, self._load)
            self._list_count += 1
        return lst

    def _candidates(self, dem: _Demand) -> None:
        """Refresh dem's candidate lists (nodes out of a dimension it needs are never
        candidates: those lists are skipped without a look)."""
        needs = dem.needs
        if len(dem.keys) < len(self._groups):
            self._dem_key(dem, len(self._groups) - 1)
        dem.lists = [[lst for has, lst in g.lists.items() if has & needs == needs]
                     for g in self._groups]
        dem.by_index = [lst for has, lst in (self._by_index or {}).items()
                        if has & needs == needs]
        dem.seen = self._list_count

    def _enter(self, i: int) -> None:
        """Put eligible node i into the lists that exist."""
        if self._keyed:
            g = self._groups[self._gid[i]]
            self._list(g.lists, self._has[i]).add((self._key[i] << _ID_BITS) | i, self._free[i])
        if self._by_index is not None:
            self._list(self._by_index, self._has[i]).add(i, self._free[i])

    def _leave(self, i: int) -> None:
        if self._keyed:
            g = self._groups[self._gid[i]]
            g.lists[self._has[i]].remove((self._key[i] << _ID_BITS) | i)
        if self._by_index is not None:
            self._by_index[self._has[i]].remove(i)

    def _set_free(self, i: int, new: int, dem: _Demand, sign: int) -> None:
        """Node i's free capacity becomes `new` (= old + sign * demand)."""
        self._free[i] = new
        self._dirty.add(i)
        old_has = self._has[i]
        guard = self._guard
        has = self._has[i] = (new + guard - self._ones) & guard
        elig = self._elig_l[i]
        if self._keyed:
            gid = self._gid[i]
            keys = dem.keys
            old_key = self._key[i]
            key = self._key[i] = old_key + sign * (
                keys[gid] if gid < len(keys) else self._dem_key(dem, gid))
            if elig:
                lists = self._groups[gid].lists
                if has == old_has:
                    lists[has].move((old_key << _ID_BITS) | i, (key << _ID_BITS) | i, new)
                else:
                    lists[old_has].remove((old_key << _ID_BITS) | i)
                    lst = lists.get(has)
                    if lst is None:
                        lst = self._list(lists, has)
                    lst.add((key << _ID_BITS) | i, new)
        if elig and self._by_index is not None:
            if has != old_has:
                self._by_index[old_has].remove(i)
                lst = self._by_index.get(has)
                if lst is None:
                    lst = self._list(self._by_index, has)
                lst.add(i, new)
            elif sign > 0:
                self._by_index[has].raise_bound(i, new)
            # Less free: the block's bound is still an upper bound.

    def allocate(self, i: int, demand: Sequence[int] | np.ndarray) -> None:
        """Reserve `demand` on node i; raises OverCommitError rather than exceed capacity."""
        dem = self._demand(demand)
        free = self._free[i]
        guard = self._guard
        if (free + dem.gx) & guard != guard:
            have = self._unpack(free)
            raise OverCommitError(
                f"node {i}: demand {dem.vals} exceeds free {have} in "
                + ", ".join(n for n, f, v in zip(self.dimensions, have, dem.vals, strict=True)
                            if v > f)
            )
        self._set_free(i, free - dem.packed, dem, -1)

    def release(self, i: int, demand: Sequence[int] | np.ndarray) -> None:
        """Return `demand` to node i; raises OverCommitError if more than allocated."""
        dem = self._demand(demand)
        new = self._free[i] + dem.packed  # fields stay < 2**64: no carry between them
        guard = self._guard
        if (self._cap_p[i] + guard - new) & guard != guard:
            raise OverCommitError(f"node {i}: releasing {dem.vals} exceeds allocation")
        self._set_free(i, new, dem, 1)

    def set_eligible(self, i: int, eligible: bool) -> None:
        if self._elig_l[i] == eligible:
            return
        if eligible:
            self._elig_l[i] = True
            self._enter(i)
        else:
            self._leave(i)
            self._elig_l[i] = False
        self._elig[i] = eligible

    def _demand(self, demand: Sequence[int] | np.ndarray) -> _Demand:
        # Demands come from a few instance specs: derive packing and keys once per shape.
        t = tuple(demand.tolist() if isinstance(demand, np.ndarray) else demand)
        dem = self._dems.get(t)
        if dem is None:
            vals = [int(x) for x in t]
            if len(vals) != self._d or (vals and (min(vals) < 0 or max(vals) >= _VALUE_LIMIT)):
                raise ValueError(
                    f"demand must be {self._d} non-negative int64 values, got {vals}")
            if len(self._dems) >= 4096:
                self._dems.clear()
            dem = self._dems[t] = _Demand(vals, self._pack(vals), self._guard, self._ones)
        return dem

    def _dem_key(self, dem: _Demand, gid: int) -> int:
        keys = dem.keys
        while len(keys) <= gid:
            keys.append(self._groups[len(keys)].key(dem.vals))
        return keys[gid]

    def _build_keyed(self) -> None:
        per: dict[tuple[int, int], list[int]] = {}
        for i in range(self._n):
            g = self._groups[self._gid[i]]
            self._key[i] = g.key(self._unpack(self._free[i]))
            if self._elig_l[i]:
                per.setdefault((self._gid[i], self._has[i]), []).append(
                    (self._key[i] << _ID_BITS) | i)
        for (gid, has), entries in per.items():
            entries.sort()
            self._groups[gid].lists[has] = _Blocks(self._free, self._guard, self._load, entries)
            self._list_count += 1
        self._keyed = True

    def _build_by_index(self) -> None:
        per: dict[int, list[int]] = {}
        for i in range(self._n):
            if self._elig_l[i]:
                per.setdefault(self._has[i], []).append(i)
        self._by_index = {
            has: _Blocks(self._free, self._guard, self._load, e) for has, e in per.items()}
        self._list_count += len(per) + 1  # +1: `per` may be empty, the dict is still new

    # ---- queries -----------------------------------------------------------------------
    def place(self, demand: Sequence[int] | np.ndarray, policy: str = "best_fit") -> Decision:
        """Choose a node (does not allocate; call `allocate` with the result)."""
        dem = self._demand(demand)
        if policy == "best_fit" or policy == "worst_fit":
            if self._exact:
                found = self._sorted_fit(dem, policy == "best_fit")
                if found is not None:
                    return Placed(found[0], policy, found[1])
                return self._unplaceable(dem)
        elif policy == "first_fit":
            i = self._first_fit(dem)
            if i is not None:
                gid = self._gid[i]
                g = self._groups[gid]
                free = self._unpack(self._free[i])
                if g.exact:  # = utilisation_score_row: same integers, same division
                    score = (g.denom - g.key(free) + self._dem_key(dem, gid)) / g.denom
                else:
                    cap = self._cap_l[i]
                    alloc = [c - f for c, f in zip(cap, free, strict=True)]
                    score = utilisation_score_row(cap, alloc, dem.vals)
                return Placed(i, policy, score)
            return self._unplaceable(dem)
        elif policy not in POLICIES:
            raise KeyError(f"unknown policy {policy!r}; known: {sorted(POLICIES)}")
        return POLICIES[policy](self.capacity, self.allocated, self.eligible,
                                np.asarray(dem.vals, dtype=np.int64), self.dimensions)

    def _unplaceable(self, dem: _Demand) -> Decision:
        return unplaceable_reasons(self.capacity, self.allocated, self.eligible,
                                   np.asarray(dem.vals, dtype=np.int64), self.dimensions)

    def _first_fit(self, dem: _Demand) -> int | None:
        if self._by_index is None:
            self._build_by_index()
        if dem.seen != self._list_count:
            self._candidates(dem)
        gx = dem.gx
        best: int | None = None
        for lst in dem.by_index:
            e = lst.first_fit(0, best, gx)
            if e is not None:
                best = e
        return best

    def _sorted_fit(self, dem: _Demand, most: bool) -> tuple[int, float] | None:
        if not self._keyed:
            self._build_keyed()
        if dem.seen != self._list_count:
            self._candidates(dem)
        gx = dem.gx
        best_i = -1
        best_score = 0.0
        for g, need, lists in zip(self._groups, dem.keys, dem.lists):  # noqa: B905 -- same lengths
            # `need` is the demand's own key: no node with a smaller key can hold it.
            lo = need << _ID_BITS
            found: int | None = None  # the group's extreme fitting entry, lowest index on ties
            if most:
                hi = None
                if best_i >= 0:
                    # Keys above this cannot reach best_score (+1 keeps float-equal ties).
                    hi = (int(g.denom * (1.0 - best_score)) + need + 2) << _ID_BITS
                for lst in lists:
                    # Only entries smaller than the best so far can improve on it.
                    e = lst.first_fit(lo, hi if found is None else found, gx)
                    if e is not None:
                        found = e
            else:
                for lst in lists:
                    e = lst.max_key_fit(lo, gx)
                    if e is not None and (
                        found is None or e >> _ID_BITS > found >> _ID_BITS
                        or (e >> _ID_BITS == found >> _ID_BITS and e < found)
                    ):
                        found = e
            if found is None:
                continue
            i = found & _ID_MASK
            score = (g.denom - (found >> _ID_BITS) + need) / g.denom  # sum (alloc + demand)/cap
            # Compare the correctly rounded floats, as the plain policy does.
            if best_i < 0 or (score > best_score if most else score < best_score) or (
                score == best_score and i < best_i
            ):
                best_i, best_score = i, score
        if best_i < 0:
            return None
        return best_i, best_score
