"""Read-side queries over the projections: what `cis instances` and `cis usage` show."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from decimal import Decimal
from typing import Any

from adapters.bootstrap import Engine
from projections.instances import INSTANCES
from projections.usage import PRICE_BOOKS, USAGE, price_versions, rate_usage


def newest_event_time(engine: Engine) -> datetime | None:
    """The time the log has reached: the default `as_of` (never the wall clock)."""
    last = engine.app.recorder.max_notification_id()
    if not last:
        return None
    (_, event), = engine.app.page(last - 1, 1)
    return event.timestamp


def instances(engine: Engine, account: str | None = None) -> list[dict[str, Any]]:
    return engine.view.select(INSTANCES, {"account": account} if account else None)


def states(engine: Engine) -> Counter[str]:
    return Counter(row["state"] for row in engine.view.select(INSTANCES))


def usage(engine: Engine, account: str, as_of: datetime | None = None) -> dict[str, Any]:
    """Billed seconds and amounts per instance of one account, accrued up to `as_of`."""
    as_of = as_of or newest_event_time(engine)
    books = {row["cell"]: price_versions(row) for row in engine.view.select(PRICE_BOOKS)}
    lines = []
    totals: dict[str, Decimal] = {}
    for row in engine.view.select(USAGE, {"account": account}):
        seconds = 0
        amount = Decimal(0)
        currency = None
        if as_of is not None and books.get(row["cell"]):
            for line in rate_usage(row, books[row["cell"]], as_of):
                seconds += line.seconds + line.topup_seconds
                amount += line.amount
                currency = line.currency
        if currency:
            totals[currency] = totals.get(currency, Decimal(0)) + amount
        lines.append({
            "cell": row["cell"], "instance_id": row["instance_id"], "state": row["state"],
            "requested": f"{row['requested_vcpu']} vCPU / {row['requested_memory_gib']} GiB",
            "billed_spec": f"{row['billed_vcpu']} vCPU / {row['billed_memory_gib']} GiB",
            "billed_seconds": seconds, "amount": str(amount), "currency": currency,
        })
    return {"account": account, "as_of": as_of.isoformat() if as_of else None,
            "instances": lines, "totals": {c: str(a) for c, a in totals.items()}}
