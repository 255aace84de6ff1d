"""Incremental placement index: the decisions of `placement.py` without a full scan per call.

This is how the engine finds a node in a shared pool. `placement.py`'s numpy scans stay as
the reference the tests compare the index against, and decide in two cases the index has no
exact order for: dot_product (its score weighs each dimension by the demand, so no one sort
order serves every demand; a branch and bound on block bounds was tried and visits nearly every
node, 25 times slower than the vectorised scan), and best/worst fit over a capacity row whose
d * lcm reaches 2**53 (see below). Both are masked by the query's parts, never by labels.

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

Nodes are partitioned by a caller-given *part* (the pool keeps one part per distinct label
set, so a node selector is the set of parts whose labels it matches), then by the set of
dimensions with any free capacity left (`has`), so nodes out of a dimension the demand needs
(typically ENIs) are never walked. A query names the parts it may use (None: all). A `has`
set that no demand asked so far can use (every instance takes an ENI and a pod slot, so "no
ENI left" is one) is kept as an unordered `_Bag` with O(1) updates instead of a sorted list:
best fit fills nodes to the last ENI, so most updates move a node in or out of such a set.
It is sorted into a list the first time a demand could use it.

* first_fit -- entries are node indices; the first fitting entry of each list, lowest wins.
* best_fit / worst_fit -- nodes are grouped by (part, identical capacity row). In a group,
  "most allocated after placement" is "least normalised free capacity", and that is an exact
  integer key: sum_k free_k * lcm(cap) / cap_k. Entries are (key << 24) | node, so equal keys
  order by node index. best_fit takes the first fitting entry at or after the demand's own
  key; worst_fit the last fitting entry, then the first fitting one with that same key (lowest
  index). Groups are compared with the very same float scores as the plain policy (distinct
  keys of one group never round to the same float), so decisions are identical, including the
  lowest-index tie-break.
* no fit -- the reasons (each dimension no eligible node can hold on its own, with its
  largest free) come from the block bounds, made exact only where they could matter; a
  caller that drops them (placing the waiting) passes why=False and gets NO_ROOM instead.

Each family of lists is built on first use, so a pool that only runs best_fit does not pay
for first_fit's lists. The numpy views (`allocated`, ...) are refreshed lazily from the
packed ints when read; the engine's decision path never reads them. Everything here is plain
data (lists, dicts, ints, numpy arrays): an index pickles and unpickles to the same decisions.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import lcm
from operator import mul

import numpy as np

from engine.policies.node_lists import (
    _FIELD,
    _FIELD_MASK,
    _ID_BITS,
    _ID_MASK,
    _Bag,
    _Blocks,
)
from engine.policies.placement import (
    DEFAULT_DIMENSIONS,
    POLICIES,
    Decision,
    Placed,
    Unplaceable,
    utilisation_score_row,
)

_STRIDE = _FIELD + 1  # plus one guard bit
_VALUE_LIMIT = 1 << 63
_LOAD = 64  # default block load: split above 2 * load entries, merge below load // 2
_DEMAND_CACHE = 4096  # distinct demand shapes remembered (instance specs: a few dozen)

Parts = tuple[int, ...] | None  # the parts a query may use, ascending; None: every part

# `place(..., why=False)`'s answer when nothing fits: non-empty, as an empty Unplaceable
# would read as placed to a caller that tests the reasons.
NO_ROOM = Unplaceable((("all", "no room"),))


class OverCommitError(ValueError):
    """Raised when an allocation would exceed capacity or a release would go below zero."""


class _Group:
    """Nodes of one part sharing one capacity row, sorted by exact normalised free capacity."""

    __slots__ = ("part", "cap", "packed", "weights", "denom", "exact", "lists", "bags")

    def __init__(self, part: int, cap: tuple[int, ...], packed: int) -> None:
        self.part = part
        self.cap = cap
        self.packed = packed  # cap, packed like free capacity
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
        # One sorted list per set of dimensions with free capacity left (packed guard bits)
        # that some demand can use; a bag for each of the others.
        self.lists: dict[int, _Blocks] = {}
        self.bags: dict[int, _Bag] = {}

    def key(self, vals: Sequence[int]) -> int:
        return sum(map(mul, vals, self.weights))


# What a query of one demand walks, for one choice of parts: per group (group, the demand's
# key in it, the group's lists with room in every dimension the demand needs), and the first
# fit lists likewise. Valid while the index's list count is `seen`.
_Candidates = tuple[int, list[tuple[_Group, int, list[_Blocks]]], list[_Blocks]]


class _Demand:
    """A demand with everything a query or update derives from it (cached per demand)."""

    __slots__ = ("vals", "packed", "gx", "needs", "keys", "seen", "groups", "by_index",
                 "walk", "restricted")

    def __init__(self, vals: list[int], packed: int, guard: int, ones: int) -> None:
        self.vals = vals
        self.packed = packed
        self.gx = guard - packed  # (free + gx) & guard == guard <=> free fits the demand
        self.needs = (packed + guard - ones) & guard  # guard bits of the non-zero dimensions
        self.keys: list[int] = []  # the demand's key in each capacity group, by group id
        # (kept complete: NodeIndex appends to every cached demand when a group is added)
        # The candidates over every part (the hot path), then per restricted set of parts.
        self.seen = -1
        self.groups: list[tuple[_Group, int, list[_Blocks]]] = []
        self.by_index: list[_Blocks] = []
        # The same groups flat, one row per list, as best_fit's hot path reads them:
        # (denominator, the demand's key, the lowest entry that can hold it, list).
        self.walk: list[tuple[int, int, int, _Blocks]] = []
        self.restricted: dict[tuple[int, ...], _Candidates] = {}


class NodeIndex:
    """Mutable index over one pool's nodes; `place` matches `placement.POLICIES` exactly for
    every policy, over the eligible nodes of the parts it is given (see module doc).

    The numpy views are snapshots: read them again after a mutation."""

    def __init__(
        self,
        capacity: np.ndarray,
        allocated: np.ndarray,
        eligible: np.ndarray,
        dimensions: Sequence[str] = DEFAULT_DIMENSIONS,
        block: int = _LOAD,
        parts: Sequence[int] | None = None,
    ) -> None:
        capacity = np.asarray(capacity, dtype=np.int64)
        allocated = np.asarray(allocated, dtype=np.int64)
        eligible = np.asarray(eligible, dtype=bool)
        n, d = capacity.shape
        if allocated.shape != (n, d) or eligible.shape != (n,):
            raise ValueError("capacity, allocated and eligible shapes disagree")
        if parts is not None and len(parts) != n:
            raise ValueError(f"{len(parts)} parts for {n} nodes")
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
        self._has_add = self._guard - self._ones  # (free + this) & guard: `has` of free
        room = max(16, n)
        self._cap = np.zeros((room, d), dtype=np.int64)
        self._alloc = np.zeros((room, d), dtype=np.int64)
        self._elig = np.zeros(room, dtype=bool)
        self._part_np = np.zeros(room, dtype=np.int64)  # for the scans' masks
        # Rows of _alloc behind _free, as flags: a set of node ids costs a cache miss per
        # update once it holds a large pool's nodes; n bytes stay in cache.
        self._stale = bytearray(room)
        self._free: list[int] = []  # packed free capacity
        self._cap_p: list[int] = []  # packed capacity
        self._cap_l: list[tuple[int, ...]] = []
        self._cap_max: tuple[int, ...] = ()
        self._elig_l: list[bool] = []
        self._part: list[int] = []
        self._has: list[int] = []  # guard bits of the dimensions with free capacity left
        self._gid: list[int] = []
        self._key: list[int] = []  # valid while the key lists exist
        self._groups: list[_Group] = []
        self._group_of: dict[tuple[int, tuple[int, ...]], int] = {}
        self._keyed = False  # best/worst fit lists built
        self._exact = True  # every group's scores are exact (else best/worst use the scan)
        self._dems: dict[tuple, _Demand] = {}
        self._list_count = 0  # lists ever created: a new one invalidates cached candidates
        # First fit lists, once built, by (part, dimensions with room); bags likewise.
        self._by_index: dict[tuple[int, int], _Blocks] | None = None
        self._by_index_bags: dict[tuple[int, int], _Bag] = {}
        # Every `has` seen, and whether some demand asked so far can use it (then its nodes
        # sit in sorted lists, else in bags); the `needs` of the demands asked so far.
        self._active: dict[int, bool] = {}
        self._has_obj: dict[int, int] = {}
        self._needs_seen: dict[int, None] = {}
        for i in range(n):
            self.add_node(capacity[i], allocated[i], bool(eligible[i]),
                          0 if parts is None else int(parts[i]))

    def __getstate__(self) -> dict:
        # Cached demands are derived data (they hold the lists they walk): not worth a pickle.
        state = self.__dict__.copy()
        state["_dems"] = {}
        return state

    # ---- views -------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._n

    @property
    def capacity(self) -> np.ndarray:
        return self._cap[: self._n]

    @property
    def allocated(self) -> np.ndarray:
        stale = self._stale
        for i in np.flatnonzero(np.frombuffer(stale, dtype=np.uint8)[: self._n]).tolist():
            self._alloc[i] = self._unpack(self._cap_p[i] - self._free[i])
            stale[i] = 0
        return self._alloc[: self._n]

    @property
    def eligible(self) -> np.ndarray:
        return self._elig[: self._n]

    def is_eligible(self, i: int) -> bool:
        return self._elig_l[i]

    def part_of(self, i: int) -> int:
        return self._part[i]

    def is_empty(self, i: int) -> bool:
        """Node i holds nothing (its free capacity is its capacity)."""
        return self._free[i] == self._cap_p[i]

    def fits(self, i: int, demand: Sequence[int] | np.ndarray) -> bool:
        """Node i has room for demand in every dimension (eligible or not)."""
        dem = self._demand(demand)
        return (self._free[i] + dem.gx) & self._guard == self._guard

    def capacity_of(self, i: int) -> tuple[int, ...]:
        return self._cap_l[i]

    def free_of(self, i: int) -> list[int]:
        """Node i's free capacity per dimension (no numpy: the engine's hot path reads it)."""
        return self._unpack(self._free[i])

    def allocated_of(self, i: int) -> list[int]:
        return self._unpack(self._cap_p[i] - self._free[i])

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

    def _has_of(self, free: int) -> int:
        """Guard bits of the dimensions where free >= 1, as the one shared int object for
        that value (at most 2**d): comparing and hashing a node's `has` then reads memory
        that stays in cache."""
        has = (free + self._has_add) & self._guard
        return self._has_obj.setdefault(has, has)

    # ---- mutation ----------------------------------------------------------------------
    def add_node(
        self, capacity_row: Sequence[int] | np.ndarray,
        allocated_row: Sequence[int] | np.ndarray | None = None, eligible: bool = True,
        part: int = 0,
    ) -> int:
        """Append a node (of `part`, for queries limited to some parts); returns its index."""
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
        self._part_np[i] = part
        free = self._pack([c - a for c, a in zip(cap, alloc, strict=True)])
        g = self._group_of.get((part, cap))
        if g is None:
            g = self._group_of[(part, cap)] = len(self._groups)
            self._groups.append(_Group(part, cap, self._pack(cap)))
            for dem in self._dems.values():
                dem.keys.append(self._groups[g].key(dem.vals))
            self._list_count += 1  # cached candidates list no lists for this group yet
            self._exact = self._exact and self._groups[g].exact
        group = self._groups[g]
        self._free.append(free)
        self._cap_p.append(group.packed)  # one object per group: no per-node cache line
        self._cap_l.append(group.cap)
        self._cap_max = tuple(map(max, self._cap_max, cap)) if self._cap_max else cap
        self._elig_l.append(eligible)
        self._part.append(part)
        self._has.append(self._has_of(free))
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
        self._part_np = bigger(self._part_np)
        self._stale.extend(bytes(room - len(self._stale)))

    def _list(self, lists: dict, key: int | tuple[int, int]) -> _Blocks:
        lst = lists.get(key)
        if lst is None:
            lst = lists[key] = _Blocks(self._free, self._guard, self._load)
            self._list_count += 1
        return lst

    def _bag(self, bags: dict, key: int | tuple[int, int]) -> _Bag:
        bag = bags.get(key)
        if bag is None:
            bag = bags[key] = _Bag(self._free, self._guard)
        return bag

    def _is_active(self, has: int) -> bool:
        """Whether nodes with room in exactly `has` are kept sorted (a demand asked so far
        can use them). A `has` seen for the first time is decided here."""
        active = self._active.get(has)
        if active is None:
            active = self._active[has] = any(has & n == n for n in self._needs_seen)
        return active

    def _activate(self, needs: int) -> None:
        """A demand needing `needs` is asked for: sort every bag it could use into a list."""
        if needs in self._needs_seen:
            return
        self._needs_seen[needs] = None
        for has, active in list(self._active.items()):
            if active or has & needs != needs:
                continue
            self._active[has] = True
            for g in self._groups:
                bag = g.bags.pop(has, None)
                if bag is not None and bag.entries:
                    keys = self._key
                    g.lists[has] = _Blocks(self._free, self._guard, self._load,
                                           sorted((keys[i] << _ID_BITS) | i for i in bag))
                    self._list_count += 1
            for key in [k for k in self._by_index_bags if k[1] == has]:
                bag = self._by_index_bags.pop(key)
                if bag.entries and self._by_index is not None:
                    self._by_index[key] = _Blocks(self._free, self._guard, self._load,
                                                  sorted(bag))
                    self._list_count += 1

    def _candidates(self, dem: _Demand, parts: Parts) -> _Candidates:
        """dem's candidate lists for these parts (nodes out of a dimension it needs are
        never candidates: those lists are skipped without a look)."""
        needs = dem.needs
        self._activate(needs)
        allowed = None if parts is None else frozenset(parts)
        groups = [(g, need, [lst for has, lst in g.lists.items() if has & needs == needs])
                  for g, need in zip(self._groups, dem.keys, strict=True)
                  if allowed is None or g.part in allowed]
        by_index = [lst for (part, has), lst in (self._by_index or {}).items()
                    if has & needs == needs and (allowed is None or part in allowed)]
        return self._list_count, groups, by_index

    def _cands(self, dem: _Demand, parts: Parts) -> _Candidates:
        if parts is None:
            if dem.seen != self._list_count:
                dem.seen, dem.groups, dem.by_index = self._candidates(dem, None)
                dem.walk = [(g.denom, need, need << _ID_BITS, lst)
                            for g, need, lists in dem.groups for lst in lists]
            return dem.seen, dem.groups, dem.by_index
        got = dem.restricted.get(parts)
        if got is None or got[0] != self._list_count:
            if len(dem.restricted) >= 256:  # selectors are few; bound them all the same
                dem.restricted.clear()
            got = dem.restricted[parts] = self._candidates(dem, parts)
        return got

    def _enter(self, i: int) -> None:
        """Put eligible node i into the lists (or bags) that exist."""
        has, f = self._has[i], self._free[i]
        active = self._is_active(has)
        if self._keyed:
            g = self._groups[self._gid[i]]
            if active:
                self._list(g.lists, has).add((self._key[i] << _ID_BITS) | i, f)
            else:
                self._bag(g.bags, has).add(i, f)
        if self._by_index is not None:
            key = (self._part[i], has)
            if active:
                self._list(self._by_index, key).add(i, f)
            else:
                self._bag(self._by_index_bags, key).add(i, f)

    def _leave(self, i: int) -> None:
        has = self._has[i]
        active = self._active[has]
        if self._keyed:
            g = self._groups[self._gid[i]]
            if active:
                g.lists[has].remove((self._key[i] << _ID_BITS) | i)
            else:
                g.bags[has].remove(i)
        if self._by_index is not None:
            key = (self._part[i], has)
            if active:
                self._by_index[key].remove(i)
            else:
                self._by_index_bags[key].remove(i)

    def _set_free(self, i: int, new: int, dem: _Demand, sign: int) -> None:
        """Node i's free capacity becomes `new` (= old + sign * demand). The hot path of
        every update: written out flat, since each call or lookup here costs per placement."""
        self._free[i] = new
        self._stale[i] = 1
        has_of = self._has
        old_has = has_of[i]
        has = (new + self._has_add) & self._guard
        if has != old_has:
            has = has_of[i] = self._has_obj.setdefault(has, has)  # shared object: see _has_of
        keyed = self._keyed
        if keyed:
            gid = self._gid[i]
            old_key = self._key[i]
            key = self._key[i] = old_key + sign * dem.keys[gid]
        if not self._elig_l[i]:
            return
        active = self._active
        was_sorted = active[old_has]
        if has == old_has:
            if keyed:
                g = self._groups[gid]
                if was_sorted:
                    g.lists[has].move((old_key << _ID_BITS) | i, (key << _ID_BITS) | i, new,
                                      sign > 0)
                elif sign > 0:
                    g.bags[has].grew(i, new)
            if self._by_index is not None and sign > 0:  # less free: bounds still hold
                if was_sorted:
                    self._by_index[(self._part[i], has)].raise_bound(i, new)
                else:
                    self._by_index_bags[(self._part[i], has)].grew(i, new)
            return
        is_sorted = active.get(has)
        if is_sorted is None:
            is_sorted = self._is_active(has)
        if keyed:
            g = self._groups[gid]
            if was_sorted:
                g.lists[old_has].remove((old_key << _ID_BITS) | i)
            else:
                g.bags[old_has].remove(i)
            if is_sorted:
                lst = g.lists.get(has)
                if lst is None:
                    lst = self._list(g.lists, has)
                lst.add((key << _ID_BITS) | i, new)
            else:
                bag = g.bags.get(has)
                if bag is None:
                    bag = self._bag(g.bags, has)
                bag.add(i, new)
        if self._by_index is not None:
            part = self._part[i]
            if was_sorted:
                self._by_index[(part, old_has)].remove(i)
            else:
                self._by_index_bags[(part, old_has)].remove(i)
            if is_sorted:
                self._list(self._by_index, (part, has)).add(i, new)
            else:
                self._bag(self._by_index_bags, (part, has)).add(i, new)

    def allocate(self, i: int, demand: Sequence[int] | np.ndarray) -> None:
        """Reserve `demand` on node i; raises OverCommitError rather than exceed capacity."""
        dem = self._dems.get(tuple(demand)) or self._demand(demand)
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
        dem = self._dems.get(tuple(demand)) or self._demand(demand)
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
            if len(self._dems) >= _DEMAND_CACHE:
                self._dems.clear()
            dem = self._dems[t] = _Demand(vals, self._pack(vals), self._guard, self._ones)
            dem.keys = [g.key(vals) for g in self._groups]
        return dem

    def _build_keyed(self) -> None:
        per: dict[tuple[int, int], list[int]] = {}
        for i in range(self._n):
            g = self._groups[self._gid[i]]
            self._key[i] = g.key(self._unpack(self._free[i]))
            if self._elig_l[i]:
                per.setdefault((self._gid[i], self._has[i]), []).append(i)
        for (gid, has), nodes in per.items():
            g = self._groups[gid]
            if self._active[has]:
                entries = sorted((self._key[i] << _ID_BITS) | i for i in nodes)
                g.lists[has] = _Blocks(self._free, self._guard, self._load, entries)
                self._list_count += 1
            else:
                bag = self._bag(g.bags, has)
                for i in nodes:
                    bag.add(i, self._free[i])
        self._keyed = True

    def _build_by_index(self) -> None:
        per: dict[tuple[int, int], list[int]] = {}
        for i in range(self._n):
            if self._elig_l[i]:
                per.setdefault((self._part[i], self._has[i]), []).append(i)
        self._by_index = {}
        for key, nodes in per.items():
            if self._active[key[1]]:
                self._by_index[key] = _Blocks(self._free, self._guard, self._load, nodes)
            else:
                bag = self._bag(self._by_index_bags, key)
                for i in nodes:
                    bag.add(i, self._free[i])
        self._list_count += len(per) + 1  # +1: `per` may be empty, the dict is still new

    # ---- queries -----------------------------------------------------------------------
    def place(self, demand: Sequence[int] | np.ndarray, policy: str = "best_fit",
              parts: Parts = None, why: bool = True) -> Decision:
        """Choose a node among the eligible nodes of `parts` (ascending part ids; None: all).
        Does not allocate: call `allocate` with the result. `why=False`: a caller that only
        asks whether something fits gets NO_ROOM instead of the reasons (not worked out)."""
        dem = self._dems.get(tuple(demand)) or self._demand(demand)
        if (policy == "best_fit" and parts is None and dem.seen == self._list_count
                and self._keyed and self._exact):  # the hot path, in short
            i, score = self._best_fit(dem.gx, dem.walk)
            if i >= 0:
                return Placed(i, policy, score)
        if policy == "best_fit" or policy == "worst_fit":
            if self._exact:
                if not self._keyed:
                    self._build_keyed()
                _, groups, _ = self._cands(dem, parts)
                found = self._sorted_fit(dem, groups, policy == "best_fit")
                if found is not None:
                    return Placed(found[0], policy, found[1])
                return self._unplaceable(dem, parts, keyed=True) if why else NO_ROOM
        elif policy == "first_fit":
            if self._by_index is None:
                self._build_by_index()
            _, _, by_index = self._cands(dem, parts)
            i = self._first_fit(dem, by_index)
            if i is not None:
                return Placed(i, policy, self._utilisation_score(i, dem))
            return self._unplaceable(dem, parts, keyed=False) if why else NO_ROOM
        elif policy != "dot_product":
            raise KeyError(f"unknown policy {policy!r}; known: {sorted(POLICIES)}")
        # dot_product, or best/worst fit over a row whose scores are not exact: the scan.
        return POLICIES[policy](self.capacity, self.allocated, self._eligible_in(parts),
                                np.asarray(dem.vals, dtype=np.int64), self.dimensions)

    def _eligible_in(self, parts: Parts) -> np.ndarray:
        if parts is None:
            return self.eligible
        return self.eligible & np.isin(self._part_np[: self._n], np.asarray(parts, dtype=np.int64))

    def _utilisation_score(self, i: int, dem: _Demand) -> float:
        """= placement.utilisation_score_row for node i and dem: same integers, same division."""
        gid = self._gid[i]
        g = self._groups[gid]
        free = self._unpack(self._free[i])
        if g.exact:
            return (g.denom - g.key(free) + dem.keys[gid]) / g.denom
        cap = self._cap_l[i]
        alloc = [c - f for c, f in zip(cap, free, strict=True)]
        return utilisation_score_row(cap, alloc, dem.vals)

    def _first_fit(self, dem: _Demand, by_index: list[_Blocks]) -> int | None:
        gx = dem.gx
        best: int | None = None
        for lst in by_index:
            e = lst.first_fit(0, best, gx)
            if e is not None:
                best = e
        return best

    @staticmethod
    def _best_fit(gx: int, walk: list[tuple[int, int, int, _Blocks]]) -> tuple[int, float]:
        """best_fit over the candidates: (node, score), node -1 if none fits. The same as
        `_sorted_fit(most=True)`, kept lean: it runs once per placement. One row per list:
        two lists of one group compare by score like two groups (within a group distinct
        keys never round to the same float, so the smaller key wins, then the lower index)."""
        best_i = -1
        best_score = 0.0
        hi = None
        for denom, need, lo, lst in walk:
            # lo is the demand's own key: no node with a smaller key can hold it.
            if best_i >= 0:
                # Keys above this cannot reach best_score (+1 keeps float-equal ties).
                hi = (int(denom * (1.0 - best_score)) + need + 2) << _ID_BITS
            e = lst.first_fit(lo, hi, gx)
            if e is not None:
                score = (denom - (e >> _ID_BITS) + need) / denom  # sum (alloc + demand)/cap
                i = e & _ID_MASK
                # Compare the correctly rounded floats, as the plain policy does.
                if best_i < 0 or score > best_score or (score == best_score and i < best_i):
                    best_i, best_score = i, score
        return best_i, best_score

    def _sorted_fit(self, dem: _Demand, groups: list[tuple[_Group, int, list[_Blocks]]],
                    most: bool) -> tuple[int, float] | None:
        gx = dem.gx
        best_i = -1
        best_score = 0.0
        for g, need, lists in groups:
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

    def _unplaceable(self, dem: _Demand, parts: Parts, keyed: bool) -> Unplaceable:
        """placement.unplaceable_reasons over the eligible nodes of `parts`, from the lists:
        a block's bound is made exact only while it could still be the largest free."""
        allowed = None if parts is None else frozenset(parts)
        lists: list[_Blocks | _Bag]
        if keyed:
            lists = [lst for g in self._groups if allowed is None or g.part in allowed
                     for lst in (*g.lists.values(), *g.bags.values()) if lst.bounds]
        else:
            lists = [lst for (part, _), lst in (*(self._by_index or {}).items(),
                                                 *self._by_index_bags.items())
                     if lst.bounds and (allowed is None or part in allowed)]
        if not lists:
            return Unplaceable((("nodes", f"no eligible node among {self._n}"),))
        blocks = [(lst, b) for lst in lists for b in range(len(lst.bounds))]
        reasons = []
        for name, need, s in zip(self.dimensions, dem.vals, self._shifts, strict=True):
            largest = self._largest(blocks, s) if need else 0
            if need > largest:
                reasons.append((name, f"insufficient: need {need}, largest free {largest}"))
        if not reasons:
            reasons.append(
                ("all", "fragmented: every dimension fits on some node but none fits all"))
        return Unplaceable(tuple(reasons))

    @staticmethod
    def _largest(blocks: list[tuple[_Blocks | _Bag, int]], shift: int) -> int:
        """The exact largest free of one dimension over these blocks' nodes."""
        loose = sorted(((lst.bounds[b] >> shift) & _FIELD_MASK, k)
                       for k, (lst, b) in enumerate(blocks))
        largest = -1
        for bound, k in reversed(loose):
            if bound <= largest:
                break
            lst, b = blocks[k]
            largest = max(largest, (lst.tighten(b) >> shift) & _FIELD_MASK)
        return largest

