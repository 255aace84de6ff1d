"""The sorted blocked lists and unordered bags `node_index.NodeIndex` keeps nodes in.

A node's free capacity is one packed Python int (see node_index): dimension k occupies bits
[65k, 65k + 64) and bit 65k + 64 is a guard, so "free >= demand in every dimension" and a
per-dimension max are a few big-int operations. Both containers hold node references and a
packed upper bound of their nodes' free capacity per block (or chunk), so a search can skip
what cannot hold a demand, and the reasons for a failed placement can be made exact.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterator, Sequence

_ID_BITS = 24  # a sort entry is (key << 24) | node, so ties in key order by node index
_ID_MASK = (1 << _ID_BITS) - 1
_FIELD = 64  # bits per packed dimension; values are int64, so < 2**63 always fits
_FIELD_MASK = (1 << _FIELD) - 1
_CHUNK_BITS = 6
_CHUNK = 1 << _CHUNK_BITS  # slots per bound of a _Bag


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
    for; a node entering the block or gaining free capacity clears those it fits, and leaving
    never makes room."""

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
        self.misses: list[set[int] | None] = []  # membership tests only: order never matters
        for lo in range(0, len(entries), load):
            blk = list(entries[lo : lo + load])
            self.blocks.append(blk)
            self.lasts.append(blk[-1])
            self.bounds.append(self._bound(blk))
            self.misses.append(None)

    def __iter__(self) -> Iterator[int]:  # for tests and checks
        for blk in self.blocks:
            yield from blk

    def __len__(self) -> int:
        return sum(map(len, self.blocks))

    def _bound(self, blk: list[int]) -> int:
        free, guard, mask = self.free, self.guard, _ID_MASK
        bound = 0
        for e in blk:
            f = free[e & mask]
            if (bound + guard - f) & guard != guard:  # f exceeds the bound somewhere
                bound = _vmax(bound, f, guard)
        return bound

    def _forget(self, b: int, f: int) -> None:
        """A node with free f entered block b or grew to f: the remembered misses it fits
        are no longer misses (the others still are: checking f alone keeps them)."""
        miss = self.misses[b]
        if miss is not None:
            guard = self.guard
            self.misses[b] = {gx for gx in miss if (f + gx) & guard != guard} or None

    def tighten(self, b: int) -> int:
        """Make block b's bound exact (the per-dimension max of its nodes' free); returns it."""
        bound = self.bounds[b] = self._bound(self.blocks[b])
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
        if self.misses[b] is not None:
            self._forget(b, f)
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
        left, right = self.misses[a], self.misses[a + 1]
        del self.blocks[a + 1], lasts[a + 1], self.bounds[a + 1], self.misses[a + 1]
        self.blocks[a] = merged
        lasts[a] = merged[-1]
        self.bounds[a] = bound
        # A demand both halves had no room for, the whole has none for either.
        self.misses[a] = (left & right) or None if left is not None and right is not None else None
        if len(merged) > 2 * self.load:
            self._split(a)

    def move(self, old: int, new: int, f: int, grew: bool) -> None:
        """Replace entry old by new, whose node now has free capacity f (`grew`: more than
        before; less free keeps the block's bound and remembered misses true)."""
        lasts = self.lasts
        b = bisect_left(lasts, old)
        blk = self.blocks[b]
        if (new <= lasts[b] or b + 1 == len(lasts) or new < self.blocks[b + 1][0]) and (
                b == 0 or new > lasts[b - 1]):
            # Stays in this block: no second search, no split or merge.
            del blk[bisect_left(blk, old)]
            insort(blk, new)
            lasts[b] = blk[-1]
            if grew:
                self.bounds[b] = _vmax(self.bounds[b], f, self.guard)
                if self.misses[b] is not None:
                    self._forget(b, f)
        else:
            self.remove(old)
            self.add(new, f)

    def raise_bound(self, e: int, f: int) -> None:
        """Entry e's node gained free capacity f (its position is unchanged)."""
        b = bisect_left(self.lasts, e)
        self.bounds[b] = _vmax(self.bounds[b], f, self.guard)
        if self.misses[b] is not None:
            self._forget(b, f)

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
        if b == nb:
            return None
        if hi is None:
            hi = lasts[-1] + 1
        guard, free, blocks, bounds = self.guard, self.free, self.blocks, self.bounds
        mask = _ID_MASK
        while b < nb:
            blk = blocks[b]
            if blk[0] >= hi:
                return None
            if (bounds[b] + gx) & guard == guard:
                if blk[0] >= lo and lasts[b] < hi:  # all of the block
                    miss = self.misses[b]
                    if miss is None or gx not in miss:
                        for e in blk:
                            if (free[e & mask] + gx) & guard == guard:
                                return e
                        self._missed(b, gx)
                else:
                    k = bisect_left(blk, lo) if blk[0] < lo else 0
                    for e in blk[k : bisect_left(blk, hi, k)]:
                        if (free[e & mask] + gx) & guard == guard:
                            return e
                    if lasts[b] >= hi:
                        return None  # the next block starts beyond hi
            elif lasts[b] >= hi:
                return None
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


class _Bag:
    """Unordered nodes, in chunks of `_CHUNK` slots, each chunk with a packed upper bound of
    its nodes' free capacity (for the reasons of a failed placement): O(1) add and remove."""

    __slots__ = ("entries", "pos", "bounds", "free", "guard")

    def __init__(self, free: list[int], guard: int) -> None:
        self.free = free  # shared with NodeIndex
        self.guard = guard
        self.entries: list[int] = []  # node indices
        self.pos: dict[int, int] = {}  # node -> slot in entries
        self.bounds: list[int] = []

    def __iter__(self) -> Iterator[int]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def _cover(self, slot: int, f: int) -> None:
        c = slot >> _CHUNK_BITS
        bound, guard = self.bounds[c], self.guard
        if (bound + guard - f) & guard != guard:
            self.bounds[c] = _vmax(bound, f, guard)

    def add(self, i: int, f: int) -> None:
        entries, bounds = self.entries, self.bounds
        slot = len(entries)
        entries.append(i)
        self.pos[i] = slot
        c = slot >> _CHUNK_BITS
        if c == len(bounds):
            bounds.append(f)
        else:
            bound, guard = bounds[c], self.guard
            if (bound + guard - f) & guard != guard:
                bounds[c] = _vmax(bound, f, guard)

    def remove(self, i: int) -> None:
        entries = self.entries
        slot = self.pos.pop(i)
        last = entries.pop()
        if last != i:  # the last node fills the hole
            entries[slot] = last
            self.pos[last] = slot
            self._cover(slot, self.free[last])
        if not len(entries) & (_CHUNK - 1):  # the last chunk is empty now
            self.bounds.pop()

    def grew(self, i: int, f: int) -> None:
        """Node i gained free capacity f."""
        self._cover(self.pos[i], f)

    def tighten(self, c: int) -> int:
        free, guard = self.free, self.guard
        bound = 0
        for i in self.entries[c << _CHUNK_BITS : (c + 1) << _CHUNK_BITS]:
            f = free[i]
            if (bound + guard - f) & guard != guard:
                bound = _vmax(bound, f, guard)
        self.bounds[c] = bound
        return bound
