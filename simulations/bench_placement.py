"""Placement throughput: NodeIndex versus the plain numpy scan, on one shared node pool.

The pool is pre-filled to `fill` of its CPU, then a steady-state stream runs: every operation
places one new instance (decision + allocation update) and releases a random live one, so
the load stays constant. The scan baseline replays the same operation stream on a copy of the
same start state (fewer operations at large N, it is slow) and we check the decisions agree.
Above 20,000 nodes the pre-fill is random (filling through the policy would take ~1M
placements), and 20,000 untimed operations then shape it as the policy keeps a pool
(`warm_operations`), so the figure is the steady state, as at the smaller sizes.

On a shared machine read `best_chunk_placements_per_s` (best 1000-operation slice) and
`cpu_time_placements_per_s` next to the wall-clock mean; `harness_us_per_placement` is the
loop's own cost (victim choice, bookkeeping), measured by replaying the decisions.
"""

from __future__ import annotations

import os
import time

import numpy as np

from engine.policies.batch import _greedy, plan_window
from engine.policies.node_index import NodeIndex
from engine.policies.placement import POLICIES, Placed

# (millicores, memory MiB, ENIs, pods) per node shape, with its share of the pool.
NODE_SHAPES: tuple[tuple[tuple[int, int, int, int], float], ...] = (
    ((16_000, 65_536, 8, 110), 0.25),
    ((32_000, 131_072, 15, 110), 0.55),
    ((64_000, 262_144, 15, 110), 0.20),
)
VCPUS = (0.25, 0.5, 1.0, 2.0, 4.0)
GIB_PER_VCPU = (2, 4, 8)  # Fargate-like memory/CPU ratios, clipped to 0.5-16 GiB


def make_pool(nodes: int, rng: np.random.Generator) -> np.ndarray:
    shapes = np.array([s for s, _ in NODE_SHAPES], dtype=np.int64)
    share = np.array([p for _, p in NODE_SHAPES])
    return shapes[rng.choice(len(shapes), size=nodes, p=share / share.sum())]


def make_demands(count: int, rng: np.random.Generator) -> np.ndarray:
    cpu = rng.choice(VCPUS, size=count)
    mem_gib = np.clip(cpu * rng.choice(GIB_PER_VCPU, size=count), 0.5, 16.0)
    out = np.ones((count, 4), dtype=np.int64)  # 1 ENI, 1 pod
    out[:, 0] = np.round(cpu * 1000)
    out[:, 1] = np.round(mem_gib * 1024)
    return out


def _random_fill(
    capacity: np.ndarray, fill: float, rng: np.random.Generator
) -> tuple[np.ndarray, list[tuple[int, list[int]]]]:
    """Each node gets random instances up to its own target share (mean `fill`) of its
    most-used dimension."""
    alloc = np.zeros_like(capacity)
    live: list[tuple[int, list[int]]] = []
    targets = np.clip(rng.uniform(0, 2 * fill, len(capacity)), 0, 1).tolist()
    demands = make_demands(64 * len(capacity) + 64, rng).tolist()
    k = 0
    for i, (cap, t) in enumerate(zip(capacity.tolist(), targets, strict=True)):
        a = [0, 0, 0, 0]
        for _ in range(64):
            dem = demands[k]
            k += 1
            new = [x + y for x, y in zip(a, dem, strict=True)]
            if any(x > c for x, c in zip(new, cap, strict=True)) or max(
                x / c for x, c in zip(new, cap, strict=True)) > t:
                break
            a = new
            live.append((i, dem))
        alloc[i] = a
    return alloc, live


def huge_page_mib() -> int | None:
    """This process's anonymous memory in transparent huge pages (Linux; None elsewhere).
    At 100,000 nodes most of a placement's extra cost is TLB misses over ~1 GB of objects:
    PYTHONMALLOC=malloc GLIBC_TUNABLES=glibc.malloc.hugetlb=1 puts the heap in huge pages."""
    try:
        with open("/proc/self/smaps_rollup") as f:
            for line in f:
                if line.startswith("AnonHugePages:"):
                    return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def default_prefill(nodes: int) -> str:
    # Pre-filling through the policy costs ~1M placements at 100k nodes: use random per-node
    # fills there, the policy itself up to 20k nodes.
    return "policy" if nodes <= 20_000 else "random"


