"""`cis audit replay`: re-derive every projection and every recorded decision from the log
and compare them with what is stored (docs/design.md §2.11). Exit 0 when all agree, 1 naming
each differing row or event."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from tqdm import tqdm

from adapters.bootstrap import Engine, connect, engine_limits
from adapters.cli_args import store_arg, timestamp
from adapters.replay_decisions import DecisionsCompared, rerun_decisions
from adapters.replay_rows import RowsCompared, compare_projections
from adapters.stores import existing_store
from engine.limits import EngineLimits


@dataclass
class Replay:
    store: str
    rows: RowsCompared | None  # None: not compared (--known-at)
    decisions: DecisionsCompared

    @property
    def agree(self) -> bool:
        return (self.rows is None or self.rows.agree) and self.decisions.agree

    def differences(self) -> list[str]:
        found = [d.describe() for d in self.rows.differences] if self.rows else []
        if self.rows and self.rows.unreadable:
            found.append(f"projections cannot be rebuilt from the log: {self.rows.unreadable}")
        if self.rows:
            found += [f"projection {name}: live at position {live}, rebuilt at {rebuilt}"
                      for name, (live, rebuilt) in self.rows.positions.items()
                      if live != rebuilt]
        for cell, first in sorted(self.decisions.first.items()):
            more = self.decisions.more.get(cell, 0)
            found.append(first.describe() + (f" (and {more} more in this cell)" if more else ""))
        return found


def replay(engine: Engine, limits: EngineLimits, known_at: datetime | None = None,
           progress: bool | None = None) -> Replay:
    """Both comparisons; projections only over the whole log (the live tables hold all of
    it, so a cut at `known_at` has nothing live to be compared with)."""
    end = engine.app.recorder.max_notification_id() or 0
    rows = None
    if known_at is None:
        with _bar("projections", end, progress) as bar:
            rows = compare_projections(engine, bar.update)
    with _bar("decisions", end, progress) as bar:
        decisions = rerun_decisions(engine, limits, known_at, bar.update)
    return Replay(engine.store.url, rows, decisions)


def _bar(what: str, total: int, enabled: bool | None) -> tqdm:
    return tqdm(desc=what, unit="event", total=total, unit_scale=True,
                disable=None if enabled is None else not enabled, file=sys.stderr)


def markdown(result: Replay) -> str:
    """The report: what was compared, how much, and every difference."""
    d = result.decisions
    lines = ["# cis audit replay", "",
             f"- Store: `{_redacted(result.store)}`",
             f"- Known at: {d.known_at.isoformat() if d.known_at else 'everything recorded'}",
             f"- Verdict: **{'all agree' if result.agree else 'differences found'}**", "",
             "## Projections", ""]
    if result.rows is None:
        lines += ["Not compared: with `--known-at` only the decisions recorded up to it are "
                  "re-run; the live tables hold the whole log.", ""]
    else:
        lines += ["Every projection rebuilt from the log into a scratch view and compared "
                  "with the live tables, row by row.", "",
                  "| table | rows rebuilt |", "|---|---:|"]
        lines += [f"| {t} | {n} |" for t, n in result.rows.tables.items()]
        if result.rows.unreadable:
            lines += ["", f"**Not rebuilt**: {result.rows.unreadable}"]
        lines += ["", f"Differing rows: {len(result.rows.differences)}", ""]
        lines += [f"- {x.describe()}" for x in result.rows.differences]
        lines += [""]
    lines += ["## Decisions", "",
              "The commands kept in each `CellLog.CommandsHandled` event, re-run batch by "
              "batch (the same boundaries and limits) through a fresh engine from empty; its "
              "events compared with the stored ones (aggregate, version, topic, state bytes).",
              "",
              f"- Cells re-run: {len(d.cells)}",
              f"- Batches re-run: {d.batches}",
              f"- Commands re-run: {d.commands}",
              f"- Events compared: {d.events}",
              f"- Cells with a differing event: {len(d.first)}"]
    if d.not_replayable:
        lines += ["", "Not replayable (not a failure): batches recorded before commands were "
                  "kept beside their outcomes; such a cell is not re-run from its first one.",
                  "", "| cell | batches |", "|---|---:|"]
        lines += [f"| {c} | {n} |" for c, n in sorted(d.not_replayable.items())]
    if d.after_known_at:
        lines += ["", "Recorded after the known-at time (not re-run):", "",
                  "| cell | batches |", "|---|---:|"]
        lines += [f"| {c} | {n} |" for c, n in sorted(d.after_known_at.items())]
    if d.first:
        lines += ["", "First differing event per cell:", ""]
        for cell, first in sorted(d.first.items()):
            more = d.more.get(cell, 0)
            lines.append(f"- {first.describe()}; {more} more differing event(s) in this cell")
    return "\n".join(lines) + "\n"


def _redacted(url: str) -> str:
    return re.sub(r"://([^:/@]*):[^@/]*@", r"://\1:***@", url)  # no password in a report


def cmd_replay(args: argparse.Namespace) -> int:
    with connect(existing_store(args.store)) as engine:
        result = replay(engine, engine_limits(os.environ), args.known_at)
    for line in result.differences():
        print(f"differs: {line}")
    d = result.decisions
    print(json.dumps({
        "agree": result.agree,
        "tables": result.rows.tables if result.rows else None,
        "differing_rows": len(result.rows.differences) if result.rows else None,
        "batches": d.batches, "commands": d.commands, "events": d.events,
        "differing_cells": sorted(d.first),
        "not_replayable_batches": sum(d.not_replayable.values()),
        "after_known_at_batches": sum(d.after_known_at.values())}))
    if d.not_replayable:
        # Not a failure, but not a check either: say so where an operator will see it.
        print(f"cis audit replay: {sum(d.not_replayable.values())} batch(es) of cell(s) "
              f"{', '.join(sorted(d.not_replayable))} were recorded before commands were kept "
              "and could not be re-run: their decisions are unchecked", file=sys.stderr)
    if args.report:
        args.report.write_text(markdown(result), encoding="utf-8")
    return 0 if result.agree else 1


def register(actions: argparse._SubParsersAction) -> None:
    parser = actions.add_parser(
        "replay", help="rebuild the projections and re-run the decisions from the log; compare",
        description="Rebuild every projection from the log into a scratch schema or database "
        "and compare it with the live tables row by row; re-run every recorded batch of "
        "commands (kept beside their outcomes in the cell log) through a fresh engine from "
        "empty and compare its events with the stored ones one by one. Exit 0 when all "
        "agree, 1 naming each differing row and the first differing event of each cell. "
        "Batches recorded before commands were kept are reported as not replayable. The "
        "engine limits (CIS_* variables) must be those the log was written with.")
    store_arg(parser)
    parser.add_argument("--known-at", type=timestamp, default=None, metavar="K",
                        help="re-run only what was recorded up to K (a cell's batches whose "
                        "cell log is stamped no later); projections are then not compared")
    parser.add_argument("--report", type=Path, default=None, metavar="FILE",
                        help="write a markdown report: what was compared, counts, differences")
    parser.set_defaults(func=cmd_replay)
