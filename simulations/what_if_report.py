"""`cis simulate --what-if`'s report: the recorded run and the what-if side by side, in
`cis simulate`'s table and plots, with where the decisions parted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adapters.audit_replay import _redacted
from simulations.simulate_report import table
from simulations.what_if import NOT_AVAILABLE, WhatIf

UNAVAILABLE_NOTE = (
    "Not available from a log (there is no simulated infrastructure to ask): launches "
    "after the run's end and the commands sent to the infrastructure. The what-if is "
    "open-loop: it gets only the reports the real infrastructure sent for the recorded "
    "decisions, so where it decides otherwise nothing reports on its choices and the "
    "reports about the recorded ones are rejected (the outcomes above); its node and "
    "latency figures are bounded by that.")


def as_json(w: WhatIf, store: str) -> dict[str, Any]:
    d = w.decisions
    return {
        "what_if": w.policy.describe(), "store": _redacted(store),
        "start": w.start.isoformat(), "end": w.end.isoformat(),
        "hours": round((w.end - w.start).total_seconds() / 3600, 4),
        "commands_changed": dict(sorted(w.policy.changed.items())),
        "decisions": {"agree": d.agree, "batches": d.batches, "commands": d.commands,
                      "events": d.events, "cells": sorted(d.cells),
                      "cells_differing": sorted(d.first),
                      "events_differing": len(d.first) + sum(d.more.values()),
                      "first_difference": {c: f.describe() for c, f in sorted(d.first.items())},
                      "not_replayable_batches": sum(d.not_replayable.values())},
        "not_available": list(NOT_AVAILABLE),
        "scenarios": [w.recorded.figures, w.what_if.figures]}


def markdown(report: dict[str, Any], w: WhatIf, pictures: list[Path], command: str,
             wall_seconds: float) -> str:
    d = report["decisions"]
    verdict = ("the same decisions, event for event" if d["agree"] else
               f"{d['events_differing']:,} of {d['events']:,} events differ, in "
               f"{len(d['cells_differing'])} of {len(d['cells'])} cells")
    changed = ", ".join(f"{n} {t}" for t, n in report["commands_changed"].items()) or "none"
    outcomes = sorted({*w.recorded.figures["commands"], *w.what_if.figures["commands"]})
    return "\n".join([
        f"# cis simulate --what-if: {report['what_if']}", "",
        f"Log: `{report['store']}`, {report['start']} to {report['end']} "
        f"({report['hours']:g} h); {d['batches']:,} batches and {d['commands']:,} commands "
        f"re-run through a fresh engine; commands changed: {changed}.", "",
        f"Decisions: **{verdict}**."
        + (f" {d['not_replayable_batches']:,} batches recorded before commands were kept "
           "could not be re-run." if d["not_replayable_batches"] else ""), "",
        *[f"- first difference in {text}" for text in d["first_difference"].values()], "",
        f"Command: `{command}`", "",
        table([w.recorded, w.what_if]), "",
        "| outcome | recorded | what-if |", "|---|---|---|",
        *[f"| {code} | {w.recorded.figures['commands'].get(code, 0):,} | "
          f"{w.what_if.figures['commands'].get(code, 0):,} |" for code in outcomes], "",
        UNAVAILABLE_NOTE, "",
        *[f"![{p.stem}]({p.name})" for p in pictures], "",
        f"Ran in {wall_seconds:,.1f} s of wall-clock time.", ""])
