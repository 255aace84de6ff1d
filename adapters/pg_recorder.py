"""PostgreSQL process recorder that inserts events with one pipelined executemany.

The library inserts a batch as `unnest(%s::stored_event[])`: the composite array is dumped
as text in Python (re-escaped field by field) and unpacked again by the server, about
9k rows/s here. A pipelined executemany of plain rows does the same work at about 25k rows/s
(`python -m simulations.bench_intake` prints the effect). Everything else is the library's:
the table lock that keeps notification ids in commit order, the NOTIFY, the tracking row
and the transaction they all share.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import ProgrammingError, StoredEvent
from eventsourcing.postgres import PostgresDatastore, PostgresProcessRecorder
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier


class PipelinedPostgresProcessRecorder(PostgresProcessRecorder):
    def __init__(self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events",
                 tracking_table_name: str = "notification_tracking"):
        super().__init__(datastore, events_table_name=events_table_name,
                         tracking_table_name=tracking_table_name)
        self.insert_rows_statement = SQL(
            "INSERT INTO {schema}.{table} (originator_id, originator_version, topic, state) "
            "VALUES (%s, %s, %s, %s) RETURNING notification_id"
        ).format(schema=Identifier(self.datastore.schema),
                 table=Identifier(self.events_table_name))

    def _insert_stored_events(self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent],
                              **kwargs: Any) -> None:
        # The lock and NOTIFY go on their own cursor so `curs` holds only the insert results.
        with curs.connection.cursor() as other:
            self._lock_table(other)
            self._notify_channel(other)
        curs.executemany(self.insert_rows_statement,
                         [(e.originator_id, e.originator_version, e.topic, e.state)
                          for e in stored_events], returning=True)

    def _fetch_ids_after_insert_events(self, curs: Cursor[DictRow],
                                       stored_events: Sequence[StoredEvent], **kwargs: Any
                                       ) -> Sequence[int] | None:
        ids: list[int] = []
        while True:  # executemany(returning=True) leaves one result set per row
            row = curs.fetchone()
            if row is not None:
                ids.append(row["notification_id"])
            if not curs.nextset():
                break
        if len(ids) != len(stored_events):
            raise ProgrammingError(f"got {len(ids)} notification ids for "
                                   f"{len(stored_events)} events")
        return ids
