"""The command ids a cell remembers for the retention window (docs/design.md §7.4), kept as
pointers into its command log, not as outcomes.

A busy cell handles about 470,000 commands a day: seven days of outcomes as dicts took
gigabytes. What a repeat needs is in the log already (the cell log's `CommandsHandled`
entry), so memory keeps per id only a 64-bit hash of (principal, command_id), the batch's
time and where its entry lies (cell-log version, index): 28 bytes in sorted numpy segments,
which a snapshot pickles as a few arrays. A repeat (rare) reads its entry back from the log
and checks its principal and id, so a hash collision is never taken for a repeat.

Entries of the batch being decided are not stored yet: they stay whole (`pending`) until
the batch's `CommandsHandled` event is observed, which gives them their place in the log.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import numpy as np

OutcomeKey = tuple[str, str]  # (principal, command_id)
Location = tuple[int, int, int]  # (time in µs, cell-log version, index in the batch)
# Reads the entries of one cell-log event back, by its version (None: not in the log).
ReadEntries = Callable[[int], list[dict[str, Any]] | None]

SEGMENT = 50_000  # entries gathered before they are frozen into sorted arrays
MERGED_AT_MOST = 800_000  # rows of a segment made by merging (22 MB)
UNSTAMPED = -1  # remembered before the cell had a clock: stamped with its first clock


def key_hash(principal: str, command_id: str) -> int:
    """Stable across processes (a snapshot holds it), unlike `hash()`."""
    digest = hashlib.blake2b(f"{principal}\0{command_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


class _Segment:
    """Frozen entries, sorted by hash: a lookup is a binary search."""

    def __init__(self, rows: list[tuple[int, int, int, int]]) -> None:
        rows.sort()
        self.hashes = np.array([r[0] for r in rows], dtype=np.uint64)
        self.times = np.array([r[1] for r in rows], dtype=np.int64)
        self.versions = np.array([r[2] for r in rows], dtype=np.int64)
        self.indexes = np.array([r[3] for r in rows], dtype=np.int32)
        self.newest = max(r[1] for r in rows)

    @classmethod
    def merged(cls, older: _Segment, newer: _Segment, keep: Callable[[Any], Any]) -> _Segment:
        """One segment holding the rows of both that `keep` (a mask of their times) keeps,
        sorted by hash."""
        segment = cls.__new__(cls)
        times = np.concatenate([older.times, newer.times])
        hashes = np.concatenate([older.hashes, newer.hashes])
        kept = np.flatnonzero(keep(times))
        order = kept[np.argsort(hashes[kept], kind="stable")]
        segment.hashes, segment.times = hashes[order], times[order]
        for name in ("versions", "indexes"):
            setattr(segment, name, np.concatenate([getattr(older, name),
                                                   getattr(newer, name)])[order])
        segment.newest = max(older.newest, newer.newest)
        return segment

    def candidates(self, h: int) -> list[Location]:
        key = np.uint64(h)
        lo = int(np.searchsorted(self.hashes, key, "left"))
        if lo == len(self.hashes) or self.hashes[lo] != key:
            return []  # the usual answer (a new id): one search, not two
        hi = int(np.searchsorted(self.hashes, key, "right"))
        found = [(int(self.times[i]), int(self.versions[i]), int(self.indexes[i]))
                 for i in range(lo, hi)]
        return sorted(found, key=lambda x: x[1:], reverse=True)  # newest first

    def __len__(self) -> int:
        return len(self.hashes)


class IdMemory:
    """Per cell: which (principal, command_id) were decided within the window, and where
    their outcome is recorded."""

    def __init__(self) -> None:
        self.pending: dict[OutcomeKey, dict[str, Any]] = {}  # this batch's, not stored yet
        self.recent: dict[int, list[Location]] = {}  # not yet frozen, by hash
        self.recent_count = 0
        self.segments: list[_Segment] = []  # oldest first
        self.first_clock: int | None = None  # µs: the time of entries remembered unstamped
        self.horizon: int | None = None  # µs: entries older than this are forgotten
        self.reader: ReadEntries | None = None  # set by the world; not pickled
        self._last: tuple[OutcomeKey, dict[str, Any]] | None = None

    # --- remembering ---------------------------------------------------------------------

    def remember_pending(self, key: OutcomeKey, entry: dict[str, Any]) -> None:
        """An entry decided in the batch at hand (before its cell-log event exists)."""
        self.pending[key] = entry

    def remember(self, entries: list[dict[str, Any]], version: int,
                 clock: datetime | None) -> None:
        """The entries of one stored cell-log event, at its version, stamped `clock`."""
        at = UNSTAMPED if clock is None else _micros(clock)
        if clock is not None and self.first_clock is None:
            self.first_clock = at
        for index, entry in enumerate(entries):
            key = (entry.get("principal", ""), entry["command_id"])
            self.pending.pop(key, None)
            self.recent.setdefault(key_hash(*key), []).append((at, version, index))
            self.recent_count += 1
        self._last = None
        if self.recent_count >= SEGMENT:
            self._freeze()

    def forget_before(self, horizon: datetime) -> None:
        """Forget what was recorded before `horizon` (the clock never goes back, so neither
        does the horizon); whole segments leave memory once all their entries are older."""
        self.horizon = _micros(horizon)
        self.segments = [s for s in self.segments if self._time(s.newest) >= self.horizon]
        self._last = None

    def _freeze(self) -> None:
        horizon = self.horizon
        rows = [(h, *loc) for h, locs in self.recent.items() for loc in locs
                if horizon is None or self._time(loc[0]) >= horizon]
        if rows:
            # A miss (every new command) searches every segment: keep them few. The newest
            # absorbs the one before it while that one is no larger, so sizes double like a
            # binary counter, up to MERGED_AT_MOST rows: a week of a busy cell's ids is about
            # ten segments, not seventy, and old ids still leave memory a segment at a time.
            # Only neighbours merge, so the segments stay ordered oldest first.
            segment = _Segment(rows)
            while self.segments and len(self.segments[-1]) <= len(segment) \
                    and len(self.segments[-1]) + len(segment) <= MERGED_AT_MOST:
                segment = _Segment.merged(self.segments.pop(), segment, self._unforgotten)
            self.segments.append(segment)
        self.recent, self.recent_count = {}, 0

    # --- looking up ----------------------------------------------------------------------

    def entry(self, key: OutcomeKey) -> dict[str, Any] | None:
        """The cell-log entry of this id's newest outcome within the window, if any."""
        if key in self.pending:
            return self.pending[key]
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        h = key_hash(*key)
        for locations in self._candidates(h):
            for at, version, index in locations:
                entry = self._read(version, index)
                if entry is None or (entry.get("principal", ""), entry["command_id"]) != key:
                    continue  # another id with the same hash
                if self.horizon is not None and self._time(at) < self.horizon:
                    return None  # its newest outcome is forgotten
                self._last = (key, entry)
                return entry
        return None

    def __contains__(self, key: object) -> bool:
        return isinstance(key, tuple) and self.entry(key) is not None  # type: ignore[arg-type]

    def keys(self) -> Iterator[OutcomeKey]:
        """Every id remembered (reads every entry back: for tools and tests)."""
        seen: set[OutcomeKey] = set()
        for entries in self._all_entries():
            for entry in entries:
                key = (entry.get("principal", ""), entry["command_id"])
                if key not in seen and key in self:
                    seen.add(key)
                    yield key

    def __len__(self) -> int:
        return sum(1 for _ in self.keys())

    def _candidates(self, h: int) -> Iterator[list[Location]]:
        recent = self.recent.get(h)
        if recent:
            yield sorted(recent, key=lambda x: x[1:], reverse=True)
        for segment in reversed(self.segments):
            found = segment.candidates(h)
            if found:
                yield found

    def _all_entries(self) -> Iterator[list[dict[str, Any]]]:
        yield list(self.pending.values())
        versions = {v for locs in self.recent.values() for _, v, _ in locs}
        for segment in self.segments:
            versions.update(int(v) for v in segment.versions)
        for version in sorted(versions):
            yield self._entries(version)

    def _read(self, version: int, index: int) -> dict[str, Any] | None:
        entries = self._entries(version)
        return entries[index] if index < len(entries) else None

    def _entries(self, version: int) -> list[dict[str, Any]]:
        if self.reader is None:
            raise RuntimeError("this cell's id memory has no log to read outcomes back from")
        return self.reader(version) or []

    def _unforgotten(self, times: Any) -> Any:
        """Which of these times (an array) lie within the window."""
        if self.horizon is None:
            return np.ones(len(times), dtype=bool)
        first = self.first_clock if self.first_clock is not None else UNSTAMPED
        return np.where(times == UNSTAMPED, first, times) >= self.horizon

    def _time(self, at: int) -> int:
        return self.first_clock if at == UNSTAMPED and self.first_clock is not None else at

    # --- snapshots -----------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        # The reader belongs to the process (it reads this store); the world sets it again.
        return {k: v for k, v in vars(self).items() if k not in ("reader", "_last")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        vars(self).update(state)
        self.reader, self._last = None, None


def _micros(at: datetime) -> int:
    return int(at.timestamp()) * 1_000_000 + at.microsecond


class Outcomes:
    """The remembered outcomes by (principal, command_id), as the processor reads them."""

    def __init__(self, memory: IdMemory, extras: frozenset[str]) -> None:
        self._memory, self._extras = memory, extras

    def __getitem__(self, key: OutcomeKey) -> dict[str, Any]:
        entry = self._memory.entry(key)
        if entry is None:
            raise KeyError(key)
        return {k: v for k, v in entry.items() if k not in self._extras}

    def __contains__(self, key: object) -> bool:
        return key in self._memory

    def __iter__(self) -> Iterator[OutcomeKey]:
        return self._memory.keys()

    def values(self) -> Iterator[dict[str, Any]]:
        return (self[key] for key in self._memory.keys())


class Commands:
    """Beside each remembered outcome: its command's type and content digest (None for
    entries from before digests were recorded)."""

    def __init__(self, memory: IdMemory) -> None:
        self._memory = memory

    def get(self, key: OutcomeKey, default: Any = None) -> tuple[str, str] | Any:
        entry = self._memory.entry(key)
        if entry is None or "digest" not in entry:
            return default
        return entry["command_type"], entry["digest"]
