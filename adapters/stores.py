"""Store URLs → eventsourcing environments. The only place that names a database."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import psycopg
from eventsourcing.persistence import InterfaceError, OperationalError

DEFAULT_STORE = "sqlite:///cis.db"
# What a store that is down or unreachable raises, through the library or around it.
STORE_DOWN = (OperationalError, InterfaceError, psycopg.OperationalError,
              psycopg.InterfaceError)


class BadStoreURL(ValueError):
    pass


@dataclass(frozen=True)
class Store:
    url: str
    kind: str  # memory | sqlite | postgres
    env: dict[str, str]


def parse_store(url: str) -> Store:
    """`memory://`, `sqlite:///path/to/file.db`, `postgresql://user@host:port/db?schema=s`."""
    parsed = urlparse(url)
    if parsed.scheme == "memory":
        return Store(url, "memory", {"PERSISTENCE_MODULE": "eventsourcing.popo"})
    if parsed.scheme == "sqlite":
        path = parsed.path if not parsed.netloc else parsed.netloc + parsed.path
        if not path or path == "/":
            raise BadStoreURL(f"{url!r}: sqlite URLs look like sqlite:///path/to/file.db")
        if path != ":memory:" and url.startswith("sqlite:///"):
            path = path[1:] if not url.startswith("sqlite:////") else path
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        return Store(url, "sqlite", {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": path,
            "SQLITE_LOCK_TIMEOUT": "10",
        })
    if parsed.scheme in ("postgresql", "postgres"):
        if not parsed.hostname or not parsed.path.strip("/"):
            raise BadStoreURL(f"{url!r}: postgres URLs look like postgresql://user@host:5432/db")
        schema = parse_qs(parsed.query).get("schema", ["public"])[0]
        return Store(url, "postgres", {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": parsed.path.strip("/"),
            "POSTGRES_HOST": parsed.hostname,
            "POSTGRES_PORT": str(parsed.port or 5432),
            "POSTGRES_USER": parsed.username or "postgres",
            "POSTGRES_PASSWORD": parsed.password or "",
            "POSTGRES_SCHEMA": schema,
            # DB functions silently skip tracking rows (DESIGN §4): keep them off.
            "POSTGRES_ENABLE_DB_FUNCTIONS": "n",
            "PROCESS_RECORDER_TOPIC": "adapters.pg_recorder:PipelinedPostgresProcessRecorder",
            "POSTGRES_POOL_SIZE": "4",
            "POSTGRES_CONNECT_TIMEOUT": "10",
        })
    raise BadStoreURL(f"{url!r}: unknown store; use memory://, sqlite:///FILE or "
                      "postgresql://user@host:port/db")
