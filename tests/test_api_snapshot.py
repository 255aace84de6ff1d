"""A request reads one snapshot: rows committed meanwhile stay out of it (no lock needed)."""

from __future__ import annotations

import pytest

from adapters import tokens
from adapters.bootstrap import Engine, connect


@pytest.mark.parametrize("store_url", ["sqlite", "postgres"], indirect=True)
def test_a_snapshot_does_not_see_later_commits(engine: Engine, store_url: str) -> None:
    tokens.create(engine.view, "acme")
    with engine.view.snapshot() as before:
        assert len(before.select(tokens.TOKENS)) == 1
        with connect(store_url) as writer:  # another connection commits meanwhile
            tokens.create(writer.view, "globex")
        assert len(before.select(tokens.TOKENS)) == 1
        assert before.max_tracking_id("instances") is None
    with engine.view.snapshot() as after:
        assert len(after.select(tokens.TOKENS)) == 2