def default_warm(nodes: int, prefill: str | None = None) -> int:
    """Untimed operations before timing: enough to shape a random fill (the steady state a
    real region is in), none after a fill by the policy itself."""
    return 20_000 if (prefill or default_prefill(nodes)) == "random" else 0


def prepare(
    nodes: int, policy: str = "best_fit", placements: int = 20_000, fill: float = 0.7,
    seed: int = 0, prefill: str | None = None, warm: int = 0,
) -> dict:
    """The start state (pool pre-filled to `fill`, then `warm` steady-state operations) and
    the operation stream, untimed."""
    if policy not in POLICIES:
        raise KeyError(f"unknown policy {policy!r}; known: {sorted(POLICIES)}")
    rng = np.random.default_rng(seed)
    capacity = make_pool(nodes, rng)
    prefill = prefill or default_prefill(nodes)
    live: list[tuple[int, list[int]]] = []
    start = np.zeros_like(capacity)
    if prefill == "random":
        start, live = _random_fill(capacity, fill, rng)
    index = NodeIndex(capacity, start, np.ones(nodes, dtype=bool))

    # Pre-fill with the same policy so the pool looks like one that policy has been running.
    # `fill` applies to the most-used dimension (ENIs usually bind first: 15 per node).
    target = (fill * capacity.sum(axis=0)).tolist()
    used = [0, 0, 0, 0]
    while prefill == "policy" and all(u < t for u, t in zip(used, target, strict=True)):
        placed = 0
        for dem in make_demands(1024, rng).tolist():
            got = index.place(dem, policy)
            if not isinstance(got, Placed):
                continue
            index.allocate(got.node_index, dem)
            live.append((got.node_index, dem))
            used = [u + x for u, x in zip(used, dem, strict=True)]
            placed += 1
            if not all(u < t for u, t in zip(used, target, strict=True)):
                break
        if not placed:
            break  # pool saturated before reaching the target
    # The index builds a policy's lists on first use (and sorts the nodes a demand like these
    # can use): not timed. Every demand takes an ENI and a pod slot.
    index.place([250, 512, 1, 1], policy)
    # A random fill is not what the policy keeps: the first placements on it cost more while
    # the index learns which blocks miss (design.md §6.1). Warm operations shape it first.
    if warm:
        run_index(index, policy, make_demands(warm, rng).tolist(), rng.random(warm).tolist(),
                  live)

    return {
        "capacity": capacity,
        "index": index,
        "live": live,
        "start_alloc": index.allocated.copy(),
        "start_live": list(live),
        "stream": make_demands(placements, rng).tolist(),
        "victims": rng.random(placements).tolist(),
        "prefill": prefill,
        "warm": warm,
    }


def run_index(
    index: NodeIndex, policy: str, stream: list[list[int]], victims: list[float],
    live: list[tuple[int, list[int]]], chunk: int = 1000,
) -> tuple[list[int], list[float]]:
    """The timed steady-state loop: (decisions, seconds per `chunk` operations). Mutates
    index and live. Per-chunk times let a shared, busy machine report a best-of-N."""
    decisions: list[int] = []
    times: list[float] = []
    t0 = time.perf_counter()
    for k, (dem, v) in enumerate(zip(stream, victims, strict=True)):
        if k and k % chunk == 0:
            t1 = time.perf_counter()
            times.append(t1 - t0)
            t0 = t1
        got = index.place(dem, policy)
        if isinstance(got, Placed):
            index.allocate(got.node_index, dem)
            live.append((got.node_index, dem))
            decisions.append(got.node_index)
        else:
            decisions.append(-1)
        # O(1) random victim: swap it to the end and pop.
        j = int(v * len(live))
        live[j], live[-1] = live[-1], live[j]
        node, old = live.pop()
        index.release(node, old)
    times.append(time.perf_counter() - t0)
    return decisions, times


