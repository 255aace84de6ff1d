"""A region of N cells: every scenario's cells run in up to N processes, then merged.

Each cell is its own engine on the memory store, its own simulated infrastructure and
virtual clock, fed the launches `simulate.split` deals it (launch k to cell k mod N). A
cell's run is a function of its launches, the scenario and the seed, and the parts are
merged in cell order, so the same seed and N give the same report, whichever process
finished first. Progress crosses the process boundary on a queue, a few times a simulated
hour per cell, so one bar shows the whole region.
"""

from __future__ import annotations

import multiprocessing
import queue
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from simulations import workloads
from simulations.simulate import Part, Result, cell_names, result, run_cell, split
from simulations.simulate_scenarios import Scenario
from simulations.workload_sources import Workload

REPORT_EVERY_S = 600.0  # a worker reports progress after this much simulated time
# (task, simulated seconds, launches created): how far each (scenario, cell) got.
Progress = Callable[[int, float, int], None]


@dataclass(frozen=True)
class Task:
    """One cell of one scenario."""

    index: int
    scenario: Scenario
    cell: str
    launches: list[Any]
    hours: float
    seed: int
    quantum_s: float
    store: str


def run_region(scenarios: list[Scenario], workload: Workload, hours: float, seed: int,
               cells: int = 1, quantum_s: float = 1.0,
               store: Callable[[str, str], str] = lambda scenario, cell: "memory://",
               progress: Progress | None = None) -> list[Result]:
    """Every scenario over `cells` cells, one Result each (the cells merged). One cell runs
    in this process; more run in `cells` worker processes. `store(scenario, cell)` names
    each cell's (empty) store."""
    names = cell_names(cells)
    shares = split(workload.launches, cells)
    tasks = [Task(k * cells + c, scenario, names[c], shares[c], hours, seed,
                  quantum_s, store(scenario.name, names[c]))
             for k, scenario in enumerate(scenarios) for c in range(cells)]
    parts = _in_process(tasks, progress) if cells == 1 else _in_workers(tasks, cells, progress)
    end = workloads.DAY_START + timedelta(hours=hours)
    return [result(scenario, parts[k * cells:(k + 1) * cells], end, hours)
            for k, scenario in enumerate(scenarios)]


def _run(task: Task, progress: Callable[[float, int], None] | None) -> Part:
    return run_cell(task.scenario, task.launches, task.hours, task.seed, task.cell,
                    task.quantum_s, progress=progress, store=task.store)


def _in_process(tasks: list[Task], progress: Progress | None) -> list[Part]:
    def report(task: Task) -> Callable[[float, int], None] | None:
        if progress is None:
            return None
        return lambda simulated_s, made: progress(task.index, simulated_s, made)
    return [_run(task, report(task)) for task in tasks]


def _in_workers(tasks: list[Task], workers: int, progress: Progress | None) -> list[Part]:
    # Workers start from a fresh server process, not a fork of this one (its progress
    # bar's thread, whatever locks it holds).
    context = multiprocessing.get_context("forkserver")
    with context.Manager() as manager, ProcessPoolExecutor(
            max_workers=min(workers, len(tasks)), mp_context=context,
            initializer=_worker_start) as pool:
        updates = manager.Queue()
        futures: list[Future[Part]] = [pool.submit(_in_worker, task, updates)
                                       for task in tasks]
        pending = set(futures)
        while pending:
            _, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            _drain(updates, progress)
        _drain(updates, progress)
        return [future.result() for future in futures]  # in task order: cells in order


def _drain(updates: Any, progress: Progress | None) -> None:
    while True:
        try:
            index, simulated_s, made = updates.get_nowait()
        except queue.Empty:
            return
        if progress is not None:
            progress(index, simulated_s, made)


def _worker_start() -> None:
    from adapters.bootstrap import tune_gc

    tune_gc()  # as the `cis` process does: a cell's world is a big heap


def _in_worker(task: Task, updates: Any) -> Part:
    sent = -REPORT_EVERY_S

    def report(simulated_s: float, made: int) -> None:
        nonlocal sent
        if simulated_s - sent >= REPORT_EVERY_S or simulated_s >= task.hours * 3600:
            sent = simulated_s
            updates.put((task.index, simulated_s, made))
    return _run(task, report)
