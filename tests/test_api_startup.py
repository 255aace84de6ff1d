"""Concurrent start-ups on one fresh PostgreSQL schema all succeed (issue 11 item 19: without
the advisory lock, 15 of 48 processes here failed with "tuple concurrently updated" or a
duplicate type in the catalog)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.stores import PostgresTestDatabase

STARTER = """
import sys, time
from adapters.bootstrap import connect
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # all open at the same instant
connect(sys.argv[1]).close()
"""


@pytest.mark.parametrize("round_", range(2))
def test_processes_starting_at_once_all_create_their_tables(
        pg_database: PostgresTestDatabase, round_: int) -> None:
    url = pg_database.new_schema()
    start = time.time() + 3  # after every interpreter has imported the engine
    starters = [subprocess.Popen([sys.executable, "-c", STARTER, url, str(start)],
                                 stderr=subprocess.PIPE, text=True) for _ in range(8)]
    errors = [p.communicate(timeout=120)[1] for p in starters]
    assert [p.returncode for p in starters] == [0] * 8, "\n".join(errors)
