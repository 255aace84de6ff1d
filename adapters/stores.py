"""Store URLs → eventsourcing environments. The only place that names a database."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import psycopg
from eventsourcing.persistence import InterfaceError, OperationalError

DEFAULT_STORE = "sqlite:///cis.db"
SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
# What a store that is down or unreachable raises, through the library or around it.
STORE_DOWN = (OperationalError, InterfaceError, psycopg.OperationalError,
              psycopg.InterfaceError)


class BadConfiguration(ValueError):
    """Configuration the process cannot run with: one line for the operator, no traceback."""


class BadStoreURL(BadConfiguration):
    pass


@dataclass(frozen=True)
class Store:
    url: str
    kind: str  # memory | sqlite | postgres
    env: dict[str, str]


def _sqlite_path(url: str) -> str:
    parsed = urlparse(url)
    path = parsed.path if not parsed.netloc else parsed.netloc + parsed.path
    if not path or path == "/":
        raise BadStoreURL(f"{url!r}: sqlite URLs look like sqlite:///path/to/file.db")
    if path != ":memory:" and url.startswith("sqlite:///"):
        path = path[1:] if not url.startswith("sqlite:////") else path
    return path


def existing_store(url: str) -> str:
    """`url`, refused if it names a SQLite file that does not exist, or a memory store
    (always new and empty in this process): an audit must not create an empty store and
    then call it intact (a mistyped path)."""
    if urlparse(url).scheme == "memory":
        raise BadStoreURL(f"{url!r}: a memory store lives in one process; nothing to read")
    if urlparse(url).scheme == "sqlite":
        path = _sqlite_path(url)
        if path != ":memory:" and not Path(path).is_file():
            raise BadStoreURL(f"{url!r}: no such database file")
    return url


def parse_store(url: str) -> Store:
    """`memory://`, `sqlite:///path/to/file.db`, `postgresql://user@host:port/db?schema=s`."""
    parsed = urlparse(url)
    if parsed.scheme == "memory":
        # Every store keeps each event's chain link beside it (adapters/chain_recorders.py).
        return Store(url, "memory", {
            "PERSISTENCE_MODULE": "adapters.chain_recorders:ChainedPOPOFactory"})
    if parsed.scheme == "sqlite":
        path = _sqlite_path(url)
        if path != ":memory:" and url.startswith("sqlite:///"):
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise BadStoreURL(f"{url!r}: cannot create {Path(path).parent}: "
                                  f"{exc.strerror}") from None
        return Store(url, "sqlite", {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": path,
            "SQLITE_LOCK_TIMEOUT": "10",
            "PROCESS_RECORDER_TOPIC": "adapters.chain_recorders:ChainedSQLiteProcessRecorder",
        })
    if parsed.scheme in ("postgresql", "postgres"):
        if not parsed.hostname or not parsed.path.strip("/"):
            raise BadStoreURL(f"{url!r}: postgres URLs look like postgresql://user@host:5432/db")
        schema = parse_qs(parsed.query).get("schema", ["public"])[0]
        # The schema is written into SQL as an identifier: only plain names pass.
        if not SCHEMA_NAME.fullmatch(schema):
            raise BadStoreURL(f"{url!r}: ?schema= must match {SCHEMA_NAME.pattern} "
                              "(letters, digits, _; at most 63)")
        return Store(url, "postgres", {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": parsed.path.strip("/"),
            "POSTGRES_HOST": parsed.hostname,
            "POSTGRES_PORT": str(parsed.port or 5432),
            "POSTGRES_USER": parsed.username or "postgres",
            "POSTGRES_PASSWORD": parsed.password or "",
            "POSTGRES_SCHEMA": schema,
            # DB functions silently skip tracking rows (docs/design.md §4.3): keep them off.
            "POSTGRES_ENABLE_DB_FUNCTIONS": "n",
            "PROCESS_RECORDER_TOPIC": "adapters.pg_recorder:PipelinedPostgresProcessRecorder",
            "POSTGRES_POOL_SIZE": "4",
            "POSTGRES_CONNECT_TIMEOUT": "10",
        })
    raise BadStoreURL(f"{url!r}: unknown store; use memory://, sqlite:///FILE or "
                      "postgresql://user@host:port/db")
