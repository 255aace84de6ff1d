"""`cis audit verify`: recompute each cell's hash chain over the stored log (engine/chain.py)
and name every event that was changed, deleted, inserted or moved (docs/design.md §2.11).

Exit 0 when every event chains, 1 naming each broken place (the first one first). What the
chain cannot see: someone who rewrites a cell's chain whole, from the tampered event to its
head. Against that, heads live outside the store: each finalised invoice shows its cell's
head (its finalisation event's link; older invoices recorded the head before their batch),
and `--export-heads` writes every head for publishing; `--heads` holds the log to heads
published earlier.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
from eventsourcing.utils import get_topic
from tqdm import tqdm

from adapters.bootstrap import connect
from adapters.cli_args import store_arg
from adapters.stores import existing_store
from engine.application import READ_PAGE, CisApplication
from engine.chain import Claims, Row, Stored, Verified, verify
from engine.domain.cell_log import CellLog
from engine.domain.invoice import Invoice

HEADS_FORMAT = "cis-chain-heads/1"
SHOWN = 50  # findings printed; the count says how many there are


def rows(app: CisApplication, progress: tqdm | None = None, page: int = READ_PAGE
         ) -> Iterator[Row]:
    """Every place in the log in order, each with its event and its link, a page of
    notification ids at a time."""
    recorder, after = app.chained_recorder, 0
    end = recorder.chain_end()
    if progress is not None:
        progress.reset(total=end)
    while after < end:
        stop = min(after + page, end)
        yield from recorder.select_chained(after, stop)
        if progress is not None:
            progress.update(stop - after)
        after = stop


def invoice_claims(app: CisApplication) -> Claims:
    """An invoice finalised before the rule of docs/design.md §2.11 recorded its cell's head
    before the batch that finalised it: checked. A newer one records none (its head is its
    own link, which the chain checks anyway)."""
    def claimed(stored: Stored) -> str | None:
        try:
            event = app.mapper.to_domain_event(stored)  # type: ignore[arg-type]
        except Exception as exc:  # it chains, yet does not decode: rewritten with its chain
            return f"undecodable ({exc!r})"
        return getattr(event, "chain_head", None)  # None: before the chain, or since §2.11

    return Claims(frozenset({get_topic(Invoice.InvoiceFinalized)}), claimed,
                  frozenset({get_topic(CellLog.CommandsHandled)}))


def verify_store(app: CisApplication, cells: Collection[str] | None = None,
                 pins: Mapping[int, tuple[str, bytes]] | None = None,
                 progress: tqdm | None = None) -> Verified:
    return verify(rows(app, progress), cells, pins, invoice_claims(app))


def heads_document(result: Verified) -> dict[str, Any]:
    """Each cell's head, to publish: where it is in the log, its link, its events."""
    return {"format": HEADS_FORMAT, "cells": {
        cell: {"notification_id": nid, "head": hashed.hex(), "events": count}
        for cell, (nid, hashed, count) in sorted(result.heads.items())}}


def read_pins(path: Path) -> dict[int, tuple[str, bytes]]:
    """Heads published earlier (a `--export-heads` file) as pins for `verify`."""
    try:
        document = orjson.loads(path.read_bytes())  # depth-bounded: a hostile file is an error
        if document.get("format") != HEADS_FORMAT:
            raise ValueError(f"not a {HEADS_FORMAT} document")
        return {int(h["notification_id"]): (cell, bytes.fromhex(h["head"]))
                for cell, h in document["cells"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SystemExit(f"cis audit verify: {path}: not a heads file ({exc})") from None


def report(result: Verified) -> dict[str, Any]:
    return {"intact": result.intact, "events": result.events, "cells": len(result.heads),
            "findings": len(result.findings),
            "first": [{"notification_id": f.notification_id, "cell": f.cell,
                       "event": f"{f.originator_id}#{f.originator_version}"
                       if f.originator_id else None, "problem": f.problem}
                      for f in result.findings[:SHOWN]]}


def cmd_verify(args: argparse.Namespace) -> int:
    pins = read_pins(args.heads) if args.heads else None
    with connect(existing_store(args.store)) as engine:
        with tqdm(desc="verifying", unit="event", unit_scale=True, disable=None,
                  file=sys.stderr) as bar:
            result = verify_store(engine.app, set(args.cell) if args.cell else None, pins, bar)
    if args.export_heads:
        args.export_heads.write_text(json.dumps(heads_document(result), indent=2) + "\n")
    summary = report(result)
    if args.json:
        print(json.dumps(summary, indent=2))
    elif result.intact:
        print(f"intact: {result.events} event(s) in {len(result.heads)} cell(s) chain")
    else:
        for f in summary["first"]:
            print(f"notification {f['notification_id']} (cell {f['cell']}"
                  f"{', ' + f['event'] if f['event'] else ''}) {f['problem']}")
        more = len(result.findings) - SHOWN
        hidden = f", {more} more not shown" if more > 0 else ""
        print(f"broken: {len(result.findings)} place(s){hidden}; the first is notification "
              f"{result.findings[0].notification_id}")
    return 0 if result.intact else 1


def register(actions: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    verify_parser = actions.add_parser(
        "verify", help="recompute every cell's hash chain; name each tampered event",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    store_arg(verify_parser)
    verify_parser.add_argument("--cell", action="append", metavar="CELL",
                               help="check only this cell (repeat for more)")
    verify_parser.add_argument("--export-heads", type=Path, metavar="FILE",
                               help="write each cell's chain head (JSON) to FILE, to publish")
    verify_parser.add_argument("--heads", type=Path, metavar="FILE",
                               help="heads exported earlier: the chain must still pass "
                               "through each (catches a chain rewritten whole)")
    verify_parser.add_argument("--json", action="store_true", help="print JSON")
    verify_parser.set_defaults(func=cmd_verify)
