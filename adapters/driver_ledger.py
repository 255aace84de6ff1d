"""The driver worker's own durable memory: a small SQLite file.

It holds, per worker: its positions in the command topic, the state of every command it
took on (intended, done, dead, with its attempts), and for a cloud worker its nodes
(node_id <-> the provider's VM id, group, cell, what was reported).

Why a file of the worker's and not the engine's store: the engine's store has one writer
(the engine, fenced); a driver writing there would be a second writer, and the driver runs
beside the cloud it drives, possibly far from the store. The mapping is also recoverable
from the cloud itself: every VM carries its node id as a tag, and drivers find VMs by tag,
so a lost ledger costs at most repeated (deduplicated) reports, never a VM.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

CommandState = Literal["intent", "done", "dead"]
NodeLedgerState = Literal["provisioned", "ready", "terminating", "terminated", "lost"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS positions (topic TEXT, partition INTEGER, offset INTEGER,
    PRIMARY KEY (topic, partition));
CREATE TABLE IF NOT EXISTS commands (command_id TEXT PRIMARY KEY, state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, detail TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS nodes (node_id TEXT PRIMARY KEY, cell TEXT NOT NULL,
    node_group TEXT NOT NULL, provider_id TEXT NOT NULL, state TEXT NOT NULL);
"""


@dataclass(frozen=True)
class NodeRow:
    node_id: str
    cell: str
    node_group: str
    provider_id: str
    state: NodeLedgerState


class Ledger:
    def __init__(self, path: str | Path) -> None:
        # autocommit off; each method is one transaction, synchronous=FULL for durability.
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # --- positions ------------------------------------------------------------------

    def positions(self, topic: str) -> dict[int, int]:
        rows = self._db.execute("SELECT partition, offset FROM positions WHERE topic = ?",
                                (topic,))
        return {p: o for p, o in rows}

    def _move(self, db: sqlite3.Connection, topic: str, partition: int, offset: int) -> None:
        db.execute("INSERT INTO positions VALUES (?, ?, ?) ON CONFLICT (topic, partition) "
                   "DO UPDATE SET offset = excluded.offset", (topic, partition, offset))

    def move(self, topic: str, partition: int, offset: int) -> None:
        with self._tx() as db:
            self._move(db, topic, partition, offset)

    # --- commands -------------------------------------------------------------------

    def command(self, command_id: str) -> tuple[CommandState, int] | None:
        row = self._db.execute("SELECT state, attempts FROM commands WHERE command_id = ?",
                               (command_id,)).fetchone()
        return None if row is None else (row[0], row[1])

    def intend(self, command_id: str) -> int:
        """Record that an attempt at the command starts now; returns the attempt's number
        (attempts survive restarts, so a command that kills the worker is not retried
        forever)."""
        with self._tx() as db:
            db.execute("INSERT INTO commands (command_id, state, attempts) VALUES (?, 'intent', 1)"
                       " ON CONFLICT (command_id) DO UPDATE SET attempts = attempts + 1",
                       (command_id,))
            return int(db.execute("SELECT attempts FROM commands WHERE command_id = ?",
                                  (command_id,)).fetchone()[0])

    def finish(self, command_id: str | None, state: CommandState, topic: str, partition: int,
               next_offset: int, detail: str = "", node: NodeRow | None = None) -> None:
        """The command is done (or dead) and the position moves past it, in one transaction;
        with a cloud command, the node's row changes in it too."""
        with self._tx() as db:
            if command_id is not None:
                db.execute("INSERT INTO commands (command_id, state, detail) VALUES (?, ?, ?) "
                           "ON CONFLICT (command_id) DO UPDATE SET state = excluded.state, "
                           "detail = excluded.detail", (command_id, state, detail[:1000]))
            if node is not None:
                self._put_node(db, node)
            self._move(db, topic, partition, next_offset)

    def commands(self, state: CommandState) -> list[str]:
        rows = self._db.execute("SELECT command_id FROM commands WHERE state = ? "
                                "ORDER BY command_id", (state,))
        return [r[0] for r in rows]

    # --- nodes ----------------------------------------------------------------------

    @staticmethod
    def _put_node(db: sqlite3.Connection, node: NodeRow) -> None:
        db.execute("INSERT INTO nodes VALUES (?, ?, ?, ?, ?) ON CONFLICT (node_id) DO UPDATE "
                   "SET cell = excluded.cell, node_group = excluded.node_group, "
                   "provider_id = excluded.provider_id, state = excluded.state",
                   (node.node_id, node.cell, node.node_group, node.provider_id, node.state))

    def put_node(self, node: NodeRow) -> None:
        with self._tx() as db:
            self._put_node(db, node)

    def node(self, node_id: str) -> NodeRow | None:
        row = self._db.execute("SELECT * FROM nodes WHERE node_id = ?", (node_id,)).fetchone()
        return None if row is None else NodeRow(*row)

    def nodes(self, *states: NodeLedgerState) -> list[NodeRow]:
        marks = ",".join("?" * len(states))
        rows = self._db.execute(f"SELECT * FROM nodes WHERE state IN ({marks}) "
                                "ORDER BY node_id", states)
        return [NodeRow(*r) for r in rows]

    def close(self) -> None:
        self._db.close()
