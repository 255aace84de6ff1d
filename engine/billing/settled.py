"""Deleted instances' usage, packed, until every period they billed in is finalised
(docs/design.md §7.4).

Deleted is terminal: no event of the instance follows, so once no late report waits on it
its billed intervals never change again, and all finalisation still needs of it is what
`Usage` rates: name, account, runtime, billed and requested spec, and the intervals as
integers. A month of 100,000 launches a day is 3M such instances in a cell; as `Metered`
objects in dicts and sets they took ~600 bytes each. Here each is a row of numpy columns --
a profile number (account, runtime and both specs: a few per cell, shared by spelling), the
name's UTF-8 bytes and its intervals' microseconds -- about 40 bytes. Rows are gathered as
tuples and frozen every SEGMENT rows; a row leaves once all its intervals end before the
closed periods' end (finalised, and deleted: no late report can reach it).

Plain data (tuples, bytes, numpy arrays), so it pickles into a snapshot.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from engine.billing.meter import Interval
from engine.billing.periods import US_PER_S, period_bounds
from engine.billing.usage import Usage
from engine.policies.spec_catalogue import Spec

SEGMENT = 8192  # rows gathered before they are frozen into arrays
# (account, runtime, billed spec, requested spec): what many instances of a cell share.
Profile = tuple[str, str, Spec, Spec]
Row = tuple[int, str, tuple[tuple[int, int], ...]]  # (profile number, name, intervals)


@dataclass(slots=True, eq=False)
class _Segment:
    """Frozen rows: row i's name is names[name_ends[i-1]:name_ends[i]], its intervals are
    starts/ends[interval_ends[i-1]:interval_ends[i]] (epoch microseconds). Offsets are
    int32: a segment holds at most SEGMENT rows of bounded names."""

    profiles: np.ndarray
    names: bytes
    name_ends: np.ndarray
    interval_ends: np.ndarray
    starts: np.ndarray
    ends: np.ndarray

    @classmethod
    def of(cls, rows: Sequence[Row]) -> _Segment:
        names = [name.encode() for _, name, _ in rows]
        intervals = [iv for _, _, ivs in rows for iv in ivs]
        return cls(np.array([r[0] for r in rows], dtype=np.int32), b"".join(names),
                   np.cumsum([len(n) for n in names], dtype=np.int32),
                   np.cumsum([len(r[2]) for r in rows], dtype=np.int32),
                   np.array([t0 for t0, _ in intervals], dtype=np.int64),
                   np.array([t1 for _, t1 in intervals], dtype=np.int64))

    def __len__(self) -> int:
        return len(self.profiles)

    def rows(self, picks: Sequence[int] | None = None) -> list[Row]:
        """Rows `picks` (all if None) back as tuples: the columns turn into lists once."""
        profiles, name_ends = self.profiles.tolist(), [0, *self.name_ends.tolist()]
        interval_ends = [0, *self.interval_ends.tolist()]
        pairs = list(zip(self.starts.tolist(), self.ends.tolist(), strict=True))
        return [(profiles[i], self.names[name_ends[i]:name_ends[i + 1]].decode(),
                 tuple(pairs[interval_ends[i]:interval_ends[i + 1]]))
                for i in (range(len(profiles)) if picks is None else picks)]

    def rows_where(self, hits: np.ndarray) -> np.ndarray:
        """The rows (sorted, once each) owning an interval marked in `hits`."""
        return np.unique(np.searchsorted(self.interval_ends, np.flatnonzero(hits), "right"))

    def touching(self, lo_s: int, hi_s: int) -> np.ndarray:
        """Rows with a non-empty interval holding a second of [lo_s, hi_s)."""
        s0, s1 = self.starts // US_PER_S, -(-self.ends // US_PER_S)
        return self.rows_where((self.ends > self.starts) & (s0 < hi_s) & (s1 > lo_s))

    def ending_from(self, t_us: int) -> np.ndarray:
        """Rows with an interval ending at or after `t_us`."""
        return self.rows_where(self.ends >= t_us)


class Settled:
    """A cell's deleted instances whose billing is settled but not yet all finalised."""

    def __init__(self) -> None:
        self.profiles: list[Profile] = []
        self.profile_numbers: dict[tuple[str, ...], int] = {}  # by spelling
        self.recent: list[Row] = []
        self.segments: list[_Segment] = []

    def add(self, usage: Usage) -> None:
        self.recent.append((self._profile(usage), usage.name,
                            tuple((iv[0], iv[1]) for iv in usage.intervals)))
        if len(self.recent) >= SEGMENT:
            self.segments.append(_Segment.of(self.recent))
            self.recent = []

    def _profile(self, u: Usage) -> int:
        # By spelling, not value: "0.5" and "0.50" bill apart (docs/design.md §2.2).
        key = (u.account, u.runtime, str(u.spec.vcpu), str(u.spec.memory_gib),
               str(u.requested.vcpu), str(u.requested.memory_gib))
        number = self.profile_numbers.get(key)
        if number is None:
            number = self.profile_numbers[key] = len(self.profiles)
            self.profiles.append((u.account, u.runtime, u.spec, u.requested))
        return number

    def __len__(self) -> int:
        return len(self.recent) + sum(len(s) for s in self.segments)

    def touching(self, period: str) -> Iterator[Usage]:
        """The instances billed in `period` (a non-empty interval holds one of its seconds):
        those a close of `period` rates."""
        lo, hi = period_bounds(period)
        for row in self.recent:
            if any(t1 > t0 and t0 // US_PER_S < hi and -(-t1 // US_PER_S) > lo
                   for t0, t1 in row[2]):
                yield self._usage(row)
        for segment in self.segments:
            for row in segment.rows(segment.touching(lo, hi).tolist()):
                yield self._usage(row)

    def finalised_before(self, end_us: int) -> None:
        """Periods up to `end_us` are finalised: the rows all of whose intervals end before
        it bill nothing more, and leave."""
        self.recent = [row for row in self.recent if max(t1 for _, t1 in row[2]) >= end_us]
        kept = []
        for segment in self.segments:
            rows = segment.ending_from(end_us)
            if len(rows) == len(segment):
                kept.append(segment)
            elif len(rows):
                kept.append(_Segment.of(segment.rows(rows.tolist())))
        self.segments = kept

    def __iter__(self) -> Iterator[Usage]:
        """Every instance held (for tools and tests)."""
        for row in self.recent:
            yield self._usage(row)
        for segment in self.segments:
            for row in segment.rows():
                yield self._usage(row)

    def _usage(self, row: Row) -> Usage:
        account, runtime, spec, requested = self.profiles[row[0]]
        intervals: list[Interval] = [[t0, t1] for t0, t1 in row[2]]
        return Usage(row[1], account, runtime, spec, requested, intervals)
