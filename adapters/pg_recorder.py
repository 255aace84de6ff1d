"""PostgreSQL process recorder with cheaper inserts than the library's.

The library inserts a batch as `unnest(%s::stored_event[])`: the composite array is dumped
as text in Python (re-escaped field by field) and unpacked again by the server, about
9k rows/s here. A binary COPY of plain rows does the same work at about 70k rows/s (a
pipelined executemany of INSERTs, the bench's raw baseline, about 30k). A few events (a
batch of one command) go as one multi-row INSERT, whose round trips cost less than a COPY's
there. Everything else is the library's: the tracking row, the table lock that keeps
notification ids in commit order, the NOTIFY and the one transaction they all share.
(`cis bench intake` measures the effect.)

Each event's chain link (engine/chain.py) goes into `cis_event_chain` in that transaction:
one more COPY (or multi-row INSERT) per batch, once the events have their ids.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from eventsourcing.persistence import (
    InterfaceError,
    OperationalError,
    ProgrammingError,
    StoredEvent,
)
from eventsourcing.postgres import PostgresDatastore, PostgresProcessRecorder
from eventsourcing.utils import retry
from psycopg import Cursor
from psycopg.rows import DictRow, tuple_row
from psycopg.sql import SQL, Composed, Identifier

from adapters.chain_recorders import CHAIN_TABLE, Link, chain_rows
from engine.chain import Row

SMALL_BATCH = 16  # events; above this the binary COPY is faster


class PipelinedPostgresProcessRecorder(PostgresProcessRecorder):
    def __init__(self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events",
                 tracking_table_name: str = "notification_tracking"):
        super().__init__(datastore, events_table_name=events_table_name,
                         tracking_table_name=tracking_table_name)
        self.copy_statement = SQL(
            "COPY {schema}.{table} (originator_id, originator_version, topic, state) "
            "FROM STDIN (FORMAT BINARY)"
        ).format(schema=Identifier(self.datastore.schema),
                 table=Identifier(self.events_table_name))
        self.copy_types = [self.datastore.originator_id_type, "int8", "text", "bytea"]
        self.last_id_statement = SQL(
            "SELECT currval(pg_get_serial_sequence({table}, 'notification_id')) AS last"
        ).format(table=f'"{self.datastore.schema}"."{self.events_table_name}"')
        self._multi_row: dict[int, Composed] = {}
        chain = {"schema": Identifier(self.datastore.schema), "chain": Identifier(CHAIN_TABLE)}
        self.sql_create_statements.append(SQL(
            "CREATE TABLE IF NOT EXISTS {schema}.{chain} (notification_id bigint PRIMARY KEY, "
            "cell text NOT NULL, hash bytea NOT NULL)").format(**chain))
        self.copy_links_statement = SQL(
            "COPY {schema}.{chain} (notification_id, cell, hash) FROM STDIN (FORMAT BINARY)"
        ).format(**chain)
        self.links_copy_types = ["int8", "text", "bytea"]
        self._multi_link: dict[int, Composed] = {}
        # Per cell, the primary key walked backwards from the end: a cell that wrote
        # lately is found at once (sorting every link after `after` by cell read the whole
        # table on a start from the log).
        self.chain_heads_statement = SQL(
            "SELECT c.cell, l.hash FROM unnest(%s::text[]) AS c(cell) CROSS JOIN LATERAL "
            "(SELECT hash FROM {schema}.{chain} WHERE cell = c.cell AND notification_id > %s "
            "ORDER BY notification_id DESC LIMIT 1) AS l").format(**chain)
        self.select_chained_statement = SQL(
            "SELECT coalesce(e.notification_id, l.notification_id), e.originator_id, "
            "e.originator_version, e.topic, e.state, l.cell, l.hash FROM (SELECT * FROM "
            "{schema}.{events} WHERE notification_id > %(after)s AND notification_id <= "
            "%(stop)s) e FULL JOIN (SELECT * FROM {schema}.{chain} WHERE notification_id > "
            "%(after)s AND notification_id <= %(stop)s) l ON e.notification_id = "
            "l.notification_id ORDER BY 1").format(events=Identifier(self.events_table_name),
                                                    **chain)
        self.chain_end_statement = SQL(
            "SELECT greatest((SELECT max(notification_id) FROM {schema}.{events}), "
            "(SELECT max(notification_id) FROM {schema}.{chain}))").format(
                events=Identifier(self.events_table_name), **chain)
        self.select_links_statement = SQL(
            "SELECT notification_id, cell, hash FROM {schema}.{chain} WHERE notification_id "
            ">= %s AND notification_id <= %s ORDER BY notification_id").format(**chain)
        self.link_of_statement = SQL(
            "SELECT l.hash FROM {schema}.{events} e JOIN {schema}.{chain} l ON "
            "l.notification_id = e.notification_id WHERE e.originator_id = %s AND "
            "e.originator_version = %s").format(events=Identifier(self.events_table_name),
                                                 **chain)
        # The lock statements and the NOTIFY as one parameterless string: one round trip.
        self.lock_and_notify_statement = SQL("; ").join(
            [*self.lock_table_statements,
             SQL("NOTIFY {0}").format(Identifier(self.channel_name))])

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any
                      ) -> Sequence[int] | None:
        if len(stored_events) > SMALL_BATCH:
            return self._insert_copied(stored_events, **kwargs)
        return self._insert_few(stored_events, **kwargs)

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def _insert_few(self, stored_events: Sequence[StoredEvent], **kwargs: Any
                    ) -> Sequence[int] | None:
        with self.datastore.get_connection() as conn, conn.transaction(), \
                conn.cursor() as curs:
            self._insert_events(curs, stored_events, **kwargs)  # the tracking row
            if not stored_events:
                return None
            curs.execute(self.lock_and_notify_statement)
            curs.execute(self._multi_row_statement(len(stored_events)),
                         [v for e in stored_events for v in (
                             e.originator_id, e.originator_version, e.topic, e.state)])
            ids = [row["notification_id"] for row in curs.fetchall()]
            if links := chain_rows(ids, kwargs.get("chain")):
                curs.execute(self._multi_link_statement(len(links)),
                             [v for link in links for v in link])
            return ids

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def _insert_copied(self, stored_events: Sequence[StoredEvent], **kwargs: Any
                       ) -> Sequence[int] | None:
        # COPY cannot run in pipeline mode: five round trips in all (tracking row, lock and
        # notify, the COPY, the ids, the commit), whatever the number of events. A duplicate
        # (originator_id, originator_version) fails the COPY whole: IntegrityError, as ever.
        with self.datastore.get_connection() as conn, conn.transaction(), \
                conn.cursor() as curs:
            self._insert_events(curs, stored_events, **kwargs)  # the tracking row
            curs.execute(self.lock_and_notify_statement)
            with curs.copy(self.copy_statement) as copy:
                copy.set_types(self.copy_types)
                for e in stored_events:
                    copy.write_row((e.originator_id, e.originator_version, e.topic, e.state))
            ids = self._fetch_ids_after_insert_events(curs, stored_events)
            if links := chain_rows(ids, kwargs.get("chain")):
                with curs.copy(self.copy_links_statement) as copy:
                    copy.set_types(self.links_copy_types)
                    for link in links:
                        copy.write_row(link)
            return ids

    def chain_heads(self, cells: Collection[str], after: int = 0) -> dict[str, bytes]:
        """Each of these cells' newest link after notification `after`."""
        if not cells:
            return {}
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self.chain_heads_statement, (list(cells), after))
            return {row["cell"]: bytes(row["hash"]) for row in curs.fetchall()}

    def select_links(self, start: int, stop: int | None = None) -> list[Link]:
        """The links stored for notifications `start` to `stop` (None: the end)."""
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self.select_links_statement, (start, 2**63 - 1 if stop is None
                                                       else stop))
            return [(int(r["notification_id"]), r["cell"], bytes(r["hash"]))
                    for r in curs.fetchall()]

    def link_of(self, originator_id: Any, version: int) -> bytes | None:
        """The link stored with one event (None: no such event, or stored unchained)."""
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self.link_of_statement, (originator_id, version))
            row = curs.fetchone()
            return None if row is None else bytes(row["hash"])

    def chain_end(self) -> int:
        """The newest notification id holding an event or a link."""
        with self.datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row) as curs:
            curs.execute(self.chain_end_statement)
            row = curs.fetchone()
            return int(row[0] or 0) if row else 0

    def select_chained(self, after: int, stop: int) -> list[Row]:
        """Notifications `after` < id <= `stop`: each with its event and its link."""
        with self.datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row) as curs:
            curs.execute(self.select_chained_statement, {"after": after, "stop": stop})
            return curs.fetchall()  # type: ignore[return-value]

    def _multi_link_statement(self, rows: int) -> Composed:
        if rows not in self._multi_link:
            self._multi_link[rows] = SQL(
                "INSERT INTO {schema}.{chain} (notification_id, cell, hash) VALUES {values}"
            ).format(schema=Identifier(self.datastore.schema), chain=Identifier(CHAIN_TABLE),
                     values=SQL(", ").join([SQL("(%s, %s, %s)")] * rows))
        return self._multi_link[rows]

    def _multi_row_statement(self, rows: int) -> Composed:
        if rows not in self._multi_row:
            self._multi_row[rows] = SQL(
                "INSERT INTO {schema}.{table} (originator_id, originator_version, topic, "
                "state) VALUES {values} RETURNING notification_id"
            ).format(schema=Identifier(self.datastore.schema),
                     table=Identifier(self.events_table_name),
                     values=SQL(", ").join([SQL("(%s, %s, %s, %s)")] * rows))
        return self._multi_row[rows]

    def _fetch_ids_after_insert_events(self, curs: Cursor[DictRow],
                                       stored_events: Sequence[StoredEvent], **kwargs: Any
                                       ) -> Sequence[int] | None:
        # Not RETURNING (a result set per row costs a quarter of the insert): the ids are the
        # last n values of the table's sequence. Only inserts into this table draw on it, and
        # they wait for the EXCLUSIVE lock we hold, so ours are consecutive, in row order.
        curs.execute(self.last_id_statement)
        row = curs.fetchone()
        if row is None or row["last"] is None:
            raise ProgrammingError("no notification id after inserting events")
        last = int(row["last"])
        return list(range(last - len(stored_events) + 1, last + 1))
