"""`cis simulate --what-if STORE`: the store's recorded commands re-run under another policy,
reported beside the recorded run (simulations/what_if.py)."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import get_args

from adapters.bootstrap import connect, engine_limits
from adapters.cli_args import number_in
from schemas.commands import ConfigurePool

PLACEMENT_POLICIES = get_args(ConfigurePool.model_fields["placement_policy"].annotation)


def cmd_what_if(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from simulations.simulate_report import plots
    from simulations.what_if import what_if
    from simulations.what_if_policy import Policy, read_price_terms
    from simulations.what_if_report import as_json, markdown

    terms = None
    if args.price_book is not None:
        terms, problems = read_price_terms(args.price_book)
        if problems:
            raise SystemExit("cis simulate --what-if:\n" + "\n".join(problems))
    policy = Policy(args.placement_policy, args.scale_down_threshold, terms)
    began = time.perf_counter()
    with connect(args.what_if) as engine:
        total = engine.app.recorder.max_notification_id() or 0
        with tqdm(desc="re-run", unit="event", total=total, unit_scale=True, disable=None,
                  file=sys.stderr) as bar:
            try:
                result = what_if(engine, engine_limits(os.environ), policy, bar.update)
            except ValueError as exc:
                raise SystemExit(f"cis simulate --what-if: {exc}") from None
    wall = time.perf_counter() - began
    report = as_json(result, args.what_if)
    args.out.mkdir(parents=True, exist_ok=True)
    pictures = plots([result.recorded, result.what_if], args.out)
    (args.out / "report.md").write_text(markdown(report, result, pictures, _command(args), wall))
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report) if args.json else (args.out / "report.md").read_text())
    print(f"cis simulate --what-if: {report['decisions']['batches']:,} batches re-run in "
          f"{wall:,.1f} s; report in {args.out / 'report.md'}", file=sys.stderr)
    return 0


def _command(args: argparse.Namespace) -> str:
    """The command that reproduces the figures (the output options aside)."""
    words = ["cis", "simulate", "--what-if", args.what_if]
    if args.placement_policy is not None:
        words += ["--placement-policy", args.placement_policy]
    if args.scale_down_threshold is not None:
        words += ["--scale-down-threshold", f"{args.scale_down_threshold:g}"]
    if args.price_book is not None:
        words += ["--price-book", str(args.price_book)]
    return shlex.join(words)


_threshold = number_in(float, 0, 1, low_open=True)


def add_arguments(simulate: argparse.ArgumentParser) -> None:
    what_if = simulate.add_argument_group(
        "what-if", "re-run a recorded log's own commands under another policy instead of a "
        "workload (every batch as recorded, through a fresh memory engine)")
    what_if.add_argument("--what-if", default=None, metavar="STORE_URL",
                         help="the store whose log is re-run, e.g. sqlite:///cis.db")
    what_if.add_argument("--placement-policy", choices=PLACEMENT_POLICIES, default=None,
                         help="every ConfigurePool's placement policy in the re-run")
    what_if.add_argument("--scale-down-threshold", type=_threshold, default=None,
                         metavar="SHARE", help="every ConfigurePool's scale-in "
                         "utilisation threshold in the re-run (0 to 1)")
    what_if.add_argument("--price-book", type=Path, default=None, metavar="FILE",
                         help="a JSON object of price-book terms replacing those of every "
                         "PublishPriceBook in the re-run, e.g. "
                         '{"rate_per_vcpu_second": "0.0000135"}')
