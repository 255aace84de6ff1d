"""An instance's usage: what it bills as, and its billed intervals (the fold's output).

The writer's meter keeps one per instance; the usage projection stores the same fields in
its rows and reads them back with `from_row`. Either way, lines come from one call.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from engine.billing import meter
from engine.billing.meter import Interval
from engine.billing.price_book import PriceBook
from engine.billing.rate import InvoiceLine, rate_instance
from engine.policies.spec_catalogue import Spec


@dataclass(slots=True, eq=False)
class Usage:
    name: str
    account: str
    runtime: str
    spec: Spec  # billed
    requested: Spec
    intervals: list[Interval] = field(default_factory=list)

    def lines(self, intervals: Iterable[Interval], horizon_us: int, book: PriceBook
              ) -> list[InvoiceLine]:
        """Lines of `intervals` (its own, or those it was billed with), open ones running to
        `horizon_us`: past the periods wanted, so a run still going gets no top-up in them."""
        return self._rate(meter.run_to(intervals, horizon_us), book)

    def accrued(self, as_of_us: int, book: PriceBook) -> list[InvoiceLine]:
        """Lines of its intervals as known at `as_of`: cut there, later ones dropped."""
        return self._rate(meter.cut_at(self.intervals, as_of_us), book)

    def _rate(self, intervals: list[tuple[int, int]], book: PriceBook) -> list[InvoiceLine]:
        return rate_instance(self.name, self.account, self.spec, self.runtime, intervals,
                             book, requested=self.requested)

    def event_id(self, version: int) -> str:
        """The id an instance event is known by in outcomes, adjustments and --explain."""
        return f"instance/{self.name}#{version}"


def from_row(row: Mapping[str, Any]) -> Usage:
    """A usage projection row (docs/design.md §3.5) as a value."""
    return Usage(row["instance_id"], row["account"], row["runtime"],
                 Spec(Decimal(row["billed_vcpu"]), Decimal(row["billed_memory_gib"])),
                 Spec(Decimal(row["requested_vcpu"]), Decimal(row["requested_memory_gib"])),
                 json.loads(row["intervals"]))
