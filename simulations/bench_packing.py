"""Packing quality on the Vectorpack benchmark families (bins / OPT), online and offline."""

from __future__ import annotations

import os
import sys
import time
from multiprocessing import Pool
from pathlib import Path

from tqdm import tqdm

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


def _summary_for(path: Path) -> KnownOptimum | None:
    # Layout: <root>/<Family>/<class dir>/<name>.vbp next to <root>/<Family>_summary_known.csv.
    fam_dir = path.parent.parent
    csv_path = fam_dir.parent / f"{fam_dir.name}_summary_known.csv"
    if not csv_path.exists():
        return None
    return read_summary(csv_path).get(path.stem)


def pack_file(path: str | Path, policy: str | None = None, online: bool = False,
              time_budget: float = 0.5, known_lower_bound: int | None = None) -> dict:
    """Pack one `.vbp` file. Without a policy: best online rule / full offline portfolio."""
    p = Path(path)
    # Some published Triplet files hold -1/-2 sizes; read them as 0 rather than fail the run.
    inst = read_vbp(p, clamp_negative=True)
    t0 = time.perf_counter()
    if online:
        packing = pack_online(inst.items, inst.capacity, policy or BEST_ONLINE)
    else:
        packing = pack_offline(inst.items, inst.capacity, policy=policy, time_budget=time_budget,
                               known_lower_bound=known_lower_bound)
    return {
        "file": str(p),
        "instance": inst.name,
        "items": len(inst.items),
        "dims": inst.dims,
        "bins": packing.bins,
        "seconds": round(time.perf_counter() - t0, 4),
        "policy": packing.policy if policy is None else policy,
        "mode": "online" if online else "offline",
        "assignment": list(packing.assignment),
    }


def _task(args: tuple[str, str, list[tuple[str, bool]], float, int | None]) -> tuple:
    family, path, runs, budget, lb = args
    out = []
    for policy, online in runs:
        r = pack_file(path, None if policy == BEST else policy, online, budget, lb)
        out.append((policy, online, r["bins"], r["seconds"]))
    return family, Path(path).stem, out


def bench_packing(data_dir: str | Path, policies: list[str] | None = None, progress: bool = True,
                  families: tuple[str, ...] = FAMILIES, time_budget: float = 0.5,
                  processes: int | None = None, limit: int | None = None) -> dict:
    """Mean bins/OPT and #instances at OPT per family, policy and mode.

    `policies` may mix online rules and offline greedy names (each runs in its own mode);
    None runs the best of each mode. Offline search stops early at the csv's LB column.
    `limit` caps instances per family (for quick runs).
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
    tasks = []
    summaries = {}
    for fam in families:
        summaries[fam] = read_summary(root / f"{fam}_summary_known.csv")
        files = sorted((root / fam).glob("*/*.vbp"))[:limit]
        for f in files:
            known = summaries[fam].get(f.stem)
            tasks.append((fam, str(f), runs, time_budget, known.lb if known else None))
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

    report: dict = {"families": {}, "time_budget_s": time_budget}
    for fam in families:
        agg: dict[str, dict] = {}
        for f, name, out in results:
            if f != fam:
                continue
            known = summaries[fam].get(name)
            for policy, online, bins, secs in out:
                key = f"{'online' if online else 'offline'}:{policy}"
                a = agg.setdefault(key, {"policy": policy, "mode": "online" if online else
                                         "offline", "instances": 0, "with_opt": 0,
                                         "ratio_sum": 0.0, "at_opt": 0, "seconds": 0.0})
                a["instances"] += 1
                a["seconds"] += secs
                if known and known.opt:
                    a["with_opt"] += 1
                    a["ratio_sum"] += bins / known.opt
                    a["at_opt"] += bins == known.opt
        for a in agg.values():
            a["mean_ratio_to_opt"] = round(a.pop("ratio_sum") / a["with_opt"], 4) \
                if a["with_opt"] else None
            a["seconds"] = round(a["seconds"], 2)
        report["families"][fam] = agg
    report["total_seconds"] = round(time.perf_counter() - t0, 2)
    return report


if __name__ == "__main__":
    import json

    lim = int(sys.argv[2]) if len(sys.argv) > 2 else None
    print(json.dumps(bench_packing(sys.argv[1] if len(sys.argv) > 1 else
                                   "/work/shared/data/binpacking", limit=lim), indent=1))
