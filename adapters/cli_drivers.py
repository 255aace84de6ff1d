"""`cis driver cloud` and `cis driver pods`: the driver workers (an extension of adapters.cli).

Each consumes the outbox's commands, carries them out through a driver (adapters/drivers/)
at most once per command_id, and reports what the infrastructure does to the reports topic.
"""

from __future__ import annotations

import argparse
import logging
import threading
from pathlib import Path
from typing import Any

from adapters.cli_args import (
    log_level_arg,
    non_negative_float,
    partitions,
    positive_float,
    positive_int,
)

DEFAULTS = {"vm": "cis.vm-commands", "pod": "cis.pod-commands", "reports": "cis.reports"}

RECOVERY = ("At most once per command_id: the worker records its intent in --state, acts "
            "idempotently (a retried command finds what its first attempt made), then records "
            "the command done and its position in one transaction; killed at any point, it "
            "resumes from --state. A command that does not parse is dead-lettered at once; one "
            "the infrastructure refuses is retried with exponential back-off (--backoff, "
            "doubling, at most 30 s) and dead-lettered after --max-attempts, with a 'reason' "
            "header. Logs JSON lines to stderr; SIGTERM or SIGINT stops after the open "
            "command.")


def _pairs(kind: type) -> Any:
    def parse(text: str) -> tuple[str, Any]:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"give KEY=VALUE, not {text!r}")
        try:
            return key, kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad value in {text!r}") from None
    return parse


