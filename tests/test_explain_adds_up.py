"""`--explain` adds up (docs/design.md §3.4, issue 13 item 4): for every invoice line and
adjustment, on random lifecycles with late reports, the per-second provenance sums exactly to
the line; the rows of an invoice add up to its total; a past `as_of` cuts every interval."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from adapters import queries
from adapters.bootstrap import Engine
from engine.billing.money import round_money
from tests import builders as b
from tests.helpers import one, run
from tests.test_billing_engine import APRIL, cell

D = Decimal
ACCOUNTS = ("acme", "globex")


def _lifecycles(engine: Engine, seed: int) -> None:
    """Instances run across the end of February and of March; some stop, some end by a
    report that arrives after their period closed, and some start by one (a line that did
    not exist when the period was finalised)."""
    rng = random.Random(seed)
    # A short grace: February closes before a start still awaiting its report times out.
    cell(engine, book={"min_seconds": rng.choice([0, 60, 900]), "grace_seconds": 60})
    late_feb, late_march = [], []
    for n in range(rng.randint(2, 7)):
        name, account = f"i{n}", rng.choice(ACCOUNTS)
        late_start = rng.random() < 0.25
        start = rng.uniform(-50, -5) if late_start else rng.uniform(-3000, -5)
        run(engine, b.create(name, start, account=account))
        running = b.report("ReportInstanceRunning", start + rng.uniform(0, 4),
                           instance_id=name, account=account)
        if late_start:
            late_feb.append(running)  # reported only after February closed
            continue
        run(engine, running)
        end = rng.choice(["stop", "late", "late-march", "runs"])
        if end == "stop":
            run(engine, b.tenant("StopInstance", name, rng.uniform(-2000, 1000),
                                 account=account))
        elif end in ("late", "late-march"):
            at = rng.uniform(-1000, 1.5) if end == "late" else APRIL + rng.uniform(-900, 1.5)
            report = b.report("ReportInstanceTerminated", at, instance_id=name,
                              account=account, reason="lost")
            (late_feb if end == "late" else late_march).append(report)
    one(engine, b.tick(70))  # February finalised
    run(engine, *late_feb)
    one(engine, b.tick(APRIL + 70))  # March finalised, February corrected
    run(engine, *late_march)  # pending: the open April invoice shows them
    engine.update_projections()


def _rows(invoice: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    yield from (("line", x) for x in invoice["lines"])
    yield from (("adjustment", a) for a in invoice["adjustments"])


def _check_side(side: dict[str, Any]) -> None:
    assert sum(i["seconds_in_line"] for i in side["intervals"]) == side["seconds"]
    assert sum(i["topup_seconds"] for i in side["intervals"]) == side["topup_seconds"]
    exact = D(side["price_per_second"]) * (side["seconds"] + side["topup_seconds"])
    assert round_money(exact, 2) == D(side["amount"])


def _check(engine: Engine, account: str, as_of: Any = None) -> int:
    """Every row of every invoice explained: returns how many rows were."""
    report = queries.invoices(engine, account, as_of=as_of)
    checked = 0
    for invoice in report["invoices"]:
        covered = D(0)
        for n, (kind, row) in enumerate(_rows(invoice), 1):
            found = [e for e in queries.explain(engine, account, str(n), invoice["period"],
                                                as_of) if e["cell"] == invoice["cell"]]
            (entry,) = found
            assert entry["kind"] == kind and entry["invoice_total"] == invoice["total"]
            if kind == "line":
                assert entry["line"] == row
                held = entry["intervals"]
                assert sum(i["seconds_in_line"] for i in held) == row["seconds"]
                assert sum(i["topup_seconds"] for i in held) == row["topup_seconds"]
                assert all(i["opened_by"].startswith("instance/") for i in held)
                if invoice["status"] == "open":  # cut at as_of: nothing after it
                    assert all(i["closed_at"] is None or i["closed_at"] <= report["as_of"]
                               for i in held)
                covered += D(row["amount"])
            else:
                assert entry["adjustment"] == row
                for side in ("billed_before", "recomputed"):
                    _check_side(entry[side])
                assert D(entry["billed_before"]["amount"]) == D(row["billed_before"])
                assert D(entry["recomputed"]["amount"]) == D(row["recomputed"])
                covered += D(row["amount"])
            checked += 1
        assert covered == D(invoice["total"])
    return checked


@pytest.mark.parametrize("store_url", ["memory"], indirect=True)
@pytest.mark.parametrize("seed", range(40))
def test_explain_adds_up_on_random_lifecycles(engine: Engine, seed: int) -> None:
    _lifecycles(engine, seed)
    for account in ACCOUNTS:
        _check(engine, account)
        for days in (-0.02, 0.5, 20):  # past as_of: every interval cut there
            _check(engine, account, b.T0 + timedelta(days=days))


@pytest.mark.parametrize("seed", [3, 11])
def test_explain_adds_up_on_every_store(engine: Engine, seed: int) -> None:
    _lifecycles(engine, seed)
    assert sum(_check(engine, a) for a in ACCOUNTS) > 0


def test_past_as_of_cuts_closed_intervals_too(engine: Engine) -> None:
    """A run of ten days, stopped: explained as of its fifth day, it holds five days."""
    cell(engine)
    run(engine, b.create("x", 0), b.report("ReportInstanceRunning", 0, instance_id="x"),
        b.tick(10 * 86_400), b.tenant("StopInstance", "x", 10 * 86_400))
    engine.update_projections()
    (entry,) = queries.explain(engine, "acme", "x", "2026-03", b.T0 + timedelta(days=5))
    assert entry["line"]["seconds"] == 432_000 == entry["seconds"]
    (held,) = entry["intervals"]
    assert held["seconds_in_line"] == 432_000 and held["closed_by"] is None


def test_late_start_adjustment_is_explained(engine: Engine) -> None:
    """A line that did not exist when February was finalised: its adjustment holds the
    interval the late report opened, and nothing billed before."""
    cell(engine, book={"grace_seconds": 60})  # closed before the start times out
    run(engine, b.create("x", -30))
    one(engine, b.tick(70))
    assert one(engine, b.report("ReportInstanceRunning", -20, instance_id="x")).events
    one(engine, b.tick(APRIL + 70))
    engine.update_projections()
    march = [e for e in queries.explain(engine, "acme", "x", "2026-03")
             if e["kind"] == "adjustment"]
    (entry,) = [e for e in march if e["adjustment"]["period"] == "2026-02"]
    assert entry["billed_before"]["intervals"] == [] and entry["billed_before"]["seconds"] == 0
    (held,) = entry["recomputed"]["intervals"]
    assert held["opened_by"] == "instance/x#3" and held["seconds_in_line"] == 20
    assert entry["adjustment"]["billed_before"] == "0"
