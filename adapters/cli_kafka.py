"""`cis serve` and `cis submit`: the Kafka subcommands (an extension of adapters.cli)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from adapters.cli_args import (
    log_level_arg,
    non_negative_float,
    partitions,
    positive_float,
    positive_int,
    store_arg,
)
from adapters.stores import parse_store

TOPIC_DEFAULTS = {"commands": "cis.commands", "reports": "cis.reports", "admin": "cis.admin",
                  "outcomes": "cis.outcomes",
                  "dlq": "cis.commands.dlq", "vm": "cis.vm-commands", "pod": "cis.pod-commands"}


class JsonLines(logging.Formatter):
    """One JSON object per log line: time, level, logger, event and its fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(), "logger": record.name,
            "event": record.getMessage(), **getattr(record, "fields", {})}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # kafka-python logs every reconnect attempt at WARNING/ERROR; our own lines say it once.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


def _stop_on_signals(stop: Callable[[], None], logger: str, then: str) -> None:
    """SIGTERM and SIGINT ask the loop to stop (it finishes what it is doing)."""
    def on_signal(signum: int, frame: FrameType | None) -> None:
        logging.getLogger(logger).info(f"signal received; {then}",
                                       extra={"fields": {"signal": signum}})
        stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def _topic_args(parser: argparse.ArgumentParser, *names: str) -> None:
    for name in names:
        parser.add_argument(f"--{name}-topic", default=TOPIC_DEFAULTS[name],
                            help=f"{name} topic (default {TOPIC_DEFAULTS[name]})")


def _metrics_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                        help="serve Prometheus metrics on http://HOST:PORT/metrics (0: a free "
                        "port); off by default")
    parser.add_argument("--metrics-host", default="127.0.0.1", metavar="HOST",
                        help="address the metrics server binds (default 127.0.0.1)")


def cmd_serve(args: argparse.Namespace) -> int:
    from adapters.serve import ServeConfig, Server

    if args.group is not None and parse_store(args.store).kind == "memory":
        sys.exit("cis serve: --group shares partitions between writers of one store; a "
                 "memory:// store lives in one process (give sqlite:///FILE or postgresql://...)")
    setup_logging(args.log_level)
    server = Server(ServeConfig(
        store=args.store, kafka=args.kafka, commands_topic=args.commands_topic,
        reports_topic=args.reports_topic, admin_topic=args.admin_topic,
        outcomes_topic=args.outcomes_topic, dlq_topic=args.dlq_topic,
        partitions=args.partitions, group=args.group, session_timeout_s=args.session_timeout,
        batch_size=args.batch, poll_records=args.poll_records,
        tick_interval_s=args.tick_interval, progress_interval_s=args.progress_interval,
        status_file=args.status_file, projections=args.projections, outbox=args.outbox,
        vm_topic=args.vm_topic, pod_topic=args.pod_topic, metrics_port=args.metrics_port,
        metrics_host=args.metrics_host))

    _stop_on_signals(server.stop, "cis.serve", "finishing the open batch")
    try:
        server.run()
    except Exception:
        logging.getLogger("cis.serve").exception("serve failed")
        return 1
    return 2 if server.fenced else 0


def _log_worker(args: argparse.Namespace, command: str, logger_name: str, then: str,
                fields: dict[str, Any], follow: Callable[[threading.Event], int]) -> int:
    """`cis project` and `cis outbox`: a log consumer in the foreground until a signal."""
    if parse_store(args.store).kind == "memory":
        sys.exit(f"cis {command}: a memory:// store lives in one process; give the store "
                 "`cis serve` writes (sqlite:///FILE or postgresql://...)")
    setup_logging(args.log_level)
    logger = logging.getLogger(logger_name)
    stop = threading.Event()
    _stop_on_signals(stop.set, logger.name, then)
    logger.info("following the log", extra={"fields": fields})
    done = follow(stop)
    logger.info("stopped", extra={"fields": {"events": done}})
    return 0


def cmd_project(args: argparse.Namespace) -> int:
    from adapters.projector import follow

    return _log_worker(args, "project", "cis.projector", "catching up once more",
                       {"interval_s": args.interval},
                       lambda stop: follow(args.store, args.interval, stop))  # type: ignore


