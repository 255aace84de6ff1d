"""`cis bench …` and `cis pack`: benchmarks print JSON; they run on purpose, never in CI."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from adapters.cli_args import number_in, positive_int

DATA = Path(os.environ.get("CIS_BINPACKING_DATA",
                           Path(__file__).resolve().parents[1].parent / "shared" / "data"
                           / "binpacking"))


def _emit(result: dict[str, Any], as_json: bool) -> int:
    if as_json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=2))
    return 0


def cmd_pack(args: argparse.Namespace) -> int:
    from simulations.bench_packing import pack_file

    try:
        result = pack_file(args.file, args.policy, online=args.online, window=args.window)
    except (ValueError, KeyError) as exc:  # a malformed file or an unknown policy
        raise SystemExit(f"cis pack: {exc}") from None
    return _emit(result, args.json)


def cmd_bench_apply(args: argparse.Namespace) -> int:
    from simulations.bench_apply import bench_apply

    return _emit(bench_apply(args.store, args.commands, args.batch, args.workload,
                             args.profile, args.remembered), args.json)


def cmd_bench_placement(args: argparse.Namespace) -> int:
    from simulations.bench_placement import bench_placement

    if args.window is not None:
        from simulations.bench_placement import bench_window

        return _emit(bench_window(args.nodes, args.window), args.json)
    return _emit(bench_placement(args.nodes, policy=args.policy), args.json)


def cmd_bench_packing(args: argparse.Namespace) -> int:
    from simulations.bench_packing import FAMILIES, bench_packing

    try:
        result = bench_packing(
            args.data, args.policies, families=args.families or FAMILIES,
            processes=args.processes,
            every=args.every, limit=args.limit, only_with_opt=args.only_with_opt,
            iterations=args.iterations, windows=args.window)
    except (KeyError, OSError) as exc:  # an unknown policy or family, a missing data folder
        raise SystemExit(f"cis bench packing: {exc}") from None
    return _emit(result, args.json)


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give one name or more, separated by commas")
    return names


def _windows(text: str) -> list[int]:
    return [positive_int(n) for n in _names(text)]


def cmd_bench_rating(args: argparse.Namespace) -> int:
    from simulations.bench_rating import bench_rating

    return _emit(bench_rating(args.intervals, args.accounts), args.json)


def cmd_bench_billing(args: argparse.Namespace) -> int:
    from simulations.bench_billing import bench_billing

    return _emit(bench_billing(args.intervals, args.accounts, args.store,
                               repeat=args.repeat), args.json)


def register(sub: argparse._SubParsersAction) -> None:
    pack = sub.add_parser("pack", help="pack a vector bin-packing instance (.vbp)",
                          description="Runs a placement policy on a VPSolver .vbp instance and "
                          "prints the number of bins and the time taken.")
    pack.add_argument("file", help="a .vbp file")
    pack.add_argument("--policy", help="policy name (default: the best we have for the mode)")
    mode = pack.add_mutually_exclusive_group()
    mode.add_argument("--online", action="store_true",
                      help="items in file order, no look-ahead")
    mode.add_argument("--offline", action="store_true", help="may sort and search (default)")
    mode.add_argument("--window", type=positive_int, default=None, metavar="K",
                      help="the engine's batch placement: items in file order, K at a time "
                      "(1 = one-by-one best fit)")
    pack.add_argument("--json", action="store_true", help="print one JSON line")
    pack.set_defaults(func=cmd_pack)

    bench = sub.add_parser("bench", help="benchmarks (JSON figures; run on purpose, not in CI)")
    group = bench.add_subparsers(dest="bench", required=True, metavar="BENCH")

    apply = group.add_parser("apply", help="commands/s of the apply path on a store")
    apply.add_argument("--store", default="memory://", help="store URL (default memory://)")
    apply.add_argument("--commands", type=positive_int, default=10_000)
    apply.add_argument("--batch", type=positive_int, default=1000)
    apply.add_argument("--workload", choices=["creates", "lifecycles"], default="creates",
                       help="creates: CreateInstance only; lifecycles: placed, started, "
                       "running, stopped, deleted (simulations/bench_apply.py)")
    apply.add_argument("--profile", action="store_true",
                       help="cProfile the timed part; its top functions in the JSON")
    apply.add_argument("--remembered", type=number_in(int, 0, 100_000_000), default=0,
                       metavar="N",
                       help="start with N earlier command ids remembered (a writer's steady "
                       "state: a busy cell remembers a week of them)")
    apply.add_argument("--json", action="store_true")
    apply.set_defaults(func=cmd_bench_apply)

    placement = group.add_parser("placement", help="placements/s in a shared pool of N nodes")
    placement.add_argument("--nodes", type=positive_int, default=10_000)
    placement.add_argument("--policy", default="best_fit")
    placement.add_argument("--window", type=positive_int, default=None, metavar="K",
                           help="batch placement: plan K demands at a time (best fit); "
                           "also counts decisions that differ from one by one")
    placement.add_argument("--json", action="store_true")
    placement.set_defaults(func=cmd_bench_placement)

    packing = group.add_parser(
        "packing", help="bins/OPT per policy and family, online and offline, over the shared "
        "vector-packing instances",
        description="Packs every instance of each family and reports, per policy and mode, the "
        "mean of bins/OPT over the instances with a known optimum, how many reached it, and "
        "the same mean per instance class (where the losses are). The offline search is "
        "budgeted in iterations, so figures do not depend on machine load. The whole run "
        "takes about 10 minutes on 2 cores; --every 10 gives a quick estimate.")
    packing.add_argument("--data", type=Path, default=DATA,
                         help=f"bin-packing data directory (default {DATA})")
    packing.add_argument("--families", type=lambda t: tuple(_names(t)), default=None,
                         help="comma-separated (default Panigrahy,New,Triplet)")
    packing.add_argument("--policies", type=_names, default=None,
                         help="comma-separated online rules and offline greedies, or 'best' "
                         "(default: the best of each mode)")
    packing.add_argument("--every", type=positive_int, default=1,
                         help="keep every N-th instance of a family (default 1: all)")
    packing.add_argument("--limit", type=positive_int, default=None,
                         help="at most N instances per family")
    packing.add_argument("--only-with-opt", action="store_true",
                         help="skip instances whose optimum is unknown")
    packing.add_argument("--processes", type=positive_int, default=None,
                         help="worker processes (default: up to 2)")
    packing.add_argument("--iterations", type=positive_int, default=None,
                         help="offline local-search budget per instance (default: by size)")
    packing.add_argument("--window", type=_windows, default=None, metavar="K[,K...]",
                         help="also (or, without --policies, only) the engine's batch "
                         "placement at these window sizes, e.g. 1,50,100")
    packing.add_argument("--json", action="store_true")
    packing.set_defaults(func=cmd_bench_packing)

    from simulations import bench_api, bench_history, bench_intake, bench_outbox

    bench_intake.register_bench(group)
    bench_outbox.register_bench(group)
    bench_api.register_bench(group)
    bench_history.register_bench(group)

    rating = group.add_parser("rating", help="pure rating time of N billed intervals")
    rating.add_argument("--intervals", type=positive_int, default=1_000_000)
    rating.add_argument("--accounts", type=positive_int, default=10_000)
    rating.add_argument("--json", action="store_true")
    rating.set_defaults(func=cmd_bench_rating)

    billing = group.add_parser("billing", help="invoicing N billed intervals from the log, "
                               "next to just reading those events")
    billing.add_argument("--intervals", type=positive_int, default=1_000_000)
    billing.add_argument("--accounts", type=positive_int, default=10_000)
    billing.add_argument("--store", default="memory://", help="store URL (default memory://)")
    billing.add_argument("--repeat", type=positive_int, default=1, help="best of N runs")
    billing.add_argument("--json", action="store_true")
    billing.set_defaults(func=cmd_bench_billing)
