"""Packing quality on the Vectorpack benchmark families (bins / OPT), online and offline."""

from __future__ import annotations

import os
import sys
import time
from functools import lru_cache
from multiprocessing import Pool
from pathlib import Path

from tqdm import tqdm

from engine.policies.batch import pack_windows
from engine.policies.packing import (
    BEST_ONLINE,
    OFFLINE_POLICIES,
    ONLINE_RULES,
    pack_offline,
    pack_online,
)
from simulations.vbp import KnownOptimum, read_summary, read_vbp

FAMILIES = ("Panigrahy", "New", "Triplet")
BEST = "best"  # policy name meaning "the best we have for that mode"
WINDOW = "window"  # policy name prefix: the engine's batch placement, windowK


SAFETY_CAP_S = 10.0  # wall-clock cap only; the search itself is budgeted in iterations


@lru_cache(maxsize=8)
def _summary(csv_path: Path) -> dict[str, KnownOptimum]:
    return read_summary(csv_path)


def _summary_for(path: Path) -> KnownOptimum | None:
    # Layout: <root>/<Family>/<class dir>/<name>.vbp next to <root>/<Family>_summary_known.csv;
    # names repeat across families, so only the file's own family is consulted.
    fam_dir = path.parent.parent
    csv_path = fam_dir.parent / f"{fam_dir.name}_summary_known.csv"
    if not csv_path.is_file():
        return None
    try:
        return _summary(csv_path.resolve()).get(path.stem)
    except (OSError, ValueError):
        return None  # a bound only saves time; never fail a pack over it


def known_bound(k: KnownOptimum | None) -> int | None:
    """Best proven lower bound in a summary row: the LB column, or OPT when it is known (a
    proven optimum is a lower bound too; stopping there cannot change the bins found)."""
    if k is None:
        return None
    return max(k.lb, k.opt or 0)


def pack_file(path: str | Path, policy: str | None = None, online: bool = False,
              time_budget: float = SAFETY_CAP_S, known_lower_bound: int | None = None,
              iterations: int | None = None, window: int | None = None) -> dict:
    """Pack one `.vbp` file. Without a policy: best online rule / full offline portfolio.
    With `window`: the engine's batch placement, items in file order in windows of that
    many (`engine.policies.batch.pack_windows`; 1 is one-by-one best fit).

    Offline search stops at `known_lower_bound`, looked up in the family's summary CSV next
    to the data when not given (absent file or row: only the trivial bound is used)."""
    p = Path(path)
    # Some published Triplet files hold -1/-2 sizes; read them as 0 rather than fail the run.
    inst = read_vbp(p, clamp_negative=True)
    if known_lower_bound is None and not online:
        known_lower_bound = known_bound(_summary_for(p))
    t0 = time.perf_counter()
    if window is not None:
        packing = pack_windows(inst.items, inst.capacity, window)
    elif online:
        packing = pack_online(inst.items, inst.capacity, policy or BEST_ONLINE)
    else:
        packing = pack_offline(inst.items, inst.capacity, policy=policy, time_budget=time_budget,
                               known_lower_bound=known_lower_bound, iterations=iterations)
    return {
        "file": str(p),
        "instance": inst.name,
        "items": len(inst.items),
        "dims": inst.dims,
        "bins": packing.bins,
        "seconds": round(time.perf_counter() - t0, 4),
        "policy": packing.policy if policy is None else policy,
        "mode": "window" if window is not None else "online" if online else "offline",
        "window": window,
        "lower_bound": known_lower_bound,
        "assignment": list(packing.assignment),
    }


def instance_class(name: str) -> str:
    """`class7_250_5_3` -> `class7` (the generator's class: where losses differ most)."""
    return name.split("_", 1)[0]


def _task(args: tuple[str, str, list[tuple[str, bool]], float, int | None, int | None]
          ) -> tuple:
    family, path, runs, budget, lb, iterations = args
    out = []
    for policy, online in runs:
        c0 = time.process_time()
        if policy.startswith(WINDOW):
            r = pack_file(path, window=int(policy.removeprefix(WINDOW)))
        else:
            r = pack_file(path, None if policy == BEST else policy, online, budget, lb,
                          iterations)
        out.append((policy, online, r["bins"], r["seconds"], time.process_time() - c0))
    return family, Path(path).stem, out