def cmd_outbox(args: argparse.Namespace) -> int:
    from adapters.outbox import OutboxTopics, follow

    topics = OutboxTopics(vm=args.vm_topic, pod=args.pod_topic)
    return _log_worker(args, "outbox", "cis.outbox", "sending what is stored once more",
                       {"vm_topic": topics.vm, "pod_topic": topics.pod},
                       lambda stop: follow(args.store, args.kafka, topics, args.interval, stop,
                                           args.metrics_port, args.metrics_host))


def cmd_submit(args: argparse.Namespace) -> int:
    from adapters.submit import submit

    source = sys.stdin.buffer if args.file == "-" else open(args.file, "rb")  # noqa: SIM115
    topic = {"tenant": args.commands_topic, "agent": args.reports_topic,
             "operator": args.admin_topic}[args.role]
    with source:
        result = submit(args.kafka, source, role=args.role, topic=topic,
                        wait_s=args.timeout if args.wait else None,
                        outcomes_topic=args.outcomes_topic)
    for invalid in result.invalid:
        print(invalid.to_json(), file=sys.stderr)
    if args.wait:
        for command_id in result.sent:
            if command_id in result.outcomes:
                print(result.outcomes[command_id].to_json())
    summary = {"sent": len(result.sent), "invalid": len(result.invalid)}
    if args.wait:
        summary["outcomes"] = len(result.outcomes)
        summary["missing"] = len(result.missing)
    print(json.dumps(summary), file=sys.stderr)
    return 1 if result.invalid or (args.wait and result.missing) else 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    serve = sub.add_parser(
        "serve", help="run the engine on the Kafka command stream (exactly-once intake)",
        description="Consumes the commands topic with manual partition assignment (or "
        "the partitions a consumer group assigns: --group), "
        "and the reports and admin topics (one per role: tenants, node agents, operators; "
        "a command type on another role's topic is rejected), "
        "resuming from the positions stored in the event store (not Kafka's committed "
        "offsets). Each poll's records of a partition are decided and saved with their "
        "position in one transaction; then one outcome per command goes to the outcomes "
        "topic (keyed by command_id; at least once: deduplicate by command_id) and bytes "
        "that are not a command (not UTF-8, not JSON) go to the dead-letter topic with "
        "'reason', 'dlq.original.size' and 'dlq.original.sha256' headers (cut to fit the "
        "broker's limit, with 'dlq.truncated', if need be). Child processes keep the "
        "projections current (see --projections) and send the VM and Pod commands the "
        "events imply (see --outbox). "
        "Logs JSON lines to stderr, "
        "including a periodic 'progress' line (positions, lag, commands/s). SIGTERM or "
        "SIGINT stops after the open batch.")
    store_arg(serve)
    serve.add_argument("--kafka", required=True, metavar="HOST:PORT", help="bootstrap broker")
    owner = serve.add_mutually_exclusive_group()
    owner.add_argument("--partitions", type=partitions, default=None, metavar="all|0,1",
                       help="partitions this process owns, the same numbers on each role "
                       "topic (default: all); cells are keyed to partitions, so this picks "
                       "the cells it writes. The role topics must have equal partition counts")
    owner.add_argument("--group", default=None, metavar="NAME",
                       help="join Kafka consumer group NAME, which shares the partitions "
                       "among the writers running with the same NAME (the same numbers on "
                       "each role topic) and moves a dead writer's partitions to the others. "
                       "Only assignment comes from the group: positions still come from the "
                       "store, and the store refuses a write from a writer that lost a "
                       "partition without noticing")
    serve.add_argument("--session-timeout", type=positive_float, default=10.0,
                       metavar="SECONDS",
                       help="with --group: a writer not heard from this long loses its "
                       "partitions to the others (default 10; the broker bounds it)")
    _topic_args(serve, "commands", "reports", "admin", "outcomes", "dlq", "vm", "pod")
    serve.add_argument("--batch", type=positive_int, default=1000,
                       help="max records per transaction (default 1000)")
    serve.add_argument("--poll-records", type=positive_int, default=1000,
                       help="max records per poll (default 1000; at least --batch): a poll "
                       "costs about a millisecond, so small batches share one")
    serve.add_argument("--tick-interval", type=non_negative_float, default=30.0, metavar="SECONDS",
                       help="submit a Tick per owned cell this often; 0 disables (default 30)")
    serve.add_argument("--progress-interval", type=positive_float, default=10.0, metavar="SECONDS",
                       help="log a progress line this often (default 10)")
    serve.add_argument("--status-file", type=Path, default=None,
                       help="also write the latest progress as JSON to this file")
    serve.add_argument("--projections", choices=["process", "inline", "off"],
                       default="process",
                       help="who keeps the projections current: a child process on its own "
                       "core (default), this loop between batches, or nobody here (run "
                       "`cis project` elsewhere)")
    _metrics_args(serve)
    serve.add_argument("--outbox", choices=["process", "off"], default="process",
                       help="who sends the VM and Pod commands to --vm-topic and --pod-topic: "
                       "a child process (default) or nobody here (run `cis outbox` elsewhere)")
    log_level_arg(serve)
    serve.set_defaults(func=cmd_serve)

    project = sub.add_parser(
        "project", help="keep the projections current from the event log (a worker)",
        description="Follows the event log and updates the projections (instances, usage, "
        "invoices) until SIGTERM/SIGINT, then catches up once more. Rows and the position "
        "commit together, so it can be stopped or killed at any time and resumes where its "
        "rows end. `cis serve` runs one itself unless given --projections inline|off.")
    store_arg(project)
    project.add_argument("--interval", type=positive_float, default=0.5, metavar="SECONDS",
                         help="when caught up, look for new events this often (default 0.5)")
    log_level_arg(project)
    project.set_defaults(func=cmd_project)

    outbox = sub.add_parser(
        "outbox", help="send the VM and Pod commands the event log implies (a worker)",
        description="Follows the event log and publishes, for every node the engine asks for "
        "or terminates, a ProvisionNode or TerminateNode command (keyed by cell) and, for "
        "every instance it places or that leaves its node, a RunPod command carrying a "
        "Kubernetes Pod manifest or a DeletePod command (keyed by node). At least once: "
        "the position is stored after the broker acknowledged the commands, and a command's "
        "command_id is the id of the event that caused it, so consumers deduplicate by it. "
        "`cis schema export` writes the commands' JSON Schemas. Stops on SIGTERM/SIGINT.")
    store_arg(outbox)
    outbox.add_argument("--kafka", required=True, metavar="HOST:PORT", help="bootstrap broker")
    _topic_args(outbox, "vm", "pod")
    _metrics_args(outbox)
    outbox.add_argument("--interval", type=positive_float, default=0.5, metavar="SECONDS",
                        help="when caught up, look for new events this often (default 0.5)")
    log_level_arg(outbox)
    outbox.set_defaults(func=cmd_outbox)

    submit = sub.add_parser(
        "submit", help="produce JSON-lines commands to Kafka, optionally await outcomes",
        description="Validates every line first: invalid lines are reported on stderr (with "
        "every reason) and not sent. Valid commands are produced keyed by their cell. With "
        "--wait, prints one outcome per sent command (input order) on stdout. Exit code 1 "
        "if any line was invalid or an outcome did not arrive in time.")
    submit.add_argument("--kafka", required=True, metavar="HOST:PORT", help="bootstrap broker")
    submit.add_argument("file", help="JSON-lines file, or - for standard input")
    submit.add_argument("--role", required=True, choices=["tenant", "agent", "operator"],
                        help="who speaks: tenant commands go to --commands-topic, agent "
                        "reports to --reports-topic, operator commands to --admin-topic; a "
                        "line of another role's type is invalid")
    _topic_args(submit, "commands", "reports", "admin", "outcomes")
    submit.add_argument("--wait", action="store_true", help="wait for and print outcomes")
    submit.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                        help="how long --wait waits (default 60)")
    submit.set_defaults(func=cmd_submit)
