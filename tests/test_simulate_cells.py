"""`cis simulate --cells N`: a region's cells in parallel processes, merged into one report."""

from __future__ import annotations

import argparse
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from adapters import cli_simulate
from simulations import workloads
from simulations.simulate import cell_names, result, run_cell, split
from simulations.simulate_cells import run_region
from simulations.simulate_scenarios import V2
from simulations.workload_sources import synthetic

ARGS = ("--scenario", "node-loss", "--launches", "60", "--hours", "2", "--seed", "11")


def simulate(capsys: pytest.CaptureFixture[str], out: Path, *args: str) -> str:
    parser = argparse.ArgumentParser(prog="cis")
    cli_simulate.register(parser.add_subparsers())
    parsed = parser.parse_args(["simulate", "--out", str(out), "--json", *args])
    assert parsed.func(parsed) == 0
    return capsys.readouterr().out


def test_same_seed_and_cells_give_a_byte_equal_report(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = simulate(capsys, tmp_path / "a", *ARGS, "--cells", "2")
    second = simulate(capsys, tmp_path / "b", *ARGS, "--cells", "2")
    assert first == second
    one = simulate(capsys, tmp_path / "c", *ARGS)
    assert one != first  # two cells are two engines: not the one-cell run
    assert "--cells 2" in (tmp_path / "a" / "report.md").read_text()


def test_the_region_is_the_merge_of_its_cells() -> None:
    """Sums add up, the series are the cells' summed and the percentiles are of the pooled
    samples (not the cells' percentiles averaged); the worker processes give what one
    process gives."""
    hours, seed = 2.0, 11
    workload = synthetic(60, hours, seed)
    seen: set[int] = set()
    region, = run_region([V2], workload, hours, seed, cells=2,
                         progress=lambda task, simulated_s, made: seen.add(task))
    assert seen == {0, 1}  # both workers' progress reached this process

    names = cell_names(2)
    shares = split(workload.launches, 2)
    assert sorted((x for share in shares for x in share), key=repr) == sorted(
        workload.launches, key=repr)
    parts = [run_cell(V2, share, hours, seed, cell) for cell, share in
             zip(names, shares, strict=True)]
    end = workloads.DAY_START + timedelta(hours=hours)
    again = result(V2, parts, end, hours)
    assert again.figures == region.figures and again.cells == region.cells

    merged, cells = region.figures, region.cells
    assert [c["launches"] for c in cells] == [30, 30] and merged["launches"] == 60
    for key in ("started", "expired", "scale_out", "scale_in", "nodes_lost"):
        assert merged[key] == sum(c[key] for c in cells), key
    assert merged["revenue_usd"] == str(sum(Decimal(c["revenue_usd"]) for c in cells))
    assert merged["node_hours"] == pytest.approx(sum(c["node_hours"] for c in cells),
                                                 abs=0.002)
    for key in ("commands", "ended", "infra_commands"):
        assert merged[key] == {k: sum(c[key].get(k, 0) for c in cells)
                               for k in {k for c in cells for k in c[key]}}, key
    assert max(c["nodes_peak"] for c in cells) <= merged["nodes_peak"] \
        <= sum(c["nodes_peak"] for c in cells)
    pooled = [x for part in parts for x in part.to_scheduled]
    assert merged["to_scheduled_p99_s"] == round(float(np.percentile(pooled, 99)), 3)
    # The region's node count at every time is the sum of its cells' counts.
    alone = [result(V2, [part], end, hours) for part in parts]

    def level(r: object, t: float) -> float:
        at = np.searchsorted(r.times_h, t, side="right") - 1  # type: ignore[attr-defined]
        return r.series["nodes_paid"][at] if at >= 0 else 0.0  # type: ignore[attr-defined]
    assert len(region.times_h) > 10
    for k, t in enumerate(region.times_h):
        assert region.series["nodes_paid"][k] == sum(level(r, t) for r in alone)
