"""The auditor's model of finalisation and adjustments (docs/design.md §3.4), written apart from the
engine: billed intervals straight from the log's event names and the truth table, amounts
from the second-by-second oracle (tests/reference_billing.py), and its own book of what was
billed. The property tests replay the engine's commands through it and demand agreement to
the cent. The tests at the bottom check the model itself on hand-worked cases.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from adapters import queries
from adapters.bootstrap import Engine
from tests import reference_billing as ref

US = ref.MICROS
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
BILLED = {"starting", "running", "restarting"}  # docs/design.md §3.2, the truth table
STATES = {"Scheduled", "Unschedulable", "Starting", "Running", "Restarting", "Succeeded",
          "Failed", "Stopped", "Expired", "Deleted"}

Lines = dict[tuple[str, int], tuple[int, int, Decimal]]  # (instance, version) -> s, topup, amt
Adjustments = dict[tuple[str, str, int], Decimal]  # (period, instance, version) -> amount
Invoice = tuple[Lines, Adjustments, Decimal]


def month_bounds(period: str) -> tuple[int, int]:
    y, m = int(period[:4]), int(period[5:])
    nxt = (y + 1, 1) if m == 12 else (y, m + 1)
    return calendar.timegm((y, m, 1, 0, 0, 0)), calendar.timegm((*nxt, 1, 0, 0, 0))


def log_instances(engine: Engine) -> list[dict[str, Any]]:
    """Every instance with its billed intervals ([t0, t1 | None] in µs) from the log."""
    found: dict[str, dict[str, Any]] = {}
    state: dict[str, str] = {}
    for _, event in engine.app.read():
        kind, _, name = type(event).__qualname__.partition(".")
        if kind != "Instance":
            continue
        key = event.originator_id.hex
        if name == "Requested":
            found[key] = {"instance_id": event.name, "account": event.account,
                          "vcpu": event.billed_vcpu, "memory_gib": event.billed_memory_gib,
                          "runtime": event.runtime, "intervals": []}
            state[key] = "requested"
        elif name in STATES:
            new = name.lower()
            us = _micros(event.timestamp)
            if new in BILLED and state[key] not in BILLED:
                found[key]["intervals"].append([us, None])
            elif new not in BILLED and state[key] in BILLED:
                found[key]["intervals"][-1][1] = us
            state[key] = new
    return list(found.values())


def _micros(ts: Any) -> int:
    delta = ts - EPOCH
    return delta.days * 86_400 * US + delta.seconds * US + delta.microseconds


def _with(instances: list[dict[str, Any]], cut: Any) -> list[dict[str, Any]]:
    return [{**i, "intervals": [cut(a, b) for a, b in i["intervals"]]} for i in instances]


class Auditor:
    """Closes periods at ticks as docs/design.md §3.4 says, keeping its own book of amounts
    billed."""

    def __init__(self, versions: list[dict[str, Any]]):
        self.versions = versions
        self.closed: str | None = None
        self.billed: dict[tuple[str, str, str, int], Decimal] = {}
        self.invoices: dict[tuple[str, str], Invoice] = {}

    def _next(self) -> str:
        if self.closed is None:
            return ref.month_of(min(v["effective_from"] for v in self.versions))
        return ref.month_of(month_bounds(self.closed)[1])

    def _finalises_at(self, period: str) -> int:
        end = month_bounds(period)[1]
        return end + ref.version_at(end - 1, self.versions)["grace_seconds"]

    def _lines(self, instances: list[dict[str, Any]]) -> dict[tuple[str, str, str, int], Any]:
        out = {}
        for account in {i["account"] for i in instances}:
            mine = [i for i in instances if i["account"] == account]
            for (period, inst, version), line in ref.reference_lines(mine, self.versions).items():
                out[(account, period, inst, version)] = line
        return out

    def _pending(self, recomputed: dict[tuple[str, str, str, int], Any], upto: str
                 ) -> dict[str, Adjustments]:
        """Per account: recomputed amounts of periods <= upto minus what was billed."""
        out: dict[str, Adjustments] = {}
        keys = {k for k in recomputed if k[1] <= upto} | {k for k in self.billed if k[1] <= upto}
        for key in keys:
            now = recomputed[key]["amount"] if key in recomputed else Decimal(0)
            delta = now - self.billed.get(key, Decimal(0))
            if delta:
                out.setdefault(key[0], {})[key[1:]] = delta
        return out

    def tick(self, now_us: int, instances: list[dict[str, Any]]) -> None:
        while self._finalises_at(period := self._next()) * US <= now_us:
            end = month_bounds(period)[1]
            horizon = max(now_us, end * US + 1)  # a run still going is not over: no top-up
            lines = self._lines(_with(instances, lambda a, b, h=horizon: (
                a, b if b is not None else max(a, h))))
            before = ref.month_of(month_bounds(period)[0] - 1)
            pending = self._pending(lines, before) if self.closed is not None else {}
            accounts = {k[0] for k in lines if k[1] == period} | set(pending)
            for account in accounts:
                mine: Lines = {(k[2], k[3]): (x["seconds"], x["topup_seconds"], x["amount"])
                               for k, x in lines.items() if k[0] == account and k[1] == period}
                adjust = pending.get(account, {})
                for (inst, version), (_, _, amount) in mine.items():
                    self.billed[(account, period, inst, version)] = amount
                for (p, inst, version), amount in adjust.items():
                    key = (account, p, inst, version)
                    self.billed[key] = self.billed.get(key, Decimal(0)) + amount
                total = sum((x[2] for x in mine.values()), Decimal(0)) + sum(
                    adjust.values(), Decimal(0))
                self.invoices[(account, period)] = (mine, adjust, total)
            self.closed = period

    def open_invoices(self, as_of_us: int, instances: list[dict[str, Any]]
                      ) -> dict[tuple[str, str], Invoice]:
        """Open periods accrued to as_of, the first one carrying the pending adjustments."""
        cut = _with([{**i, "intervals": [iv for iv in i["intervals"] if iv[0] < as_of_us]}
                     for i in instances],
                    lambda a, b: (a, as_of_us if b is None else min(b, as_of_us)))
        out: dict[tuple[str, str], Invoice] = {}
        for (account, period, inst, version), x in self._lines(cut).items():
            if self.closed is None or period > self.closed:
                mine, adjust, _ = out.setdefault((account, period), ({}, {}, Decimal(0)))
                mine[(inst, version)] = (x["seconds"], x["topup_seconds"], x["amount"])
        if self.closed is not None:
            end = month_bounds(self.closed)[1]
            horizon = max(as_of_us, end * US + 1)
            full = self._lines(_with(instances, lambda a, b: (
                a, b if b is not None else max(a, horizon))))
            for account, adjust in self._pending(full, self.closed).items():
                out.setdefault((account, ref.month_of(end)), ({}, {}, Decimal(0)))[1].update(
                    adjust)
        return {k: (m, a, sum((x[2] for x in m.values()), Decimal(0)) + sum(a.values(),
                                                                          Decimal(0)))
                for k, (m, a, _) in out.items()}


def engine_invoices(engine: Engine, accounts: Iterable[str], as_of: Any
                    ) -> tuple[dict[tuple[str, str], Invoice], dict[tuple[str, str], Invoice]]:
    """(finalised, open) invoices as `cis invoices` reports them, in the auditor's shape."""
    finalised: dict[tuple[str, str], Invoice] = {}
    open_: dict[tuple[str, str], Invoice] = {}
    for account in accounts:
        for inv in queries.invoices(engine, account, as_of=as_of)["invoices"]:
            if inv["status"] == "finalised":
                assert inv["hash_verified"], inv
                for a in inv["adjustments"]:
                    assert a["corrects"], a  # a late adjustment names the events it corrects
            lines: Lines = {(x["instance_id"], x["price_version"]): (
                x["seconds"], x["topup_seconds"], Decimal(x["amount"])) for x in inv["lines"]}
            adjust: Adjustments = {}
            for a in inv["adjustments"]:
                key = (a["period"], a["instance_id"], a["price_version"])
                assert key not in adjust
                adjust[key] = Decimal(a["amount"])
            target = finalised if inv["status"] == "finalised" else open_
            assert (account, inv["period"]) not in target
            target[(account, inv["period"])] = (lines, adjust, Decimal(inv["total"]))
    return finalised, open_


