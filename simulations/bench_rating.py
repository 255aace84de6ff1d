"""Benchmark of the pure rating: synthetic billed intervals -> invoice lines -> invoices.

Data generation is seeded and not timed; only rate_instance + invoice_for are. The timer is
perf_counter, which measures the benchmark and never feeds billing time.

    python -m simulations.bench_rating [n_intervals] [n_accounts] [seed] [repeat]
"""

from __future__ import annotations

import calendar
import json
import random
import sys
import time
from decimal import Decimal

from engine.billing.invoice import invoice_for
from engine.billing.periods import US_PER_S
from engine.billing.price_book import PriceBook, PriceVersion, Rates
from engine.billing.rate import InvoiceLine, rate_instance
from engine.policies.spec_catalogue import DEFAULT_CATALOGUE, Spec

Instance = tuple[str, str, Spec, str, list[tuple[int, int]]]

MARCH = calendar.timegm((2024, 3, 1, 0, 0, 0))
APRIL = calendar.timegm((2024, 4, 1, 0, 0, 0))


def _book() -> PriceBook:
    kata = {"kata": Rates(Decimal("0.0000137"), Decimal("0.0000015"))}
    return PriceBook(
        (
            PriceVersion(1, MARCH - 86_400 * 90, Decimal("0.0000112444"),
                         Decimal("0.0000012347"), "EUR", 2, 60, 3600, kata),
            # A mid-month price change, so runs get split at a version boundary too.
            PriceVersion(2, MARCH + 86_400 * 15, Decimal("0.0000105"), Decimal("0.0000011"),
                         "EUR", 2, 60, 3600, kata),
        )
    )


def synthetic_instances(n_intervals: int, n_accounts: int, seed: int = 7) -> list[Instance]:
    """Instances with restart-y interval histories; some cross into April."""
    rnd = random.Random(seed)
    per_instance = 10
    n_instances = max(1, n_intervals // per_instance)
    specs = list(DEFAULT_CATALOGUE)
    out: list[Instance] = []
    made = 0
    for k in range(n_instances):
        count = n_intervals - made if k == n_instances - 1 else per_instance
        made += count
        t = (MARCH + rnd.randrange(0, APRIL - MARCH - 3600)) * US_PER_S
        intervals = []
        for _ in range(count):
            # Mostly restarts a fraction of a second apart, sometimes long gaps or overlaps.
            t += rnd.choice((0, 1, 250_000, 2 * US_PER_S, rnd.randrange(-US_PER_S, 600 * US_PER_S)))
            length = rnd.choice((300_000, 5 * US_PER_S, rnd.randrange(1, 3600 * US_PER_S)))
            intervals.append((t, t + length))
            t += length
        rnd.shuffle(intervals)
        account = f"acct-{k % n_accounts:05d}"
        runtime = "kata" if k % 5 == 0 else "runc"
        out.append((f"i-{k:07d}", account, rnd.choice(specs), runtime, intervals))
    return out


def _rate_and_invoice(instances: list[Instance], book: PriceBook) -> dict:
    t0 = time.perf_counter()
    by_account: dict[str, list[InvoiceLine]] = {}
    for instance_id, account, spec, runtime, intervals in instances:
        lines = rate_instance(instance_id, account, spec, runtime, intervals, book)
        by_account.setdefault(account, []).extend(lines)
    t1 = time.perf_counter()
    invoices = 0
    total = Decimal(0)
    for account, lines in by_account.items():
        for period in sorted({x.period for x in lines}):
            total += invoice_for(account, period, lines).total
            invoices += 1
    t2 = time.perf_counter()
    return {
        "n_accounts": len(by_account),
        "n_lines": sum(len(v) for v in by_account.values()),
        "n_invoices": invoices,
        "grand_total": str(total),
        "rate_seconds": t1 - t0,
        "invoice_seconds": t2 - t1,
    }


def bench_rating(
    n_intervals: int = 1_000_000, n_accounts: int = 10_000, seed: int = 7, repeat: int = 3
) -> dict:
    """Best of `repeat` runs (the box is shared; the minimum is the least disturbed)."""
    book = _book()
    instances = synthetic_instances(n_intervals, n_accounts, seed)
    runs = [_rate_and_invoice(instances, book) for _ in range(max(1, repeat))]
    best = min(runs, key=lambda r: r["rate_seconds"] + r["invoice_seconds"])
    seconds = best["rate_seconds"] + best["invoice_seconds"]
    return {
        "n_intervals": n_intervals,
        "n_instances": len(instances),
        **best,
        "rate_seconds": round(best["rate_seconds"], 3),
        "invoice_seconds": round(best["invoice_seconds"], 3),
        "seconds": round(seconds, 3),
        "intervals_per_s": round(n_intervals / seconds) if seconds else None,
        "rate_only_intervals_per_s": round(n_intervals / best["rate_seconds"]),
        "all_runs_seconds": [round(r["rate_seconds"] + r["invoice_seconds"], 3) for r in runs],
    }


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:5]]
    print(json.dumps(bench_rating(*args), indent=2))
