"""`command_id_expired` is judged by the cell's clock where the command is decided, so the
same commands give the same answers and events at any batch size: one batch, or one batch
per command (what `cis serve` and `cis apply` may cut differently)."""

from __future__ import annotations

import json
from collections.abc import Callable

from adapters.bootstrap import connect
from tests import builders as b
from tests.test_determinism import _domain_events

DAY = 86_400


LINES = b.lines(b.price_book(), b.networks(), b.pool(), b.tick(8 * DAY),
                b.create("web-1", t=1),  # 8 days before the clock the Tick set
                b.create("web-2", t=8 * DAY))


def _run(store_url: str, batch: int) -> tuple[list[str], list[str]]:
    lines = LINES
    with connect(store_url) as engine:
        outcomes = []
        for i in range(0, len(lines), batch):
            outcomes += [o.to_json() for o in engine.apply(lines[i:i + batch])]
        return outcomes, _domain_events(engine)


def test_expiry_is_the_same_at_any_batch_size(fresh_store: Callable[[], str]) -> None:
    # Each run on a store of its own: on one store the second would only repeat ids.
    one_batch, events_one_batch = _run(fresh_store(), len(LINES))
    one_by_one, events_one_by_one = _run(fresh_store(), 1)
    assert one_batch == one_by_one
    assert events_one_batch == events_one_by_one
    late = json.loads(one_batch[4])
    assert late["status"] == "rejected"
    assert late["reasons"][0]["code"] == "command_id_expired"
    assert json.loads(one_batch[5])["status"] == "accepted"
