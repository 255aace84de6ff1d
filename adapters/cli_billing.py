"""`cis invoices`: an account's invoices, finalised or accruing, as text, JSON or CSV."""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from typing import Any

from adapters import cli_known, queries
from adapters.bootstrap import connect
from adapters.cli_args import account_name, store_arg, timestamp

CSV_COLUMNS = ("cell", "account", "period", "status", "kind", "line", "instance_id",
               "price_version", "runtime", "requested", "billed_spec", "rate_vcpu_s",
               "rate_gib_s", "price_per_second", "seconds", "topup_seconds", "corrects_period",
               "corrects", "amount", "currency", "content_hash", "provenance")


def _period(text: str) -> str:
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", text):
        raise argparse.ArgumentTypeError("a period is YYYY-MM, e.g. 2026-01")
    return text


def line_ref(text: str) -> str:
    """N, or INSTANCE[@VERSION]: ASCII only (`str.isdigit` also takes "²")."""
    if not queries.LINE_REF.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"not a line: {text!r} (a line number N, or INSTANCE[@VERSION])")
    return text


def export_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per invoice line, adjustment and total, for accounting. `provenance` is the
    reference `cis invoices --period P --explain REF` expands into the events behind it."""
    rows = []
    for inv in report["invoices"]:
        head = {k: inv[k] for k in ("cell", "account", "period", "status", "currency",
                                    "content_hash")}
        for x in inv["lines"]:
            rows.append({**head, **{k: x.get(k) for k in CSV_COLUMNS if k in x},
                         "kind": "line",
                         "provenance": f"{x['instance_id']}@{x['price_version']}"})
        for a in inv["adjustments"]:
            rows.append({**head, "kind": "adjustment", "instance_id": a["instance_id"],
                         "price_version": a["price_version"], "corrects_period": a["period"],
                         "corrects": " ".join(a["corrects"]), "amount": a["amount"],
                         "provenance": f"{a['instance_id']}@{a['price_version']}"})
        rows.append({**head, "kind": "total", "amount": inv["total"]})
    return rows


def _csv(report: dict[str, Any]) -> None:
    out = csv.DictWriter(sys.stdout, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    out.writeheader()
    out.writerows(export_rows(report))


def _text(report: dict[str, Any]) -> None:
    print(f"account {report['account']}, as of {report['as_of']}")
    for inv in report["invoices"]:
        state = (f"finalised {inv['finalised_at']}, hash "
                 f"{'verified' if inv['hash_verified'] else 'MISMATCH'}"
                 if inv["status"] == "finalised" else f"open, accrued to {inv['as_of']}")
        print(f"\n{inv['period']}  cell {inv['cell']}  ({state})")
        for x in inv["lines"]:
            top = f"+{x['topup_seconds']} min" if x["topup_seconds"] else ""
            spec = f"{x['billed_spec']} (asked {x['requested']})"
            print(f"  {x['line']:>3}  {x['instance_id']:<20} v{x['price_version']:<3} "
                  f"{spec:<50} {x['seconds']:>9} s"
                  f"{top:>10} x {x['price_per_second']:<14} {x['amount']:>12}")
        for a in inv["adjustments"]:
            print(f"  adj  {a['instance_id']:<20} v{a['price_version']:<3} for {a['period']}: "
                  f"{a['billed_before']} -> {a['recomputed']}  {a['amount']:>12}  "
                  f"corrects {' '.join(a['corrects']) or '(pending)'}")
        print(f"  total {inv['total']} {inv['currency']}   sha256 {inv['content_hash']}")
        if inv.get("chain_head"):
            print(f"  log chain head at finalisation {inv['chain_head']}")


def cmd_invoices(args: argparse.Namespace) -> int:
    with connect(args.store) as engine:
        engine.update_projections()
        reader = cli_known.reader(engine, args, args.account)
        if args.explain:
            result: Any = queries.explain(reader, args.account, args.explain, args.period,
                                          args.as_of)
            print(json.dumps(result, indent=2))
            return 0 if result else 1
        report = queries.invoices(reader, args.account, args.period, args.as_of)
    if args.json:
        print(json.dumps(report, indent=2))
    elif args.csv or args.format == "csv":
        _csv(report)
    elif args.format == "json":
        print(json.dumps(export_rows(report), indent=2))
    else:
        _text(report)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    inv = sub.add_parser(
        "invoices", help="an account's invoices: finalised, and open ones accruing",
        description="Finalised invoices exactly as recorded (content hash re-checked), and "
        "the open period accrued up to --as-of (default: the newest clock of the account's "
        "cells, never the wall clock), with any adjustments pending for finalised periods; "
        "with --known-at, exactly as they stood at that time.")
    store_arg(inv)
    inv.add_argument("--account", type=account_name, required=True,
                     help="the account to invoice")
    inv.add_argument("--period", type=_period, help="only this month, YYYY-MM (UTC)")
    inv.add_argument("--as-of", type=timestamp,
                     help="accrue open periods up to this ISO time, e.g. 2026-01-31T12:00:00Z")
    cli_known.add_known_at(inv)
    inv.add_argument("--explain", metavar="LINE", type=line_ref,
                     help="show the provenance of a line, adding up to it: the events that "
                     "opened and closed each billed interval, its seconds and top-up. LINE: "
                     "N (row N of the --period invoice, default the latest: its lines, then "
                     "its adjustments) or INSTANCE[@VERSION]; prints JSON")
    fmt = inv.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print JSON")
    fmt.add_argument("--csv", action="store_true", help="print CSV: one row per line, "
                     "adjustment and total (the same as --format csv)")
    fmt.add_argument("--format", choices=("csv", "json"),
                     help="an accounting export: one row per line, adjustment and total, "
                     "each line with its provenance reference (INSTANCE@VERSION, which "
                     "--explain expands into the events behind it), as CSV or a JSON array")
    inv.set_defaults(func=cmd_invoices)
