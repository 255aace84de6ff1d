"""`cis simulate`: a workload through the real engine under a comparison of scenarios."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from adapters.cli_args import number_in, positive_int
from adapters.cli_what_if import add_arguments, cmd_what_if

DESCRIPTION = """\
Runs one workload through the real engine (memory store, virtual clock) under each scenario
of a comparison, with the simulated infrastructure behind the real driver ports (VMs boot in
45 s, sandboxes start in their runtime's measured time, nodes fail as the scenario says),
and reports the scenarios side by side: nodes over time, allocated and billed utilisation
per dimension, create-to-running latency p50/p99, expiries, scale-outs and scale-ins, cost
(node-hours x node price) against revenue (the invoices), margin and cost per billed
vCPU-hour. Same seed, same report.

The workload is synthetic (diurnal Poisson arrivals peaking at 14:00, lognormal lifetimes
with a 20-minute median, a Fargate-like spec mix from 0.25 vCPU / 0.5 GiB) or a recorded
trace: --trace FILE, a CSV of create_time, delete_time, cpu_milli, memory_mib[, account]
(seconds from the trace's start; each instance runs delete_time - create_time seconds
once started, to the run's end if delete_time is empty; launches after --hours never
come). Bad rows are skipped and each named with its line number and reasons on stderr;
none stops the run.

Writes report.md and PNG plots into --out; --json prints the figures as one JSON object.
"""

EPILOG = """\
examples:
  cis simulate --list
  cis simulate --scenario v1-vs-v2 --launches 20000 --out sim-out
  cis simulate --scenario runtimes --trace trace.csv --hours 6 --json
  cis simulate --scenario v2-kata --launches 500000 --cells 2 --out region
  cis simulate --what-if sqlite:///cis.db --placement-policy worst_fit --out what-if-out
"""


def cmd_simulate(args: argparse.Namespace) -> int:
    from simulations.simulate_scenarios import COMPARISONS

    if args.what_if is not None:
        if args.cells != 1:
            raise SystemExit("cis simulate: --cells splits a simulated region; a --what-if "
                             "replays the recorded log's own cells")
        return cmd_what_if(args)
    if args.placement_policy or args.scale_down_threshold or args.price_book:
        raise SystemExit("cis simulate: --placement-policy, --scale-down-threshold and "
                         "--price-book change a --what-if replay")
    if args.list:
        for name, (title, scenarios) in COMPARISONS.items():
            print(f"{name:<14}{title}")
            for scenario in scenarios:
                print(f"  {scenario.name:<18}{scenario.description}")
        return 0
    if args.scenario in COMPARISONS:
        return _run(args, *COMPARISONS[args.scenario])
    alone = [s for _, scenarios in COMPARISONS.values() for s in scenarios
             if s.name == args.scenario]
    if alone:  # one scenario of a comparison, by itself (a region-sized day of one design)
        return _run(args, alone[0].description, alone[:1])
    raise SystemExit(f"cis simulate: no scenario {args.scenario!r}; choose a comparison "
                     f"({', '.join(COMPARISONS)}) or one of its scenarios (cis simulate --list)")


def _run(args: argparse.Namespace, title: str, scenarios: list) -> int:  # type: ignore[type-arg]
    from tqdm import tqdm

    from simulations.simulate_cells import run_region
    from simulations.simulate_report import as_json, markdown, plots
    from simulations.workload_sources import read_csv, synthetic

    if args.trace is not None:
        try:
            workload = read_csv(args.trace)
        except OSError as exc:
            raise SystemExit(f"cis simulate: {exc}") from None
        for skipped in workload.skipped:
            print(f"{args.trace}:{skipped.line}: skipped: {skipped.reason}", file=sys.stderr)
    else:
        workload = synthetic(args.launches, args.hours, args.seed)
    began = time.perf_counter()
    cells = args.cells
    tasks = len(scenarios) * cells
    total = int(args.hours * 3600) * tasks  # simulated seconds over every scenario and cell
    done = [0] * tasks
    made = [0] * tasks
    with tqdm(total=total, unit="s", unit_scale=True, disable=None, leave=False,
              file=sys.stderr, desc=f"{args.scenario}: {_count(len(scenarios), 'scenario')}"
              f" x {_count(cells, 'cell')}") as bar:
        def progress(task: int, simulated_s: float, launches: int) -> None:
            done[task], made[task] = int(simulated_s), launches
            bar.set_postfix(launches=sum(made), refresh=False)
            bar.update(min(total, sum(done)) - bar.n)  # redraws at most every 0.1 s
        results = run_region(scenarios, workload, args.hours, args.seed, cells,
                             args.quantum, store=lambda scenario, cell: _store(
                                 args.store_dir, scenario, cell, cells), progress=progress)
    wall = time.perf_counter() - began
    report = as_json(title, workload.summary(), args.seed, args.hours, results, cells)
    args.out.mkdir(parents=True, exist_ok=True)
    pictures = plots(results, args.out)
    command = _command(args)
    (args.out / "report.md").write_text(markdown(report, results, pictures, command, wall))
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        print(json.dumps(report))
    else:
        print((args.out / "report.md").read_text())
    print(f"cis simulate: {len(results)} scenarios in {wall:,.1f} s; report in "
          f"{args.out / 'report.md'}", file=sys.stderr)
    return 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _store(directory: Path | None, scenario: str, cell: str, cells: int) -> str:
    """The memory store, or a fresh SQLite file per scenario (and cell) in `directory`."""
    if directory is None:
        return "memory://"
    directory.mkdir(parents=True, exist_ok=True)
    path = (directory / (f"{scenario}.db" if cells == 1 else f"{scenario}-{cell}.db")).resolve()
    for stale in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        stale.unlink(missing_ok=True)  # each run starts from an empty log
    return f"sqlite:///{path}"


def _command(args: argparse.Namespace) -> str:
    """The command that reproduces the figures (the output options aside)."""
    words = ["cis", "simulate", "--scenario", args.scenario, "--hours", f"{args.hours:g}",
             "--seed", str(args.seed)]
    words += ["--trace", str(args.trace)] if args.trace else ["--launches", str(args.launches)]
    if args.quantum != 1.0:
        words += ["--quantum", f"{args.quantum:g}"]
    if args.cells != 1:
        words += ["--cells", str(args.cells)]
    return shlex.join(words)


_hours = number_in(float, 0, 24 * 7, low_open=True)
_quantum = number_in(float, 0.001, 60)
_cells = number_in(int, 1, 64)


def register(sub: argparse._SubParsersAction) -> None:
    simulate = sub.add_parser(
        "simulate", help="compare scenarios (v1 vs v2, runtimes, policies, mishaps) on a "
        "workload through the real engine", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    simulate.add_argument("--scenario", default="v1-vs-v2", metavar="NAME",
                          help="the comparison to run (default v1-vs-v2), or one scenario "
                          "of one by itself (e.g. v2-kata; see --list)")
    simulate.add_argument("--list", action="store_true",
                          help="list the built-in comparisons and their scenarios")
    simulate.add_argument("--launches", "--instances", type=positive_int, default=2000,
                          help="synthetic launches over the run (default 2000)")
    simulate.add_argument("--hours", type=_hours, default=24.0,
                          help="simulated hours (default 24)")
    simulate.add_argument("--seed", type=int, default=7,
                          help="seed of the workload and the scenarios' mishaps (default 7)")
    simulate.add_argument("--trace", type=Path, default=None, metavar="CSV",
                          help="a recorded workload instead of the synthetic one")
    simulate.add_argument("--quantum", type=_quantum, default=1.0, metavar="SECONDS",
                          help="what is due within this many seconds is applied as one "
                          "batch (default 1; smaller is finer and slower)")
    simulate.add_argument("--cells", type=_cells, default=1, metavar="N",
                          help="split the region into N cells (launch k to cell k mod N), "
                          "each its own engine, run in N processes; the report merges them "
                          "(sums, series, percentiles of the pooled samples) and lists each "
                          "cell's figures in the JSON (default 1)")
    simulate.add_argument("--store-dir", type=Path, default=None, metavar="DIR",
                          help="keep each scenario's events in a fresh SQLite file here "
                          "instead of in memory (a day of 500,000 launches is millions of "
                          "events, a few KB each); slower, and the logs stay for cis "
                          "instances/usage/invoices --store sqlite:///DIR/SCENARIO.db")
    simulate.add_argument("--out", type=Path, default=Path("simulate-out"), metavar="DIR",
                          help="where report.md, report.json and the PNGs go "
                          "(default ./simulate-out)")
    simulate.add_argument("--json", action="store_true",
                          help="print the figures as one JSON object instead of the markdown")
    add_arguments(simulate)
    simulate.set_defaults(func=cmd_simulate)
