"""Where `cis simulate`'s launches come from: a synthetic day, or a recorded trace (CSV).

A launch is what a tenant asked for and for how long it ran, independent of any pool or
runtime, so one workload can be replayed under several scenarios (v1 dedicated VMs, v2
shared Kata hosts, …) and the results compared on equal terms.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# Fargate-like specs (vCPU millicores, memory MiB), tiny ones first, with how often each is
# asked: most containers are small (public traces: the median task asks under one core).
SPEC_MIX: tuple[tuple[int, int, float], ...] = (
    (250, 512, 0.18), (250, 1024, 0.12), (500, 1024, 0.16), (500, 2048, 0.10),
    (1000, 2048, 0.14), (1000, 4096, 0.08), (2000, 4096, 0.09), (2000, 8192, 0.06),
    (4000, 8192, 0.04), (4000, 16384, 0.03),
)
MEDIAN_LIFETIME_S = 1200.0  # lognormal lifetimes: median 20 minutes ...
LIFETIME_SIGMA = 1.2  # ... with a long tail (a few run for hours)
MIN_LIFETIME_S = 30.0
DIURNAL_AMPLITUDE = 0.6  # arrivals peak at 14:00 at 1.6x the mean, trough at 02:00 at 0.4x
PEAK_HOUR = 14.0


@dataclass(frozen=True, slots=True)
class Launch:
    """One instance a tenant launched: when (seconds after the day's start), for how long it
    runs once started (None: until the end of the run), and its size."""

    at_s: float
    lifetime_s: float | None
    cpu_milli: int
    memory_mib: int
    account: str


@dataclass(frozen=True, slots=True)
class Skipped:
    line: int
    reason: str


@dataclass
class Workload:
    name: str
    launches: list[Launch]
    skipped: list[Skipped] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        reasons = Counter(s.reason.split(":")[0] for s in self.skipped)
        return {"name": self.name, "launches": len(self.launches),
                "skipped": len(self.skipped), "skipped_by_reason": dict(sorted(reasons.items()))}


def diurnal_rate(t_s: np.ndarray) -> np.ndarray:
    """Relative arrival rate at seconds-of-day `t_s` (mean 1 over a day)."""
    phase = 2 * math.pi * (t_s / 3600.0 - PEAK_HOUR) / 24.0
    return 1.0 + DIURNAL_AMPLITUDE * np.cos(phase)


def synthetic(launches: int, hours: float, seed: int, accounts: int = 20) -> Workload:
    """`launches` arrivals of a diurnal Poisson process over `hours`, lognormal lifetimes and
    the SPEC_MIX, all drawn from one seeded generator (same seed, same workload).

    Given their number, a Poisson process's arrival times are independent draws from its
    rate's density, so they are sampled by rejection against the diurnal rate."""
    rng = np.random.default_rng(seed)
    horizon = hours * 3600.0
    peak = 1.0 + DIURNAL_AMPLITUDE
    times = np.empty(0)
    while times.size < launches:
        draw = rng.uniform(0.0, horizon, size=max(2 * (launches - times.size), 16))
        keep = rng.uniform(0.0, peak, size=draw.size) < diurnal_rate(draw)
        times = np.concatenate([times, draw[keep]])
    times = np.sort(times[:launches])
    lifetimes = np.maximum(MIN_LIFETIME_S, rng.lognormal(math.log(MEDIAN_LIFETIME_S),
                                                         LIFETIME_SIGMA, size=launches))
    weights = np.array([w for _, _, w in SPEC_MIX])
    specs = rng.choice(len(SPEC_MIX), size=launches, p=weights / weights.sum())
    tenants = rng.integers(0, accounts, size=launches)
    out = [Launch(round(float(t), 3), round(float(life), 3), SPEC_MIX[s][0], SPEC_MIX[s][1],
                  f"tenant-{a:03d}")
           for t, life, s, a in zip(times, lifetimes, specs, tenants, strict=True)]
    return Workload(f"synthetic(launches={launches}, hours={hours:g}, seed={seed})", out)


COLUMNS = ("create_time", "delete_time", "cpu_milli", "memory_mib")
MAX_CPU_MILLI = 64_000  # the schema's largest vCPU (schemas/commands.py Vcpu)
MAX_MEMORY_MIB = 512 * 1024


# A row of five numbers and an account name is far shorter; anything longer is not a row.
MAX_ROW_CHARS = 1024


def read_csv(path: Path, default_account: str = "trace") -> Workload:
    """A recorded trace: `create_time, delete_time, cpu_milli, memory_mib[, account]`, times
    in seconds from the trace's start (an empty delete_time: still running when the trace
    ends), with or without a header row. A bad row is skipped and named (line number and
    every reason); none stops the read."""
    launches: list[Launch] = []
    skipped: list[Skipped] = []
    # Bytes that are not UTF-8 become U+FFFD: that row is named as bad, the rest read on.
    with open(path, newline="", errors="replace") as source:
        for number, line in enumerate(source, start=1):
            if len(line) > MAX_ROW_CHARS:  # csv's own field limit would stop the read
                skipped.append(Skipped(number, f"longer than {MAX_ROW_CHARS} characters"))
                continue
            row = next(csv.reader([line]), [])
            if not row or all(not cell.strip() for cell in row):
                continue
            if number == 1 and row[0].strip().lower() == "create_time":
                continue  # the header
            launch, reasons = _row(row, default_account)
            if reasons:
                skipped.append(Skipped(number, "; ".join(reasons)))
            else:
                launches.append(launch)  # type: ignore[arg-type]
    launches.sort(key=lambda x: x.at_s)
    return Workload(f"csv({path.name})", launches, skipped)


def _row(row: list[str], default_account: str) -> tuple[Launch | None, list[str]]:
    cells = [c.strip() for c in row]
    if not 4 <= len(cells) <= 5:
        return None, [f"columns: expected 4 or 5 ({', '.join(COLUMNS)}[, account]), "
                      f"got {len(cells)}"]
    reasons: list[str] = []
    create = _number(cells[0], "create_time", reasons)
    delete = None if cells[1] == "" else _number(cells[1], "delete_time", reasons)
    cpu = _whole(cells[2], "cpu_milli", MAX_CPU_MILLI, reasons)
    memory = _whole(cells[3], "memory_mib", MAX_MEMORY_MIB, reasons)
    account = cells[4] if len(cells) == 5 and cells[4] else default_account
    if create is not None and create < 0:
        reasons.append(f"create_time: must be at least 0, got {cells[0]}")
    if create is not None and delete is not None and delete <= create:
        reasons.append(f"delete_time: must be after create_time ({cells[1]} <= {cells[0]})")
    if reasons:
        return None, reasons
    lifetime = None if delete is None else delete - create  # type: ignore[operator]
    return Launch(create, lifetime, cpu, memory, account), []  # type: ignore[arg-type]


def _number(text: str, column: str, reasons: list[str]) -> float | None:
    try:
        value = float(text)
    except ValueError:
        reasons.append(f"{column}: not a number: {text!r}")
        return None
    if not math.isfinite(value):
        reasons.append(f"{column}: not a finite number: {text!r}")
        return None
    return value


def _whole(text: str, column: str, most: int, reasons: list[str]) -> int | None:
    value = _number(text, column, reasons)
    if value is None:
        return None
    if value != int(value) or not 0 < value <= most:
        reasons.append(f"{column}: a whole number from 1 to {most}, got {text!r}")
        return None
    return int(value)
