"""`cis simulate`'s report: the scenarios side by side as a markdown table, PNG plots and JSON.

The JSON is the figures alone (a function of workload, scenarios and seed); the markdown
adds how long the run took, which is not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from simulations.simulate import Result

# (figure key, row label, format) in the order the table shows them.
ROWS: tuple[tuple[str, str, str], ...] = (
    ("description", "what", "{}"),
    ("launches", "launches", "{:,}"),
    ("started", "started (ran at least once)", "{:,}"),
    ("expired", "expired pending", "{:,}"),
    ("nodes_peak", "nodes, peak", "{:,}"),
    ("nodes_mean", "nodes, mean", "{:,.1f}"),
    ("node_hours", "node-hours", "{:,.1f}"),
    ("scale_out", "scale-outs (nodes requested)", "{:,}"),
    ("scale_in", "scale-ins (nodes terminated)", "{:,}"),
    ("nodes_lost", "nodes lost", "{:,}"),
    ("allocated_cpu", "allocated cpu / ready capacity", "{:.1%}"),
    ("billed_cpu", "billed cpu / ready capacity", "{:.1%}"),
    ("allocated_memory", "allocated memory / ready capacity", "{:.1%}"),
    ("billed_memory", "billed memory / ready capacity", "{:.1%}"),
    ("to_scheduled_p50_s", "create to scheduled p50 (s)", "{:,.1f}"),
    ("to_scheduled_p99_s", "create to scheduled p99 (s)", "{:,.1f}"),
    ("pending_p50_s", "create to running p50 (s)", "{:,.2f}"),
    ("pending_p99_s", "create to running p99 (s)", "{:,.2f}"),
    ("billed_vcpu_hours", "billed vCPU-hours", "{:,.1f}"),
    ("cost_usd", "cost (node-hours x price), USD", "{}"),
    ("revenue_usd", "revenue (invoices), USD", "{}"),
    ("margin", "margin", "{:.1%}"),
    ("cost_per_billed_vcpu_hour_usd", "cost per billed vCPU-hour, USD", "{:.4f}"),
)

PLOTS = (("nodes", "nodes paid for", ("nodes_paid",)),
         ("pending", "instances pending", ("pending",)))
# Utilisation per dimension: (title, allocated, billed, ready capacity) series.
UTILISATION = (("cpu", "alloc_cpu", "billed_cpu", "cap_cpu"),
               ("memory", "alloc_mem", "billed_mem", "cap_mem"))


def as_json(title: str, workload: dict[str, Any], seed: int, hours: float,
            results: list[Result], cells: int = 1) -> dict[str, Any]:
    """With several cells, each scenario's figures are the region's and list each cell's."""
    if cells == 1:
        return {"comparison": title, "seed": seed, "hours": hours, "workload": workload,
                "scenarios": [r.figures for r in results]}
    return {"comparison": title, "seed": seed, "hours": hours, "cells": cells,
            "workload": workload, "scenarios": [{**r.figures, "cells": r.cells}
                                                for r in results]}


def table(results: list[Result]) -> str:
    names = [r.figures["scenario"] for r in results]
    lines = ["| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for key, label, form in ROWS:
        cells = []
        for r in results:
            value = r.figures.get(key)
            if value is None:
                cells.append("–")
            else:
                numeric = isinstance(value, str) and form != "{}"  # decimal strings
                cells.append(form.format(float(value) if numeric else value))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plots(results: list[Result], out: Path) -> list[Path]:
    """nodes.png, utilisation.png (per dimension: billed solid, allocated dashed) and
    pending.png, every scenario a line on each."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    paths = []
    for stem, label, (key,) in PLOTS:
        fig, ax = plt.subplots(figsize=(10, 4), dpi=100)
        for r in results:
            ax.step(r.times_h, r.series[key], where="post", label=r.figures["scenario"])
        paths.append(_save(fig, ax, label, out / f"{stem}.png"))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), dpi=100, sharey=True)
    for ax, (dimension, allocated, billed, capacity) in zip(axes, UTILISATION, strict=True):
        for k, r in enumerate(results):
            whole = r.series[capacity]
            whole = whole + (whole == 0)  # 0 while no node is ready
            colour = f"C{k}"
            ax.step(r.times_h, r.series[billed] / whole, where="post", color=colour,
                    label=f"{r.figures['scenario']} billed")
            ax.step(r.times_h, r.series[allocated] / whole, where="post", color=colour,
                    linestyle="--", linewidth=0.8, label=f"{r.figures['scenario']} allocated")
        ax.set_title(f"{dimension}: share of the ready nodes' capacity")
    paths.insert(1, _save(fig, axes[0], None, out / "utilisation.png"))
    plt.close("all")
    return paths


def _save(fig: Any, ax: Any, title: str | None, path: Path) -> Path:
    if title:
        ax.set_title(title)
    for axis in fig.axes:
        axis.set_xlabel("simulated hours")
        axis.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    return path


def markdown(report: dict[str, Any], results: list[Result], pictures: list[Path],
             command: str, wall_seconds: float) -> str:
    workload = report["workload"]
    skipped = ""
    if workload.get("skipped"):
        skipped = (f" ({workload['skipped']} rows skipped: "
                   + ", ".join(f"{n} {r}" for r, n in workload["skipped_by_reason"].items())
                   + ")")
    launches = sum(r.figures["launches"] for r in results)
    return "\n".join([
        f"# cis simulate: {report['comparison']}", "",
        f"Workload: {workload['name']}, {workload['launches']:,} launches{skipped}; "
        f"{report['hours']:g} simulated hours; seed {report['seed']}"
        + (f"; {report['cells']} cells (launch k to cell k mod {report['cells']}), each its "
           "own engine, merged" if report.get("cells") else "") + ".", "",
        f"Command: `{command}`", "",
        table(results), "",
        "Utilisation is of the ready nodes' capacity, time-weighted; allocated is what "
        "placement took (billed spec plus the runtime's overhead), billed what tenants pay "
        "for. Cost counts each VM from its request to its termination or loss.", "",
        *[f"![{p.stem}]({p.name})" for p in pictures], "",
        f"Ran in {wall_seconds:,.1f} s of wall-clock time ({launches / wall_seconds:,.0f} "
        "launches/s over all scenarios).", ""])