def _common(parser: argparse.ArgumentParser, topic: str) -> None:
    parser.add_argument("--kafka", required=True, metavar="HOST:PORT", help="bootstrap broker")
    parser.add_argument("--state", required=True, type=Path, metavar="FILE",
                        help="the worker's ledger (SQLite): its positions, the commands it "
                        "took on and, for clouds, node id <-> VM id. One file per worker")
    parser.add_argument(f"--{topic}-topic", dest="topic", default=DEFAULTS[topic],
                        help=f"commands topic (default {DEFAULTS[topic]})")
    parser.add_argument("--reports-topic", default=DEFAULTS["reports"],
                        help=f"where reports go, keyed by cell (default {DEFAULTS['reports']})")
    parser.add_argument("--dlq-topic", default=None,
                        help=f"dead letters (default {DEFAULTS[topic]}.dlq)")
    parser.add_argument("--partitions", type=partitions, default=None, metavar="all|0,1",
                        help="partitions of the commands topic this worker owns (default all)")
    parser.add_argument("--max-attempts", type=positive_int, default=5,
                        help="attempts at a command before it is dead-lettered (default 5)")
    parser.add_argument("--backoff", type=non_negative_float, default=0.5, metavar="SECONDS",
                        help="wait before the first retry; doubles each time (default 0.5)")
    log_level_arg(parser)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    driver = sub.add_parser(
        "driver", help="carry out the outbox's VM or Pod commands on infrastructure (workers)",
        description="Workers that close the loop: `cis driver cloud` makes and ends VMs for "
        "ProvisionNode/TerminateNode and reports nodes ready or lost; `cis driver pods` runs "
        "and deletes Pods for RunPod/DeletePod and reports instances starting, running, "
        "exited or terminated. Reports go to the reports topic, which `cis serve` reads.")
    kinds = driver.add_subparsers(dest="driver", metavar="KIND", required=True)

    cloud = kinds.add_parser(
        "cloud", help="VMs: AWS (EC2 + Auto Scaling), Tencent Cloud (AS + CVM) or a simulation",
        description="Consumes --vm-topic. ProvisionNode launches one VM into the node group's "
        "Auto Scaling group (one per cell, pool and model; created with a launch template "
        "of the same name, tagged with the model), idempotent by a client token from the "
        "command_id and the VM's node-id tag; running VMs are attached to their group "
        "(desired capacity +1) and protected from its scale-in. TerminateNode uses "
        "TerminateInstanceInAutoScalingGroup with ShouldDecrementDesiredCapacity. Every "
        "--observe-interval the groups are described: a running VM is reported "
        "ReportNodeReady; one stopped, terminated or vanished outside our commands "
        "ReportNodeLost (a VM left stopped is then terminated: the engine sends no "
        "TerminateNode for a lost node). Tencent: the scaling groups are the operator's "
        "(--group); ScaleOutInstances launches, the VM is claimed by renaming it to the "
        "node id (a retry claims it, never scales out twice), RemoveInstances ends it. "
        + RECOVERY)
    cloud.add_argument("--provider", required=True, choices=["aws", "tencent", "simulated"])
    _common(cloud, "vm")
    cloud.add_argument("--observe-interval", type=positive_float, default=2.0,
                       metavar="SECONDS", help="describe the groups this often (default 2)")
    aws = cloud.add_argument_group("aws")
    aws.add_argument("--region", default=None, help="AWS region (default: boto3's)")
    aws.add_argument("--endpoint-url", default=None,
                     help="another endpoint for EC2 and Auto Scaling (e.g. a moto server)")
    aws.add_argument("--image-id", default=None, help="AMI of the nodes (required for aws)")
    aws.add_argument("--subnet", action="append", default=[], metavar="SUBNET_ID",
                     help="subnet for the groups' VMs; repeat for several (required for aws)")
    aws.add_argument("--security-group", action="append", default=[], metavar="SG_ID",
                     help="security group of the launch templates; repeatable")
    aws.add_argument("--instance-type", action="append", type=_pairs(str), default=[],
                     metavar="MODEL=TYPE", help="EC2 type of a node model (default: "
                     "{v}C{g}G -> c6i/m6i/r6i by GiB per vCPU 2/4/8, sized by vCPUs)")
    tencent = cloud.add_argument_group("tencent", "credentials from $TENCENTCLOUD_SECRET_ID "
                                       "and $TENCENTCLOUD_SECRET_KEY; --region as for aws")
    tencent.add_argument("--group", action="append", type=_pairs(str), default=[],
                         metavar="NODE_GROUP=ASG_ID", help="the scaling group of a node "
                         "group ({cell}-{pool}-{model}); repeat for each (required)")
    sim = cloud.add_argument_group("simulated")
    sim.add_argument("--boot-seconds", type=non_negative_float, default=45.0,
                     help="how long a VM takes to boot (default 45)")
    sim.add_argument("--fail-boot", action="append", default=[], metavar="NODE_ID",
                     help="this node's VM never boots (reported lost); repeatable")
    sim.add_argument("--lose-node", action="append", type=_pairs(float), default=[],
                     metavar="NODE_ID=SECONDS", help="the node's VM is lost this long after "
                     "it booted; repeatable")
    sim.add_argument("--world", type=Path, default=None, metavar="FILE",
                     help="keep the simulated VMs in this JSON file, so they outlive "
                     "the worker (as a real cloud's would); default: in memory")
    cloud.set_defaults(func=cmd_cloud)

    pods = kinds.add_parser(
        "pods", help="Pods: Kubernetes or a simulation",
        description="Consumes --pod-topic. RunPod creates the command's Pod (bound to its node "
        "by spec.nodeName) in the account's namespace, creating the namespace if missing; "
        "DeletePod deletes it with the command's grace period. Pods labelled cis.io/instance "
        "are listed, then watched: a bound Pod is reported ReportInstanceStarting, all its "
        "containers running ReportInstanceRunning, a container's termination "
        "ReportContainerExited, a Pod evicted or deleted outside our commands "
        "ReportInstanceTerminated. The simulation starts Pods after their runtime's start "
        "time (runc 0.632 s, kata 1.249 s, hyper 3.256 s). " + RECOVERY)
    pods.add_argument("--provider", required=True, choices=["kubernetes", "simulated"])
    _common(pods, "pod")
    k8s = pods.add_argument_group("kubernetes")
    k8s.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: the usual)")
    k8s.add_argument("--context", default=None, help="kubeconfig context")
    k8s.add_argument("--in-cluster", action="store_true",
                     help="use the service account of the Pod this runs in")
    sim = pods.add_argument_group("simulated")
    sim.add_argument("--start-seconds", action="append", type=_pairs(float), default=[],
                     metavar="RUNTIME=SECONDS", help="a runtime's sandbox start time")
    sim.add_argument("--exit", action="append", type=_pairs(str), default=[],
                     metavar="INSTANCE=SECONDS:CODE", help="the instance's first container "
                     "exits with CODE this long after it started; repeatable")
    sim.add_argument("--world", type=Path, default=None, metavar="FILE",
                     help="keep the simulated Pods in this JSON file, so they outlive "
                     "the worker (as a real cluster's would); default: in memory")
    pods.set_defaults(func=cmd_pods)

    bench = kinds.add_parser(
        "bench", help="figures of the drivers, as JSON (starts its own moto and tansu)",
        description="aws: the cloud driver worker on a moto server and a tansu broker it "
        "starts: N ProvisionNode then N TerminateNode commands through Kafka; prints "
        "commands/s each way and the VMs left behind (should be 0). loop: the demo's day of "
        "N instances through the engine, the outbox's translation and the simulated "
        "infrastructure behind the ports, in one process; prints the wall time and the "
        "latency from CreateInstance to running in simulated seconds. kafka: the loop "
        "through a tansu broker it starts, with `cis serve` and both simulated drivers as "
        "processes: N CreateInstance at --rate per second into a shared kata pool; prints "
        "the wall-clock latency from each command's send to the engine's accepted outcome "
        "of the driver's running report.")
    bench.add_argument("kind", choices=["aws", "loop", "kafka"])
    bench.add_argument("-n", type=positive_int, default=200,
                       help="commands each way (aws) or instances (loop, kafka); default 200")
    bench.add_argument("--seed", type=int, default=7, help="the loop's scenario seed")
    bench.add_argument("--rate", type=positive_float, default=20.0,
                       help="kafka: CreateInstance commands per second (default 20)")
    bench.add_argument("--boot-seconds", type=non_negative_float, default=0.0,
                       help="kafka: the simulated VMs' boot time (default 0: the loop alone)")
    bench.add_argument("--store", default=None,
                       help="kafka: cis serve's store (default: SQLite in a temporary "
                       "directory)")
    bench.set_defaults(func=cmd_bench)


