"""Reference billing: the auditor's oracle for docs/design.md §3.3, deliberately naive.

Second by second, plain Python and Decimal, no import of the production rating. Slow on
purpose: it should be obviously right, not fast. Inputs are plain dicts and tuples:

    version  = {"version": int, "effective_from": int (epoch s), "rate_vcpu_s": Decimal,
                "rate_gib_s": Decimal, "minor_unit": int, "min_seconds": int,
                "runtime_rates": {runtime: (rate_vcpu_s, rate_gib_s)}}
    instance = {"instance_id": str, "vcpu": Decimal, "memory_gib": Decimal, "runtime": str,
                "intervals": [(t0_us, t1_us), ...]}   # billed-state intervals, microseconds
"""

from __future__ import annotations

import datetime
import decimal
from decimal import ROUND_FLOOR, Decimal
from typing import Any

MICROS = 1_000_000


def touched_seconds(intervals: list[tuple[int, int]]) -> set[int]:
    """Every whole second in which some part of some interval lies."""
    seconds: set[int] = set()
    for t0, t1 in intervals:
        if t1 <= t0:
            continue  # empty: no time in it
        s = t0 // MICROS
        while s * MICROS < t1:  # second s = [s, s+1) meets [t0, t1)
            seconds.add(s)
            s += 1
    return seconds


def version_at(second: int, versions: list[dict[str, Any]]) -> dict[str, Any]:
    best = None
    for v in versions:
        if v["effective_from"] <= second and (
            best is None or v["effective_from"] > best["effective_from"]
        ):
            best = v
    if best is None:
        raise ValueError(f"no price version at second {second}")
    return best


def month_of(second: int) -> str:
    return datetime.datetime.fromtimestamp(second, tz=datetime.UTC).strftime("%Y-%m")


def price_of_second(instance: dict[str, Any], v: dict[str, Any]) -> Decimal:
    rate_v, rate_g = v["runtime_rates"].get(
        instance["runtime"], (v["rate_vcpu_s"], v["rate_gib_s"])
    )
    return instance["vcpu"] * rate_v + instance["memory_gib"] * rate_g


def half_up(amount: Decimal, minor_unit: int) -> Decimal:
    """Half-up for non-negative amounts, by hand: shift, add a half, floor, shift back."""
    scale = Decimal(10) ** minor_unit
    whole = (amount * scale + Decimal("0.5")).to_integral_value(rounding=ROUND_FLOOR)
    return whole / scale


def reference_lines(
    instances: list[dict[str, Any]], versions: list[dict[str, Any]]
) -> dict[tuple[str, str, int], dict[str, Any]]:
    """(period, instance_id, version) -> {seconds, topup_seconds, amount_exact, amount}."""
    lines: dict[tuple[str, str, int], dict[str, Any]] = {}
    with decimal.localcontext() as ctx:
        ctx.prec = 500  # far more digits than any test can produce: sums stay exact
        ctx.traps[decimal.Inexact] = True
        for inst in instances:
            seconds = sorted(touched_seconds(inst["intervals"]))
            for i, s in enumerate(seconds):
                v = version_at(s, versions)
                key = (month_of(s), inst["instance_id"], v["version"])
                line = lines.setdefault(
                    key,
                    {
                        "seconds": 0,
                        "topup_seconds": 0,
                        "amount_exact": Decimal(0),
                        "minor_unit": v["minor_unit"],
                    },
                )
                price = price_of_second(inst, v)
                line["seconds"] += 1
                line["amount_exact"] += price
                # Is s the last second of a run? Then look back for the run's length.
                if i + 1 == len(seconds) or seconds[i + 1] != s + 1:
                    length = 1
                    while i - length >= 0 and seconds[i - length] == s - length:
                        length += 1
                    missing = v["min_seconds"] - length
                    if missing > 0:
                        line["topup_seconds"] += missing
                        line["amount_exact"] += missing * price
        for line in lines.values():
            line["amount"] = half_up(line["amount_exact"], line["minor_unit"])
    return lines


def reference_totals(
    lines: dict[tuple[str, str, int], dict[str, Any]],
) -> dict[str, Decimal]:
    """Period -> sum of its rounded line amounts (one account's lines)."""
    totals: dict[str, Decimal] = {}
    for (period, _instance, _version), line in lines.items():
        totals[period] = totals.get(period, Decimal(0)) + line["amount"]
    return totals
