"""The memory and SQLite process recorders, with each event's chain link (engine/chain.py)
stored beside it in the same transaction: `cis_event_chain(notification_id, cell, hash)`.

The PostgreSQL one is adapters/pg_recorder.py. All three answer the same three questions:
`insert_events(..., chain=[(cell, link), ...])`, `chain_heads` (each cell's newest link) and
`select_chained` (a stretch of the log, each place with its event and its link, either
possibly missing: what `cis audit verify` reads) up to `chain_end`; and `link_of` (one
event's link: what a finalised invoice pins, docs/design.md §2.11).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError, StoredEvent
from eventsourcing.popo import POPOFactory, POPOProcessRecorder
from eventsourcing.sqlite import SQLiteCursor, SQLiteProcessRecorder

from engine.chain import Row, merge

CHAIN_TABLE = "cis_event_chain"
Link = tuple[int, str, bytes]  # notification id, cell, hash


def chain_rows(ids: Sequence[int] | None, chain: Sequence[tuple[str, bytes]] | None
               ) -> list[Link]:
    """The link rows of a batch, once the store has numbered its events."""
    if not chain:
        return []
    if ids is None or len(ids) != len(chain):
        raise IntegrityError("chain links and stored events differ in number")
    return [(nid, cell, hashed) for nid, (cell, hashed) in zip(ids, chain, strict=True)]


class ChainedPOPOProcessRecorder(POPOProcessRecorder):
    def __init__(self) -> None:
        super().__init__()
        self._links: dict[int, tuple[str, bytes]] = {}

    def _update_table(self, stored_events: Sequence[StoredEvent], **kwargs: Any
                      ) -> Sequence[int] | None:
        # Under the recorder's lock, after its uniqueness checks: all or nothing.
        ids = super()._update_table(stored_events, **kwargs)
        for nid, cell, hashed in chain_rows(ids, kwargs.get("chain")):
            self._links[nid] = (cell, hashed)
        return ids

    def chain_heads(self, cells: Collection[str], after: int = 0) -> dict[str, bytes]:
        wanted, heads = set(cells), {}
        with self._database_lock:
            for nid in reversed(self._links):
                if nid <= after or len(heads) == len(wanted):
                    break
                cell, hashed = self._links[nid]
                if cell in wanted:
                    heads.setdefault(cell, hashed)
        return heads

    def link_of(self, originator_id: Any, version: int) -> bytes | None:
        """The link stored with one event (None: no such event, or stored unchained)."""
        with self._database_lock:
            index = self._stored_events_index.get(str(originator_id), {}).get(version)
            link = None if index is None else self._links.get(index + 1)
            return None if link is None else link[1]

    def select_links(self, start: int, stop: int | None = None) -> list[Link]:
        with self._database_lock:
            return sorted((nid, cell, hashed) for nid, (cell, hashed) in self._links.items()
                          if nid >= start and (stop is None or nid <= stop))

    def chain_end(self) -> int:
        with self._database_lock:
            return max(len(self._stored_events), max(self._links, default=0))

    def select_chained(self, after: int, stop: int) -> list[Row]:
        events = self.select_notifications(after + 1, limit=max(stop - after, 1), stop=stop)
        return list(merge(events, self.select_links(after + 1, stop)))


class ChainedPOPOFactory(POPOFactory):
    def process_recorder(self) -> ChainedPOPOProcessRecorder:  # type: ignore[override]
        return ChainedPOPOProcessRecorder()


class ChainedSQLiteProcessRecorder(SQLiteProcessRecorder):
    def construct_create_table_statements(self) -> list[str]:
        return [*super().construct_create_table_statements(),
                f"CREATE TABLE IF NOT EXISTS {CHAIN_TABLE} (notification_id INTEGER PRIMARY "
                "KEY, cell TEXT NOT NULL, hash BLOB NOT NULL)"]

    def _insert_events(self, c: SQLiteCursor, stored_events: Sequence[StoredEvent],
                       **kwargs: Any) -> Sequence[int] | None:
        ids = super()._insert_events(c, stored_events, **kwargs)
        if rows := chain_rows(ids, kwargs.get("chain")):
            c.executemany(f"INSERT INTO {CHAIN_TABLE} (notification_id, cell, hash) "
                          "VALUES (?, ?, ?)", rows)
        return ids

    def chain_heads(self, cells: Collection[str], after: int = 0) -> dict[str, bytes]:
        if not cells:
            return {}
        heads: dict[str, bytes] = {}
        with self.datastore.transaction(commit=False) as c:
            for cell in cells:  # the key walked backwards: a cell that wrote lately, at once
                c.execute(f"SELECT hash FROM {CHAIN_TABLE} WHERE cell = ? AND notification_id"
                          " > ? ORDER BY notification_id DESC LIMIT 1", [cell, after])
                row = c.fetchone()
                if row is not None:
                    heads[cell] = bytes(row[0])
        return heads

    def link_of(self, originator_id: Any, version: int) -> bytes | None:
        """The link stored with one event (None: no such event, or stored unchained)."""
        with self.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT l.hash FROM {self.events_table_name} e JOIN {CHAIN_TABLE} l ON "
                      "l.notification_id = e.rowid WHERE e.originator_id = ? AND "
                      "e.originator_version = ?",
                      [originator_id.hex if isinstance(originator_id, UUID) else originator_id,
                       version])
            row = c.fetchone()
            return None if row is None else bytes(row[0])

    def chain_end(self) -> int:
        with self.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT max(rowid) FROM {self.events_table_name}")
            events = c.fetchone()[0] or 0
            c.execute(f"SELECT max(notification_id) FROM {CHAIN_TABLE}")
            return max(events, c.fetchone()[0] or 0)

    def select_chained(self, after: int, stop: int) -> list[Row]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT coalesce(e.rowid, l.notification_id), e.originator_id, "
                      "e.originator_version, e.topic, e.state, l.cell, l.hash FROM "
                      f"(SELECT rowid, * FROM {self.events_table_name} WHERE rowid > ? AND "
                      f"rowid <= ?) e FULL JOIN (SELECT * FROM {CHAIN_TABLE} WHERE "
                      "notification_id > ? AND notification_id <= ?) l ON e.rowid = "
                      "l.notification_id ORDER BY 1", (after, stop, after, stop))
            return [tuple(r) for r in c.fetchall()]  # type: ignore[misc]

    def select_links(self, start: int, stop: int | None = None) -> list[Link]:
        statement = f"SELECT notification_id, cell, hash FROM {CHAIN_TABLE} WHERE " \
                    "notification_id >= ?"
        params: list[int] = [start]
        if stop is not None:
            statement += " AND notification_id <= ?"
            params.append(stop)
        with self.datastore.transaction(commit=False) as c:
            c.execute(statement + " ORDER BY notification_id", params)
            return [(int(r[0]), r[1], bytes(r[2])) for r in c.fetchall()]