# --- the model on hand-worked cases ----------------------------------------------------------

JAN31 = calendar.timegm((2026, 1, 31, 0, 0, 0))
FEB1 = calendar.timegm((2026, 2, 1, 0, 0, 0))
V1 = {"version": 1, "effective_from": JAN31 - 86400, "rate_vcpu_s": Decimal("0.01"),
      "rate_gib_s": Decimal("0"), "minor_unit": 2, "min_seconds": 0, "grace_seconds": 3600,
      "runtime_rates": {}}


def _inst(intervals: list[list[Any]]) -> list[dict[str, Any]]:
    return [{"instance_id": "i", "account": "a", "vcpu": Decimal(1), "memory_gib": Decimal(1),
             "runtime": "runc", "intervals": intervals}]


def test_auditor_finalises_after_grace_and_credits_a_late_stop() -> None:
    auditor = Auditor([V1])
    running = _inst([[(FEB1 - 100) * US, None]])
    auditor.tick((FEB1 + 3599) * US, running)
    assert auditor.invoices == {}
    auditor.tick((FEB1 + 3600) * US, running)
    assert auditor.invoices[("a", "2026-01")][2] == Decimal("1.00")  # 100 s at 0.01
    # The stop at FEB1 - 40 arrives late: February's invoice credits the last 40 seconds.
    stopped = _inst([[(FEB1 - 100) * US, (FEB1 - 40) * US]])
    opened = auditor.open_invoices((FEB1 + 7200) * US, stopped)
    assert opened == {("a", "2026-02"): ({}, {("2026-01", "i", 1): Decimal("-0.40")},
                                          Decimal("-0.40"))}
    auditor.tick((month_bounds("2026-02")[1] + 3600) * US, stopped)
    assert auditor.invoices[("a", "2026-02")][1] == {("2026-01", "i", 1): Decimal("-0.40")}
    assert auditor.billed[("a", "2026-01", "i", 1)] == Decimal("0.60")
