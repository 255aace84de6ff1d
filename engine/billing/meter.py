"""The fold: an instance's events -> billed intervals -> billed seconds
(docs/design.md §3.2 and §3.3 rule 1).

`step` is the truth table applied to one transition; the writer's meter and the usage
projection both keep an instance's intervals by calling it, so they cannot disagree.
`billed_seconds` is the one rounding of time in billing (microseconds out to whole
seconds); the rating, `--explain` and the period bookkeeping all go through it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from engine.billing.periods import US_PER_S, period_bounds, periods_of_seconds
from engine.domain.instance import BILLED

# [t0_us, t1_us | None, ...]: epoch microseconds, the last one open while the instance is
# billed. Holders may keep more after the two (the usage projection keeps the ids of the
# events that opened and closed it, for `--explain`); the fold reads and writes only these.
Interval = list[Any]
# A change at second s can alter seconds >= s - 1 (it may merge with a run ending at s - 1),
# so a change before closed_end + LATE_MARGIN_S is checked against the closed periods.
LATE_MARGIN_S = 2

OPENED, CLOSED = "opened", "closed"


def changes(intervals: Sequence[Interval], state: str) -> bool:
    """Whether a transition into `state` opens or closes an interval. Moves between billed
    states (restarts) or between unbilled ones change nothing billed."""
    return (state in BILLED) != is_open(intervals)


def step(intervals: list[Interval], state: str, at_us: int) -> str | None:
    """Follow one transition into `state` at `at_us`: open an interval on entering a billed
    state, close it on leaving them. Returns OPENED, CLOSED or None (nothing billed
    changed)."""
    if not changes(intervals, state):
        return None
    if is_open(intervals):
        intervals[-1][1] = at_us
        return CLOSED
    intervals.append([at_us, None])
    return OPENED


def is_open(intervals: Sequence[Interval]) -> bool:
    return bool(intervals) and intervals[-1][1] is None


def is_late(at_us: int, closed_end: int | None) -> bool:
    """Whether a change at `at_us` can touch a period already closed (closed_end: the first
    second after the cell's closed periods)."""
    return closed_end is not None and at_us < (closed_end + LATE_MARGIN_S) * US_PER_S


def billed_seconds(intervals: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """THE rounding of time, and the merge: the whole seconds billed intervals cover, as
    merged half-open ranges [s0, s1), each a maximal billed run.

    Intervals are (t0, t1) in epoch microseconds. [t0, t1) with t1 > t0 covers the seconds
    floor(t0) .. ceil(t1) - 1; an empty one covers nothing. Overlapping and touching ranges
    merge, so every second appears once.
    """
    merged: list[tuple[int, int]] = []
    cur0 = cur1 = 0
    # Sorting the microsecond intervals also sorts their second ranges (floor/ceil are
    # monotonic), so convert and merge in one pass.
    for t0, t1 in sorted(intervals):
        if t1 <= t0:
            if t1 < t0:
                raise ValueError(f"interval ends before it starts: ({t0}, {t1})")
            continue
        s0, s1 = t0 // US_PER_S, -(-t1 // US_PER_S)
        if merged and s0 <= cur1:
            if s1 > cur1:
                cur1 = s1
                merged[-1] = (cur0, cur1)
        else:
            cur0, cur1 = s0, s1
            merged.append((cur0, cur1))
    return merged


def seconds_of(t0_us: int, t1_us: int) -> tuple[int, int]:
    """[s0, s1): the whole seconds one non-empty interval covers."""
    (run,) = billed_seconds([(t0_us, t1_us)])
    return run


# --- views of an instance's intervals at a time ----------------------------------------------


def cut_at(intervals: Iterable[Interval], as_of_us: int) -> list[tuple[int, int]]:
    """Billed intervals as known at `as_of`: cut there, later ones dropped (accruing)."""
    return [(iv[0], as_of_us if iv[1] is None else min(iv[1], as_of_us))
            for iv in intervals if iv[0] < as_of_us]


def run_to(intervals: Iterable[Interval], horizon_us: int) -> list[tuple[int, int]]:
    """Every billed interval, open ones running on to `horizon_us` (past the periods wanted,
    so a run still going gets no minimum-seconds top-up in them)."""
    return [(iv[0], max(iv[0], horizon_us) if iv[1] is None else iv[1]) for iv in intervals]


def closed_part(intervals: Iterable[Interval]) -> list[tuple[int, int]]:
    """Only the intervals that have ended."""
    return [(iv[0], iv[1]) for iv in intervals if iv[1] is not None]


def seconds_per_period(intervals: Iterable[tuple[int, int]]) -> dict[str, int]:
    """Billed seconds of the intervals in each period they touch, oldest first."""
    out: dict[str, int] = {}
    for s0, s1 in billed_seconds(intervals):
        for p in periods_of_seconds(s0, s1):
            lo, hi = period_bounds(p)
            out[p] = out.get(p, 0) + min(s1, hi) - max(s0, lo)
    return dict(sorted(out.items()))
