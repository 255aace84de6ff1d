"""Keeps projections' views current with the event log.

The log is read once per window of notification ids for all projections, and only the
kinds of event some projection reads are fetched at all (most of a busy log is the cell
logs' outcomes and instances' report sequence numbers, which no read model shows): the
database filters them by topic. Each projection is handed only the kinds it reads, then
commits its rows and its new position in one transaction of its own, window by window,
whether the window held anything for it or not (so its position is the log's).

A window is applied event by event, each event to every projection that reads it (they
spell its id and time once, projections/texts.py). Rows a projection read or wrote stay in a
bounded cache for the rest of the pass, so an event whose rows an earlier window touched is
applied without reading them back, and without asking the projection which rows it reads
(`keys`): only a row the cache does not know makes it ask, for the rest of the window, and
read them all in one statement per table. The cache holds committed rows only: what it
answers is what the view would.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from eventsourcing.persistence import Tracking
from eventsourcing.utils import get_topic, resolve_topic

from projections.decode import decoder
from projections.projection import RowProjection
from projections.tables import Key, Row, Rows, Table

# Notification ids read, projected and committed at a time. Memory holds one window of
# events and the rows they touch, whatever the length of the log; a longer window rewrites
# a row less often (on PostgreSQL, 20,000 took the server 2.3 CPU-s for a 233,699-event
# rebuild where 10,000 took 2.8, peaking at 137 MB, not 115).
PAGE = 20_000
# Committed rows kept per table between windows (the oldest written out first): bounded, so
# memory does not follow the length of the log (a rebuild peaked at 100 MB with 5,000, and
# at 142 MB with 20,000, which held every row of that history).
CACHED_ROWS = 10_000


def position(view: Any, projection: RowProjection) -> int:
    return view.max_tracking_id(projection.name) or 0


class _Kinds:
    """Which stored topics some projection reads: the topics of every class of event they
    name (for the database to filter on), and a check of any other topic met."""

    def __init__(self, projections: Sequence[RowProjection]) -> None:
        self.read = tuple(k for p in projections for k in p.events)
        self.topics: dict[str, bool] = {}
        self.filter: tuple[str, ...] = ()
        if object not in self.read:  # a projection of every kind reads the whole log
            self.filter = tuple(sorted({get_topic(c) for c in _subclasses(self.read)}))

    def wanted(self, topic: str) -> bool:
        found = self.topics.get(topic)
        if found is None:
            found = self.topics[topic] = issubclass(resolve_topic(topic), self.read)
        return found


def _subclasses(classes: tuple[type, ...]) -> set[type]:
    found: set[type] = set()
    todo = list(classes)
    while todo:
        cls = todo.pop()
        if cls not in found:
            found.add(cls)
            todo.extend(cls.__subclasses__())
    return found


def _window(log: Any, after: int, end: int, kinds: _Kinds, decode: Callable[[Any], Any]
            ) -> tuple[int, list[tuple[int, Any]]]:
    """The events after `after` up to `after + PAGE` (at most `end`, the log's end when the
    pass began) that some projection reads, decoded, and the window's last id. Every id up to
    `end` is committed (the log is stored in id order), so a window with none of them in it
    still moves the position."""
    stop = min(end, after + PAGE)
    notifications = log.recorder.select_notifications(
        start=after + 1, limit=PAGE, stop=stop, topics=kinds.filter)
    wanted = kinds.wanted
    return stop, [(n.id, decode(n)) for n in notifications if wanted(n.topic)]


def _decoded_pages(log: Any) -> Callable[[int], tuple[int, list[tuple[int, Any]]]]:
    """A log that hands out decoded events (projections/known_at.py): page by page."""
    def page(after: int) -> tuple[int, list[tuple[int, Any]]]:
        events = log.page(after, PAGE)
        return (events[-1][0] if events else after), events
    return page


class _Cache:
    """A projection's committed rows by table, oldest written first: at most `size` a table
    between batches (trimmed then, never while a batch reads it). A key mapped to None is
    known to have no row."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.tables: dict[str, dict[Key, Row | None]] = {}

    def load(self, view: Any, table: Table, keys: set[Key]) -> None:
        """Make these keys known: read the ones it does not know from the view."""
        cached = self.tables.setdefault(table.name, {})
        missing = [key for key in keys if key not in cached]
        if missing:
            read = view.load(table, missing)
            for key in missing:
                cached[key] = read.get(key)

    def committed(self, changed: dict[str, dict[Key, Row | None]]) -> None:
        for name, rows in changed.items():
            cached = self.tables.get(name)
            if cached is None:
                continue  # a table no event has read rows of
            for key, row in rows.items():
                cached.pop(key, None)
                cached[key] = row  # newest last
        for cached in self.tables.values():
            # (The oldest keys listed first: deleting them one `next(iter())` at a time
            # rescans the freed slots at the front each time.)
            for key in list(islice(cached, max(0, len(cached) - self.size))):
                del cached[key]


