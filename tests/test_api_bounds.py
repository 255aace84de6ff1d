"""Cost bounds of queries, checked before any rating runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from adapters import queries


def test_query_bounds_refuse_too_many_periods() -> None:
    start = datetime(2030, 1, 15, tzinfo=UTC)
    rows = [{"cell": "c", "intervals": f"[[{queries.micros(start)}, null]]"}]
    far = start + timedelta(days=31 * queries.QUERY_MAX_PERIODS)
    with pytest.raises(queries.QueryError) as error:
        queries.check_periods(rows, {}, far)
    assert "QUERY_MAX_PERIODS" in str(error.value)
    queries.check_periods(rows, {}, start + timedelta(days=300))
    queries.check_periods(rows, {"c": "2031-06"}, far)  # finalised up to mid-2031: fewer open