def bench_packing(data_dir: str | Path, policies: list[str] | None = None, progress: bool = True,
                  families: tuple[str, ...] = FAMILIES, time_budget: float = SAFETY_CAP_S,
                  processes: int | None = None, limit: int | None = None, every: int = 1,
                  only_with_opt: bool = False, iterations: int | None = None,
                  windows: list[int] | None = None) -> dict:
    """Mean bins/OPT and #instances at OPT per family, policy and mode.

    `policies` may mix online rules and offline greedy names (each runs in its own mode);
    None runs the best of each mode. Offline search stops early at the csv's bound (LB, or
    OPT where known) and is otherwise budgeted in iterations, so figures do not depend on
    machine load; `time_budget` is a per-instance wall-clock safety cap.
    `windows` adds the engine's batch placement at each window size K (policy `windowK`,
    mode `online`: items in file order, K at a time).
    Sampling for quick runs: `only_with_opt` keeps instances with a known OPT, then every
    `every`-th file is kept, then `limit` caps instances per family.
    """
    root = Path(data_dir)
    if (root / "vectorpack").is_dir():
        root = root / "vectorpack"
    runs: list[tuple[str, bool]] = []
    for p in policies or [BEST]:
        if p == BEST:
            runs += [(BEST, True), (BEST, False)]
        elif p in ONLINE_RULES:
            runs.append((p, True))
        elif p in OFFLINE_POLICIES:
            runs.append((p, False))
        else:
            raise KeyError(f"unknown policy {p!r}; online {ONLINE_RULES}, "
                           f"offline {OFFLINE_POLICIES}")
    if windows and policies is None:
        runs = []  # --window alone: just the windows
    runs += [(f"{WINDOW}{k}", True) for k in windows or []]
    tasks = []
    summaries = {}
    for fam in families:
        summaries[fam] = read_summary(root / f"{fam}_summary_known.csv")
        files = sorted((root / fam).glob("*/*.vbp"))
        if only_with_opt:
            files = [f for f in files if (k := summaries[fam].get(f.stem)) and k.opt]
        for f in files[::every][:limit]:
            known = known_bound(summaries[fam].get(f.stem))
            tasks.append((fam, str(f), runs, time_budget, known, iterations))
    t0 = time.perf_counter()
    results = []
    procs = processes if processes is not None else min(2, os.cpu_count() or 1)
    bar = tqdm(total=len(tasks), file=sys.stderr, disable=not progress, desc="packing")
    if procs > 1:
        with Pool(procs) as pool:
            for r in pool.imap_unordered(_task, tasks, chunksize=4):
                results.append(r)
                bar.update()
    else:
        for t in tasks:
            results.append(_task(t))
            bar.update()
    bar.close()

    report: dict = {"families": {}, "time_budget_s": time_budget, "iterations": iterations,
                    "every": every, "only_with_opt": only_with_opt, "processes": procs,
                    "load_avg_at_start": os.getloadavg()[0]}
    for fam in families:
        agg: dict[str, dict] = {}
        by_class: dict[str, dict[str, list[float]]] = {}
        for f, name, out in results:
            if f != fam:
                continue
            known = summaries[fam].get(name)
            cls = instance_class(name)
            for policy, online, bins, secs, cpu in out:
                key = f"{'online' if online else 'offline'}:{policy}"
                a = agg.setdefault(key, {"policy": policy, "mode": "online" if online else
                                         "offline", "instances": 0, "with_opt": 0,
                                         "ratio_sum": 0.0, "at_opt": 0, "seconds": 0.0,
                                         "cpu_seconds": 0.0})
                a["instances"] += 1
                a["seconds"] += secs
                a["cpu_seconds"] += cpu
                if known and known.opt:
                    a["with_opt"] += 1
                    a["ratio_sum"] += bins / known.opt
                    a["at_opt"] += bins == known.opt
                    by_class.setdefault(key, {}).setdefault(cls, []).append(bins / known.opt)
        for key, a in agg.items():
            a["by_class"] = {c: round(sum(r) / len(r), 4)
                             for c, r in sorted(by_class.get(key, {}).items())}
            a["mean_ratio_to_opt"] = round(a.pop("ratio_sum") / a["with_opt"], 4) \
                if a["with_opt"] else None
            a["seconds"] = round(a["seconds"], 2)
            a["cpu_seconds"] = round(a["cpu_seconds"], 2)
        report["families"][fam] = agg
    report["total_seconds"] = round(time.perf_counter() - t0, 2)
    return report


if __name__ == "__main__":
    from adapters.cli import main

    sys.exit(main(["bench", "packing", *sys.argv[1:]]))
