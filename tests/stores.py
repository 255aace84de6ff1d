"""Store URLs for the contract tests: memory, SQLite in a temp dir, PostgreSQL in a schema."""

from __future__ import annotations

import itertools
import os
import uuid

import psycopg

PG_ADMIN = os.environ.get("CIS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
_schemas = itertools.count()


def pg_available() -> bool:
    try:
        with psycopg.connect(PG_ADMIN, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


class PostgresTestDatabase:
    """One database per test run, one schema per test: isolated, dropped at the end."""

    def __init__(self) -> None:
        self.name = f"cis_test_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        self.base = PG_ADMIN.rsplit("/", 1)[0] + "/" + self.name

    def new_schema(self) -> str:
        schema = f"t{next(_schemas)}"
        with psycopg.connect(self.base, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        return f"{self.base}?schema={schema}"

    def drop(self) -> None:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