def cmd_cloud(args: argparse.Namespace) -> int:
    from adapters.driver_ledger import Ledger
    from adapters.driver_worker import CloudHandler, wall_clock
    from adapters.ports import CloudDriver

    driver: CloudDriver
    if args.provider == "aws":
        if not args.image_id or not args.subnet:
            raise SystemExit("cis driver cloud --provider aws: give --image-id and --subnet")
        from adapters.drivers.aws import AwsCloudDriver, AwsConfig

        driver = AwsCloudDriver.connect(AwsConfig(
            image_id=args.image_id, subnets=args.subnet, security_groups=args.security_group,
            instance_types=dict(args.instance_type)), args.region, args.endpoint_url)
    elif args.provider == "tencent":
        import os

        from adapters.drivers.tencent import TencentCloudDriver

        keys = [os.environ.get(k, "") for k in ("TENCENTCLOUD_SECRET_ID",
                                                  "TENCENTCLOUD_SECRET_KEY")]
        if not (args.region and args.group and all(keys)):
            raise SystemExit("cis driver cloud --provider tencent: give --region, --group "
                             "and $TENCENTCLOUD_SECRET_ID/$TENCENTCLOUD_SECRET_KEY")
        driver = TencentCloudDriver.connect(args.region, keys[0], keys[1], dict(args.group))
    else:
        from adapters.drivers.simulated import Failures, SimulatedInfrastructure

        driver = _world(SimulatedInfrastructure(
            wall_clock, boot_seconds=args.boot_seconds,
            failures=Failures(boot_failures=set(args.fail_boot),
                              node_losses=dict(args.lose_node))), args.world)
    ledger = Ledger(args.state)
    return _run(args, CloudHandler(driver, ledger), ledger,
                observe_interval_s=args.observe_interval)


def cmd_pods(args: argparse.Namespace) -> int:
    from adapters.driver_ledger import Ledger
    from adapters.driver_worker import PodHandler, wall_clock
    from adapters.ports import PodDriver

    driver: PodDriver
    if args.provider == "kubernetes":
        from adapters.drivers.kubernetes import KubernetesPodDriver

        driver = KubernetesPodDriver.connect(args.kubeconfig, args.context, args.in_cluster)
    else:
        from adapters.drivers.simulated import (
            START_SECONDS,
            Exit,
            Failures,
            SimulatedInfrastructure,
        )

        exits: dict[str, list[Exit]] = {}
        for instance, spec in args.exit:
            seconds, _, code = spec.partition(":")
            try:
                exits.setdefault(instance, []).append(Exit(float(seconds), int(code or 0)))
            except ValueError:
                raise SystemExit(f"cis driver pods: --exit {instance}={spec}: give "
                                 "SECONDS:CODE") from None
        starts = {**START_SECONDS, **dict(args.start_seconds)}
        driver = _world(SimulatedInfrastructure(wall_clock, start_seconds=starts,
                                                failures=Failures(exits=exits)), args.world)
    return _run(args, PodHandler(driver), Ledger(args.state), observe_timeout_s=1.0,
                poll_timeout_ms=200)


def _world(infra: Any, path: Path | None) -> Any:
    """The simulation in memory, or kept in `path` across restarts of the worker."""
    if path is None:
        return infra
    from adapters.drivers.simulated_world import PersistedWorld

    return PersistedWorld(infra, path)


def cmd_bench(args: argparse.Namespace) -> int:
    from simulations.bench_drivers import main as bench

    options = {"rate": args.rate, "boot_s": args.boot_seconds, "store": args.store} \
        if args.kind == "kafka" else {}
    return bench(args.kind, args.n, args.seed, **options)


def _run(args: argparse.Namespace, handler: Any, ledger: Any, **config: Any) -> int:
    from adapters.cli_kafka import _stop_on_signals, setup_logging
    from adapters.driver_worker import DriverWorker, WorkerConfig

    setup_logging(args.log_level)
    log = logging.getLogger("cis.driver")
    stop = threading.Event()
    worker = DriverWorker(handler, ledger, WorkerConfig(
        kafka=args.kafka, topic=args.topic, reports_topic=args.reports_topic,
        dlq_topic=args.dlq_topic or f"{args.topic}.dlq", partitions=args.partitions,
        max_attempts=args.max_attempts, backoff_s=args.backoff,
        client_id=f"cis-driver-{args.driver}", **config), stop)
    _stop_on_signals(stop.set, log.name, "finishing the open command")
    log.info("driving", extra={"fields": {"kind": args.driver, "provider": args.provider,
                                          "topic": args.topic, "state": str(args.state)}})
    try:
        worker.run()
    finally:
        ledger.close()
    log.info("stopped", extra={"fields": vars(worker.counters)})
    return 0


def main(argv: list[str] | None = None) -> None:
    """`python -m adapters.cli_drivers driver …`: the same subcommands without `cis`."""
    parser = argparse.ArgumentParser(prog="cis")
    register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    raise SystemExit(args.func(args))


if __name__ == "__main__":
    main()