def run_windows(
    index: NodeIndex, window: int, stream: list[list[int]], victims: list[float],
    live: list[tuple[int, list[int]]], chunk: int = 1000, compare: bool = False,
) -> tuple[list[int], list[float], int]:
    """The steady-state loop with batch placement: each window of `window` demands is planned
    together (engine.policies.batch.plan_window), then allocated, then as many random live
    instances are released. Returns (decisions, seconds per `chunk` operations, decisions
    that differ from one-by-one best fit on the same state; counted only with `compare`)."""
    decisions: list[int] = []
    times: list[float] = []
    differ = 0
    done = 0
    t0 = time.perf_counter()
    for lo in range(0, len(stream), window):
        part = stream[lo : lo + window]
        plan = plan_window(index, part)
        if compare:
            alone, _, _ = _greedy(index, part, range(len(part)))
            differ += sum(a != p for a, p in zip(alone, plan.nodes, strict=True))
        for dem, node in zip(part, plan.nodes, strict=True):
            if node is None:
                decisions.append(-1)
                continue
            index.allocate(node, dem)
            live.append((node, dem))
            decisions.append(node)
        for v in victims[lo : lo + window]:
            j = int(v * len(live))
            live[j], live[-1] = live[-1], live[j]
            node, old = live.pop()
            index.release(node, old)
        done += len(part)
        if done >= chunk:
            t1 = time.perf_counter()
            times.append((t1 - t0) * chunk / done)  # per `chunk` operations
            t0, done = t1, 0
    if done:
        times.append((time.perf_counter() - t0) * chunk / done)
    return decisions, times, differ


