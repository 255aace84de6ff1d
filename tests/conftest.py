from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from adapters.bootstrap import Engine, connect
from tests.stores import PostgresTestDatabase, pg_available

pytest_plugins = ["tests.kafka_fixtures"]

STORES = ["memory", "sqlite", "postgres"]


@pytest.fixture(scope="session")
def pg_database() -> Iterator[PostgresTestDatabase]:
    if not pg_available():
        pytest.fail("PostgreSQL is not reachable on 127.0.0.1:5432 (see README: Tests)")
    db = PostgresTestDatabase()
    yield db
    db.drop()


@pytest.fixture
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    kind = getattr(request, "param", "memory")
    if kind == "memory":
        return "memory://"
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'cis.db'}"
    return request.getfixturevalue("pg_database").new_schema()


@pytest.fixture
def fresh_store(request: pytest.FixtureRequest, store_url: str, tmp_path: Path
                ) -> Callable[[], str]:
    """A new, empty store of `store_url`'s kind at each call: for tests that compare runs of
    the same commands (a second run on one store would only repeat recorded ids)."""
    count = iter(range(1, 1 << 30))

    def new() -> str:
        if store_url == "memory://":
            return "memory://"
        if store_url.startswith("sqlite"):
            return f"sqlite:///{tmp_path / f'run-{next(count)}.db'}"
        return request.getfixturevalue("pg_database").new_schema()

    return new


@pytest.fixture
def engine(store_url: str) -> Iterator[Engine]:
    with connect(store_url) as e:
        yield e


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Contract tests: every test that takes an engine or a store runs on every store.
    if "store_url" in metafunc.fixturenames and "store_url" not in [
            m.args[0] for m in metafunc.definition.iter_markers("parametrize")]:
        metafunc.parametrize("store_url", STORES, indirect=True)
