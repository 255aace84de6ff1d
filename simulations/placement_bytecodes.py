"""Bytecodes per placement: what a placement costs, whatever the machine's load.

The same steady-state loop as `bench_placement` (place, allocate, release a random live
instance), run under an opcode tracer: the count per operation, in total and per function,
does not depend on other jobs sharing the cores, so two versions of the index compare
exactly where CPU-time figures on a shared machine differ by 30% from run to run.

`warm` operations run untraced first: after a random pre-fill the index still learns block
misses and the state is not yet what best fit keeps, so the first placements cost more.

    .venv/bin/python -m simulations.placement_bytecodes 10000 100000 --warm 17000
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from types import FrameType
from typing import Any

from simulations.bench_placement import prepare, run_index


def count_bytecodes(nodes: int, placements: int = 3000, warm: int = 2000,
                    prefill: str | None = None, seed: int = 0) -> dict[str, Any]:
    """Bytecodes per operation of the index (harness excluded) and of its busiest functions."""
    st = prepare(nodes, "best_fit", warm + placements, seed=seed, prefill=prefill)
    index, stream, victims = st["index"], st["stream"], st["victims"]
    run_index(index, "best_fit", stream[:warm], victims[:warm], st["live"])
    counts: Counter[str] = Counter()

    def trace(frame: FrameType, event: str, arg: object) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode":
            counts[frame.f_code.co_name] += 1
        return trace

    sys.settrace(trace)
    try:
        run_index(index, "best_fit", stream[warm:], victims[warm:], st["live"])
    finally:
        sys.settrace(None)
    harness = counts.pop("run_index", 0) + counts.pop("<lambda>", 0)
    return {
        "nodes": nodes,
        "prefill": st["prefill"],
        "warm": warm,
        "placements": placements,
        "bytecodes_per_placement": round(sum(counts.values()) / placements),
        "harness_bytecodes_per_placement": round(harness / placements),
        "by_function": {f: round(c / placements, 1) for f, c in counts.most_common(12)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("nodes", type=int, nargs="+")
    parser.add_argument("--placements", type=int, default=3000)
    parser.add_argument("--warm", type=int, default=2000)
    parser.add_argument("--prefill", choices=["policy", "random"], default=None)
    args = parser.parse_args(argv)
    for n in args.nodes:
        print(json.dumps(count_bytecodes(n, args.placements, args.warm, args.prefill)),
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