def bench_window(nodes: int, window: int, placements: int = 20_000, fill: float = 0.7,
                 seed: int = 0, prefill: str | None = None, chunk: int = 1000,
                 warm: int | None = None) -> dict:
    """Placements per second with batch placement in windows of `window` (best fit), on the
    same pool and stream as `bench_placement`, and how often a window's decisions differ
    from one-by-one best fit (counted in a second, untimed run over the same stream)."""
    warm = default_warm(nodes, prefill) if warm is None else warm
    st = prepare(nodes, "best_fit", placements, fill, seed, prefill, warm)
    cpu0 = time.process_time()
    decisions, times, _ = run_windows(st["index"], window, st["stream"], st["victims"],
                                      st["live"], chunk)
    cpu_s = time.process_time() - cpu0
    total = sum(times) * 1.0
    again = prepare(nodes, "best_fit", placements, fill, seed, prefill, warm)
    _, _, differ = run_windows(again["index"], window, again["stream"], again["victims"],
                               again["live"], chunk, compare=True)
    best = min(times[:-1] or times)
    return {
        "nodes": nodes,
        "policy": f"best_fit, window {window}",
        "window": window,
        "placements": placements,
        "placements_per_s": round(placements / total, 1) if total > 0 else None,
        "best_chunk_placements_per_s": round(chunk / best, 1),
        "cpu_time_placements_per_s": round(placements / max(cpu_s, 1e-9), 1),
        "unplaceable": decisions.count(-1),
        "decisions_differing_from_one_by_one": differ,
        "share_differing_from_one_by_one": round(differ / max(placements, 1), 4),
        "fill": fill,
        "prefill": st["prefill"],
        "warm_operations": warm,
        "huge_page_mib": huge_page_mib(),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


class _Replay:
    """Stands in for NodeIndex with recorded decisions, to time the harness alone."""

    def __init__(self, decisions: list[int]) -> None:
        self._got = iter([Placed(i, "", 0.0) if i >= 0 else None for i in decisions])

    def place(self, demand: list[int], policy: str) -> Placed | None:
        return next(self._got)

    def allocate(self, i: int, demand: list[int]) -> None:
        pass

    def release(self, i: int, demand: list[int]) -> None:
        pass


def bench_placement(
    nodes: int,
    policy: str = "best_fit",
    placements: int = 20_000,
    baseline_placements: int | None = None,
    fill: float = 0.7,
    seed: int = 0,
    prefill: str | None = None,
    chunk: int = 1000,
    warm: int | None = None,
) -> dict:
    """Placements per second (place + allocate + release) for NodeIndex and the numpy scan,
    after `warm` untimed operations (default: `default_warm`).

    `placements_per_s` is over the whole stream; `best_chunk_placements_per_s` the best of
    its `chunk`-operation slices (best-of-N: other jobs on the machine only ever slow a slice).
    """
    warm = default_warm(nodes, prefill) if warm is None else warm
    st = prepare(nodes, policy, placements, fill, seed, prefill, warm)
    capacity, stream, victims = st["capacity"], st["stream"], st["victims"]
    cpu0 = time.process_time()
    decisions, times = run_index(st["index"], policy, stream, victims, st["live"], chunk)
    cpu_s = time.process_time() - cpu0  # this process's CPU time: less sensitive to others
    index_s = sum(times)
    # The same loop around a replay of the decisions: what the harness itself costs.
    _, harness = run_index(_Replay(decisions), policy, stream, victims,  # type: ignore[arg-type]
                           list(st["start_live"]), chunk)
    best = min(times[:-1] or times)  # the last slice may be short
    best_harness = min(harness[:-1] or harness)
    per_chunk = min(chunk, placements)

    # Baseline: the plain scan, replaying a prefix of the same stream from the same state.
    if baseline_placements is None:
        baseline_placements = max(200, min(placements, 20_000_000 // max(nodes, 1)))
    base_n = min(baseline_placements, placements)
    alloc = st["start_alloc"].copy()
    eligible = np.ones(nodes, dtype=bool)
    live = list(st["start_live"])
    plain = POLICIES[policy]
    agree = 0
    t0 = time.perf_counter()
    for k in range(base_n):
        dem_np = np.asarray(stream[k], dtype=np.int64)
        got = plain(capacity, alloc, eligible, dem_np)
        if isinstance(got, Placed):
            alloc[got.node_index] += dem_np
            live.append((got.node_index, stream[k]))
            agree += got.node_index == decisions[k]
        else:
            agree += decisions[k] == -1
        j = int(victims[k] * len(live))
        live[j], live[-1] = live[-1], live[j]
        node, old = live.pop()
        alloc[node] -= old
    scan_s = time.perf_counter() - t0

    index_rate = placements / index_s if index_s > 0 else float("inf")
    scan_rate = base_n / scan_s if scan_s > 0 else float("inf")
    only_s = max(best - best_harness, 1e-9)
    return {
        "nodes": nodes,
        "policy": policy,
        "placements": placements,
        "placements_per_s": round(index_rate, 1),
        "us_per_placement": round(1e6 / index_rate, 2),
        "best_chunk_placements_per_s": round(per_chunk / best, 1),
        "cpu_time_placements_per_s": round(placements / max(cpu_s, 1e-9), 1),
        # Without the harness (victim choice, bookkeeping): place + allocate + release only,
        # as best slice minus best harness slice.
        "index_only_placements_per_s": round(per_chunk / only_s, 1),
        "harness_us_per_placement": round(1e6 * best_harness / per_chunk, 2),
        "unplaceable": decisions.count(-1),
        "fill": fill,
        "live_instances": len(st["start_live"]),
        "prefill": st["prefill"],
        "warm_operations": warm,
        "baseline_scan_placements": base_n,
        "baseline_scan_placements_per_s": round(scan_rate, 1),
        "speedup_vs_scan": round(index_rate / scan_rate, 2),
        "decisions_agree_with_scan": f"{agree}/{base_n}",
        "huge_page_mib": huge_page_mib(),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


if __name__ == "__main__":
    import json
    import sys

    # Arguments: node counts and/or policy names, e.g. `1000 10000 first_fit worst_fit`.
    sizes = [int(a) for a in sys.argv[1:] if a.isdigit()] or [1000, 10000, 100000]
    policies = [a for a in sys.argv[1:] if not a.isdigit()] or ["best_fit"]
    for policy in policies:
        for n in sizes:
            print(json.dumps(bench_placement(n, policy)), flush=True)
