"""`cis`: the command line of the engine. Every subcommand explains itself with --help."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import sqlite3
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import psycopg
from eventsourcing.persistence import IntegrityError, PersistenceError
from tqdm import tqdm

from adapters import cli_known, queries
from adapters.batching import batches
from adapters.bootstrap import Engine, connect, tune_gc
from adapters.cli_args import ACCOUNT, account_name, positive_int, store_arg, timestamp
from adapters.queries import QueryError
from adapters.stores import STORE_DOWN, BadConfiguration
from engine.policies.demand import DIMENSIONS
from projections.nodes import NODE_STATES
from projections.runner import position
from projections.tables import digest
from schemas.limits import MAX_LINE_BYTES
from schemas.outcomes import NotACommand, Outcome, Reason, parse_command

# Modules that add subcommands: each has `register(subparsers)`.
EXTENSIONS: list[str] = ["adapters.cli_kafka", "adapters.cli_bench", "adapters.cli_billing",
                         "adapters.cli_tokens", "adapters.cli_drivers", "adapters.cli_audit",
                         "adapters.cli_simulate"]



def _lines(source: TextIO) -> Iterator[bytes]:
    """Non-blank lines, each cut to one byte past MAX_LINE_BYTES: enough for the parser to
    answer "too long" (naming the command_id in its head) without holding a huge line."""
    stream = source.buffer if hasattr(source, "buffer") else source
    cap = MAX_LINE_BYTES + 1
    while line := stream.readline(cap):
        if len(line) == cap and not line.endswith(b"\n"):
            while (rest := stream.readline(cap)) and not rest.endswith(b"\n"):
                pass  # the rest of a line too long to decide: skipped, not held
        raw = line.rstrip(b"\r\n")
        if raw.strip():
            yield raw


def cmd_apply(args: argparse.Namespace) -> int:
    source = sys.stdin if args.file == "-" else open(args.file, "rb")  # noqa: SIM115
    role = None if args.role == "any" else args.role  # any: trusted, every command type
    undecided = 0
    with source, connect(args.store) as engine, tqdm(
            desc="commands", unit="cmd", disable=None, file=sys.stderr) as bar:
        batch: list[bytes] = []

        def flush() -> None:
            nonlocal undecided
            try:
                outcomes = engine.apply(batch, role=role)
            except IntegrityError:
                # Another writer kept changing these cells (one writer per cell is the rule):
                # nothing of the batch was stored; each line still gets its answer.
                outcomes = [not_decided(raw) for raw in batch]
                undecided += len(batch)
            for outcome in outcomes:
                print(outcome.to_json())
            bar.update(len(batch))
            batch.clear()

        for lines in batches(_lines(source), args.batch):
            batch.extend(lines)
            flush()
        try:
            engine.update_projections()
        except IntegrityError:  # another process projected the same events meanwhile
            print("cis: projections were being updated by another process; left to it",
                  file=sys.stderr)
    if undecided:
        print(f"cis: {undecided} line(s) not decided (another writer owns their cell): send "
              "them again", file=sys.stderr)
        return 3
    return 0


def not_decided(raw: bytes) -> Outcome:
    """The answer for a line whose batch could not be stored: rejected, not recorded, so the
    same command may simply be sent again."""
    try:
        command_id = parse_command(raw).command_id
    except NotACommand as exc:
        command_id = exc.outcome.command_id
    return Outcome.rejected(command_id, [Reason(
        field="$", code="write_conflict",
        problem="not decided: another writer changed this cell meanwhile; send it again")])


def _print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    cells = [["-" if row.get(c) is None else str(row[c]) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[k]) for r in cells]) for k, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)))
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))


def cmd_instances(args: argparse.Namespace) -> int:
    with connect(args.store) as engine:
        engine.update_projections()
        rows = queries.instances(cli_known.reader(engine, args, args.account), args.account)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        _print_table(rows, ["cell", "instance_id", "account", "state", "node_id",
                            "billed_vcpu", "billed_memory_gib", "restarts", "state_since"])
    return 0


def name_arg(text: str) -> str:
    """A cell or pool name as commands spell it."""
    if not ACCOUNT.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"not a cell or pool name: {text!r} (lowercase letters, digits and -, 1-63)")
    return text


def cmd_nodes(args: argparse.Namespace) -> int:
    with connect(args.store) as engine:
        engine.update_projections()
        rows = queries.nodes(engine, args.cell, args.pool, args.state)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:  # one column per dimension: used/capacity
        row.update({d: f"{a['used']}/{'-' if a['capacity'] is None else a['capacity']}"
                    for d, a in row["allocation"].items()})
        row["hold"], row["n"] = row["held_by"], len(row["instances"])
    seen = {d for row in rows for d in row["allocation"]}
    dimensions = [d for d in DIMENSIONS if d in seen] + sorted(seen - set(DIMENSIONS))
    _print_table(rows, ["cell", "node_id", "pool", "model", "asg", "state", "hold",
                        *dimensions, "n", "idle_seconds"])
    return 0


def cmd_usage(args: argparse.Namespace) -> int:
    with connect(args.store) as engine:
        engine.update_projections()
        report = queries.usage(cli_known.reader(engine, args, args.account), args.account,
                               args.as_of)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"account {report['account']}, as of {report['as_of']}")
    _print_table(report["instances"], ["cell", "instance_id", "state", "billed_spec",
                                       "billed_seconds", "amount", "currency"])
    for currency, total in report["totals"].items():
        print(f"total {total} {currency}")
    return 0


def cmd_rebuild(args: argparse.Namespace) -> int:
    with connect(args.store) as engine:
        with _replay_bar(engine, "catching up") as bar:
            engine.update_projections(bar.update)
        before = _digests(engine)
        with _replay_bar(engine, "replaying") as bar:
            engine.rebuild_projections(bar.update)
        after = _digests(engine)
    same = before == after
    print(json.dumps({"tables": {t: count for t, (count, _) in after.items()},
                      "identical": same}))
    return 0 if same else 1


def _replay_bar(engine: Engine, what: str) -> tqdm:
    """Events done / events to go: from the projections' lowest position to the log's end."""
    end = engine.app.recorder.max_notification_id() or 0
    lowest = min((position(engine.view, p) for p in engine.projections), default=0)
    total = end if what == "replaying" else end - lowest
    return tqdm(desc=what, unit="event", total=total, unit_scale=True, disable=None,
                file=sys.stderr)


def _digests(engine: Engine) -> dict[str, tuple[int, str]]:
    """Per table: its rows counted and hashed in key order, a page at a time (a rebuild of
    a long history must not hold every row twice to compare them)."""
    return {t.name: digest(engine.view, t) for p in engine.projections for t in p.tables}


def cmd_api(args: argparse.Namespace) -> int:
    from adapters.api import serve_api
    from adapters.stores import parse_store

    if parse_store(args.store).kind == "memory":
        sys.exit("cis api: a memory:// store lives in one process; give the store "
                 "`cis serve` writes (sqlite:///FILE or postgresql://...)")
    serve_api(args.store, args.host, args.port, args.log_level)
    return 0


def cmd_schema_export(args: argparse.Namespace) -> int:
    from adapters.pods import runtime_classes
    from schemas.export import export, export_runtime_classes

    for path in export(Path(args.dir)):
        print(path)
    # The RuntimeClass objects Pods name (the seed's runtime profiles and cpu overheads).
    for path in export_runtime_classes(Path(args.dir), runtime_classes()):
        print(path)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from simulations.demo import run_demo

    return run_demo(store=args.store, instances=args.instances, seed=args.seed,
                    plot_path=args.plot)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cis", description="Event-sourced scheduler and biller of a Container "
        "Instance Service. Commands in, events stored, projections queried.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="run a simulated day on an embedded store and "
                          "print nodes, instances and bills",
                          description="Runs a scripted day (accounts, pools, a price book, "
                          "instances that start, restart, fail and stop) through the real "
                          "engine on a temporary SQLite store, then prints a summary.")
    demo.add_argument("--store", default=None,
                      help="store to use instead of a temporary SQLite file")
    demo.add_argument("--instances", type=positive_int, default=100, help="instances to create")
    demo.add_argument("--seed", type=int, default=7, help="random seed of the scenario")
    demo.add_argument("--plot", type=Path, help="where to write the PNG of the day "
                      "(default: next to the temporary store)")
    demo.set_defaults(func=cmd_demo)

    apply = sub.add_parser("apply", help="apply a JSON-lines file of commands in order",
                           description="Applies commands (one JSON object per line) in "
                           "order and prints one outcome per line as JSON. Rejected or "
                           "malformed lines are outcomes too; the exit code stays 0.")
    store_arg(apply)
    apply.add_argument("file", help="JSON-lines file, or - for standard input")
    apply.add_argument("--batch", type=positive_int, default=1000,
                       help="commands per transaction (default 1000)")
    apply.add_argument("--role", required=True, choices=["tenant", "agent", "operator", "any"],
                       help="who speaks: a command of another role's type is rejected "
                       "(wrong_topic); any = trusted, every type (an operator replaying a "
                       "whole file)")
    apply.set_defaults(func=cmd_apply)

    inst = sub.add_parser("instances", help="list instances and their states")
    store_arg(inst)
    inst.add_argument("--account", type=account_name, help="only this account's instances")
    inst.add_argument("--json", action="store_true", help="print JSON")
    cli_known.add_known_at(inst)
    inst.set_defaults(func=cmd_instances)

    nodes = sub.add_parser(
        "nodes", help="nodes: model, pool, ASG, state, hold, allocation, idle time",
        description="The operator's view of the nodes: per node its model, pool, ASG (node "
        "group), state and hold (who keeps it cordoned), allocation per dimension as "
        "used/capacity (millicores, memory_mib, enis, pods), N instances on it, and how long "
        "it has held none (IDLE_SECONDS, up to the newest projected event; - if busy, not "
        "yet ready, or gone). --json adds the instances, labels and times.")
    store_arg(nodes)
    nodes.add_argument("--cell", type=name_arg, help="only this cell's nodes")
    nodes.add_argument("--pool", type=name_arg, help="only this pool's nodes")
    nodes.add_argument("--state", choices=NODE_STATES, help="only nodes in this state")
    nodes.add_argument("--json", action="store_true", help="print JSON")
    nodes.set_defaults(func=cmd_nodes)

    usage = sub.add_parser("usage", help="billed seconds and amounts of an account",
                           description="Billed seconds and amounts per instance, accrued "
                           "up to --as-of (default: the newest clock of the account's cells).")
    store_arg(usage)
    usage.add_argument("--account", type=account_name, required=True,
                       help="the account to report")
    usage.add_argument("--as-of", type=timestamp, help="ISO time, e.g. 2026-01-31T00:00:00Z")
    cli_known.add_known_at(usage)
    usage.add_argument("--json", action="store_true", help="print JSON")
    usage.set_defaults(func=cmd_usage)

    rebuild = sub.add_parser("rebuild", help="drop the projections and replay the log",
                             description="Drops every projection table, replays the event "
                             "log into them and checks the rows are identical to before "
                             "(exit code 1 if not).")
    store_arg(rebuild)
    rebuild.set_defaults(func=cmd_rebuild)

    api = sub.add_parser(
        "api", help="serve the read-only HTTP query API (instances, usage, invoices)",
        description="Serves GET /v1/accounts/{account}/instances, /usage, /invoices and "
        "/invoices/explain, /v1/nodes (operator token) and /v1/health, from the projections "
        "(OpenAPI at /openapi.json, browsable at /docs), and Prometheus metrics at /metrics. "
        "Read-only: `cis serve` or `cis project` keeps the projections current; each answer "
        "states the log position it reflects. Account routes need `Authorization: Bearer "
        "TOKEN` (`cis tokens create`); lists are paged; queries are bounded (as_of window, "
        "periods, time).")
    store_arg(api)
    api.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    api.add_argument("--port", type=positive_int, default=8080, help="port (default 8080)")
    api.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    api.set_defaults(func=cmd_api)

    schema = sub.add_parser("schema", help="the public contract as JSON Schema")
    schema_sub = schema.add_subparsers(dest="schema_command", required=True, metavar="ACTION")
    export = schema_sub.add_parser("export", help="write one JSON Schema file per command, "
                                    "and the Kubernetes RuntimeClass objects Pods name")
    export.add_argument("dir", help="directory to write into (created if missing)")
    export.set_defaults(func=cmd_schema_export)

    for module in EXTENSIONS:
        importlib.import_module(module).register(sub)
    return parser


def _redacted(url: str | None) -> str:
    return re.sub(r"://([^:/@]*):[^@/]*@", r"://\1:***@", url or "")


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    tune_gc()
    try:
        code = args.func(args)
        sys.stdout.flush()  # inside the try: a closed pipe surfaces here, not at exit
        raise SystemExit(code)
    except (BadConfiguration, QueryError) as exc:
        sys.exit(f"cis: {exc}")
    except (*STORE_DOWN, sqlite3.DatabaseError, psycopg.Error, PersistenceError) as exc:
        # A store that cannot be opened (or went away): one line, not a traceback.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        sys.exit(f"cis: cannot use the store {_redacted(getattr(args, 'store', ''))}: {first}")
    except FileNotFoundError as exc:
        sys.exit(f"cis: {exc.filename}: no such file")
    except BrokenPipeError:
        # The reader went away (`cis invoices … | head`): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
    except OSError as exc:  # a directory given as a file, no permission, …
        sys.exit(f"cis: {exc.filename or ''}: {exc.strerror or exc}")