class _CachedRows(Rows):
    """A batch's rows, read from the cache. A row the cache does not know asks `missing` to
    load it (and, at once, every row the rest of the batch reads)."""

    def __init__(self, cache: _Cache, missing: _Missing) -> None:
        super().__init__(cache.tables)  # type: ignore[arg-type]  # None: no row
        self._missing = missing
        missing.written = self.changed

    def get(self, table: Table, key: Key) -> Row | None:
        loaded = self.loaded.get(table.name)
        if loaded is None:  # a table read: from now on the cache keeps its rows
            loaded = self.loaded[table.name] = {}
        changed = self.changed.get(table.name)
        if changed is not None and key in changed:
            return changed[key]
        if key not in loaded:
            self._missing(table, key)
        row = loaded[key]
        return dict(row) if row is not None else None


@dataclass
class _Cursor:
    at: int = 0  # the batch's event being applied


@dataclass
class _Missing:
    """Loads rows a projection's cache does not know: the one asked for, and those every
    later event of the batch reads, by key in one statement per table (a cold cache: all of
    them; a warm one: rows written long ago), less those the batch writes first. (Holds no
    reference back to the batch or its rows, so a batch is freed as soon as it is done.)"""

    projection: RowProjection
    events: list[tuple[Any, tuple[RowProjection, ...]]]
    cursor: _Cursor
    cache: _Cache
    view: Any
    written: dict[str, dict[Key, Row | None]] = field(default_factory=dict)

    def __call__(self, table: Table, key: Key) -> None:
        rest = [e for e, to in self.events[self.cursor.at:] if self.projection in to]
        wanted = _to_load(self.projection, rest, self.written)
        wanted.setdefault(table, set()).add(key)
        for t, keys in wanted.items():
            self.cache.load(self.view, t, keys)


def catch_up(app: Any, projections: Sequence[RowProjection], view: Any,
             progress: Callable[[int], None] | None = None) -> int:
    """Apply every event after each view's position, up to the log's end as it was when
    called; return how many events were fed to projections (an event fed to two counts
    twice)."""
    positions = {p.name: position(view, p) for p in projections}
    after = min(positions.values(), default=0)
    kinds = _Kinds(projections)
    if getattr(app, "recorder", None) is None:
        next_page = _decoded_pages(app)
    else:
        end = app.recorder.max_notification_id() or 0
        decode = decoder(app.mapper)
        next_page = lambda after: _window(app, after, end, kinds, decode)  # noqa: E731
    caches = {p.name: _Cache(CACHED_ROWS) for p in projections}
    readers: dict[type, tuple[RowProjection, ...]] = {}
    applied = 0
    while True:
        last, page = next_page(after)
        if last == after:
            break
        # Each event with the projections that read its kind (decided once per class) and
        # have not yet seen it.
        ahead = any(positions[p.name] > after for p in projections)
        batch: list[tuple[Any, tuple[RowProjection, ...]]] = []
        for notification_id, event in page:
            kind = type(event)
            to = readers.get(kind)
            if to is None:
                to = readers[kind] = tuple(p for p in projections
                                           if isinstance(event, p.events))
            if ahead:
                to = tuple(p for p in to if notification_id > positions[p.name])
            if to:
                batch.append((event, to))
        moving = [p for p in projections if positions[p.name] < last]
        window = _Batch(batch, moving, caches, view)
        applied += window.apply()
        for projection in moving:
            changed = window.rows[projection.name].changed
            view.commit(projection.tables, changed, Tracking(projection.name, last))
            caches[projection.name].committed(changed)
            positions[projection.name] = last
        if progress:
            progress(last - after)
        after = last
    return applied


class _Batch:
    """A window's events, each with the projections it goes to, applied event by event: each
    to all of its projections, which then spell its id and time once."""

    def __init__(self, events: list[tuple[Any, tuple[RowProjection, ...]]],
                 projections: list[RowProjection], caches: dict[str, _Cache], view: Any):
        self.events = events
        self.cursor = _Cursor()
        self.rows = {p.name: _CachedRows(caches[p.name],
                                         _Missing(p, events, self.cursor, caches[p.name], view))
                     for p in projections}

    def apply(self) -> int:
        applied = 0
        rows, cursor = self.rows, self.cursor
        for at, (event, to) in enumerate(self.events):
            cursor.at = at
            for projection in to:
                projection.apply(event, rows[projection.name])
            applied += len(to)
        return applied


def _to_load(projection: RowProjection, events: list[Any],
             written: dict[str, dict[Key, Row | None]]) -> dict[Table, set[Key]]:
    """The rows these events read, less those written before them or by an earlier one."""
    created: set[tuple[Table, Key]] = set()
    wanted: dict[Table, set[Key]] = {}
    for event in events:
        created.update(projection.creates(event))
        for pair in projection.keys(event):
            table, key = pair
            if pair not in created and key not in written.get(table.name, ()):
                keys = wanted.get(table)
                if keys is None:
                    keys = wanted[table] = set()
                keys.add(key)
    return wanted


def rebuild(app: Any, projections: Sequence[RowProjection], view: Any,
            progress: Callable[[int], None] | None = None) -> int:
    """Drop the projections' tables and positions, then replay the whole log into them."""
    for projection in projections:
        view.drop(projection.tables, projection.name)
        view.create(projection.tables)
    return catch_up(app, projections, view, progress)
