"""`cis driver bench`: figures of the driver workers, as JSON.

- `aws`: the cloud driver worker against a moto server (real boto3 calls over HTTP) and a
  tansu broker, both started here: N ProvisionNode then N TerminateNode commands through
  Kafka; commands per second each way, and a check that no VM is doubled or left behind.
- `loop`: the whole loop in one process on the simulated infrastructure
  (simulations/driven.py): the demo's day of N instances; wall time, and the loop latency
  from CreateInstance to the instance running, in simulated seconds (a node's boot plus
  the runtime's start when it waited for a node, else the start alone).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from schemas.infra import ProvisionNode, TerminateNode


def _commands(n: int, cell: str = "az-1") -> tuple[list[ProvisionNode], list[TerminateNode]]:
    from datetime import UTC, datetime

    at = datetime(2026, 3, 1, tzinfo=UTC)
    provisions, terminations = [], []
    for k in range(1, n + 1):
        node, model = f"general-{k:05d}", ("2C4G", "4C16G")[k % 2]
        group = f"{cell}-general-{model.lower()}"
        provisions.append(ProvisionNode(
            command_id=f"{cell}:node/{node}#1", caused_by=f"node/{node}#1", cell=cell, at=at,
            node_id=node, pool="general", node_group=group, model=model,
            capacity={"millicores": 2000}, labels={}, reason="bench"))
        terminations.append(TerminateNode(
            command_id=f"{cell}:node/{node}#5", caused_by=f"node/{node}#5", cell=cell, at=at,
            node_id=node, pool="general", node_group=group, reason="bench"))
    return provisions, terminations


def bench_aws(n: int) -> dict[str, Any]:
    from adapters.driver_ledger import Ledger
    from adapters.driver_worker import CloudHandler, DriverWorker, WorkerConfig
    from adapters.drivers.aws import NODE_TAG, AwsCloudDriver, AwsConfig
    from adapters.kafka_io import Publisher
    from simulations.moto import REGION, start_moto
    from simulations.tansu import create_topics, start_broker

    work = Path(tempfile.mkdtemp(prefix="cis-bench-drivers-"))
    moto, broker = start_moto(work / "moto.log"), start_broker(log_dir=work)
    try:
        topics = {"topic": "vm", "reports_topic": "reports", "dlq_topic": "dlq"}
        create_topics(broker.bootstrap, ["vm"], 4)
        create_topics(broker.bootstrap, ["reports", "dlq"], 1)
        ec2 = moto.client("ec2")
        subnets, image = moto.network()
        driver = AwsCloudDriver.connect(AwsConfig(image_id=image, subnets=subnets), REGION,
                                        moto.url)
        ledger = Ledger(work / "ledger.db")
        worker = DriverWorker(CloudHandler(driver, ledger), ledger, WorkerConfig(
            kafka=broker.bootstrap, poll_timeout_ms=100, observe_interval_s=1.0, **topics))
        provisions, terminations = _commands(n)
        rates = {}
        with Publisher(broker.bootstrap) as publisher:
            for name, batch in (("provision", provisions), ("terminate", terminations)):
                for command in batch:
                    publisher.send_command("vm", command.cell, command.model_dump_json().encode())
                publisher.flush()
                target = worker.counters.done + len(batch)
                began = time.perf_counter()
                while worker.counters.done < target:
                    worker.step()
                rates[name] = len(batch) / (time.perf_counter() - began)
        worker.reset()
        live = ec2.describe_instances(Filters=[
            {"Name": "tag-key", "Values": [NODE_TAG]},
            {"Name": "instance-state-name", "Values": ["pending", "running", "stopped"]}])
        left = sum(len(r["Instances"]) for r in live["Reservations"])
        return {"bench": "driver-aws", "commands": 2 * n,
                "provision_per_s": round(rates["provision"], 1),
                "terminate_per_s": round(rates["terminate"], 1),
                "reports": worker.counters.reports, "dead": worker.counters.dead,
                "vms_left_behind": left,
                "note": "moto server on loopback: API latency is moto's, not AWS's"}
    finally:
        broker.stop()
        moto.stop()


def bench_loop(instances: int, seed: int) -> dict[str, Any]:
    from adapters.bootstrap import connect
    from engine.domain.instance import Instance
    from simulations import workloads
    from simulations.driven import DrivenHarness

    start = workloads.DAY_START
    with connect("memory://") as engine:
        creates, plans = workloads.tenants(instances, seed)
        harness = DrivenHarness(engine, start, plans=plans)
        for command in workloads.setup():
            harness.submit(start, command)
        for at, command in [*creates, *workloads.ticks(start, 24)]:
            harness.submit(at, command)
        began = time.perf_counter()
        outcomes = harness.run(start + timedelta(days=1))
        wall = time.perf_counter() - began
        created = {c["instance_id"]: at for at, c in creates}
        first: dict[str, float] = {}
        world = engine.processor.world
        for _, event in engine.app.read(0):
            if isinstance(event, Instance.Running):
                name = world.aggregates[event.originator_id].name  # type: ignore[attr-defined]
                first.setdefault(name, (event.timestamp - created[name]).total_seconds())
    latencies = sorted(first.values())
    return {"bench": "driver-loop", "instances": instances, "seed": seed,
            "commands": len(outcomes), "wall_s": round(wall, 3),
            "infrastructure_commands": harness.commands,
            "running": len(latencies),
            "latency_s": {"min": round(latencies[0], 3),
                          "p50": round(statistics.median(latencies), 3),
                          "p95": round(latencies[int(0.95 * (len(latencies) - 1))], 3),
                          "max": round(latencies[-1], 3)},
            "note": "simulated seconds (node boot 45 s; runc 0.632 s, kata 1.249 s)"}


def _loop_commands(cell: str, n: int, runtime: str) -> tuple[list[dict[str, Any]],
                                                              list[dict[str, Any]]]:
    """A shared pool's set-up (at a whole second of the wall clock: the cell's clock is
    earned, and the drivers report wall-clock times) and n CreateInstance commands."""
    from datetime import UTC, datetime

    second = datetime.now(UTC).replace(microsecond=0).isoformat()
    models = [{"name": "4C16G", "millicores": 4000, "memory_mib": 16384, "pods": 20},
              {"name": "16C64G", "millicores": 16000, "memory_mib": 65536, "pods": 110}]
    setup = [
        {"type": "PublishPriceBook", "command_id": "bench-price", "cell": cell,
         "issued_at": second, "effective_from": second, "rate_per_vcpu_second": "0.00001",
         "rate_per_gib_second": "0.000001"},
        {"type": "ConfigurePool", "command_id": "bench-pool", "cell": cell, "issued_at": second,
         "pool": "kata", "kind": "shared", "node_models": models, "min_nodes": 0,
         "max_nodes": 1000, "spec_catalogue": [{"vcpu": "0.5", "memory_gib": "1"}]},
        *({"type": "SetAccountNetworks", "command_id": f"bench-networks-{k}", "cell": cell,
           "issued_at": second, "account": f"bench-{k}", "vpcs": ["vpc-1"],
           "subnets": ["subnet-1"]} for k in range(10))]
    creates = [{"type": "CreateInstance", "command_id": f"bench-create-{k}", "cell": cell,
                "issued_at": second, "account": f"bench-{k % 10}",  # clear of per-account
                "instance_id": f"i-{k:05d}",  # launch quotas (another figure)
                "pool": "kata", "runtime": runtime, "restart_policy": "Always",
                "containers": [{"name": "c0", "image": "app:1", "vcpu": "0.5",
                                "memory_gib": "1"}],
                "network": {"vpc": "vpc-1", "subnet": "subnet-1"}} for k in range(n)]
    return setup, creates


def bench_kafka(n: int, boot_s: float = 0.0, rate: float = 20.0, store: str | None = None,
                runtime: str = "kata", timeout_s: float = 300.0) -> dict[str, Any]:
    """The loop through Kafka with real processes: tansu, `cis serve` (its outbox and
    projections), `cis driver cloud --provider simulated` and `cis driver pods --provider
    simulated`. CreateInstance commands go to the commands topic at `rate` per second; an
    instance's latency is from its command's send to the arrival on the outcomes topic of
    the accepted outcome of the report that it runs (decided and committed by the engine)."""
    import re
    import subprocess
    import sys

    from adapters.kafka_io import CommandSource, Publisher
    from simulations.tansu import _die_with_parent, create_topics, start_broker

    work = Path(tempfile.mkdtemp(prefix="cis-bench-loop-"))
    broker = start_broker(log_dir=work)
    bootstrap, cell = broker.bootstrap, "az-1"
    names = ["commands", "reports", "admin", "outcomes", "dlq", "vm", "pod", "vm.dlq",
             "pod.dlq"]
    create_topics(bootstrap, names, 1)
    store = store or f"sqlite:///{work / 'cis.db'}"
    cis = [str(Path(sys.executable).with_name("cis"))]  # the installed entry point
    driver = [*cis, "driver"]
    common = ["--kafka", bootstrap, "--reports-topic", "reports", "--log-level", "warning"]
    commands = {
        "serve": [*cis, "serve", "--store", store, "--kafka", bootstrap, "--commands-topic",
                  "commands", "--reports-topic", "reports", "--admin-topic", "admin",
                  "--outcomes-topic", "outcomes", "--dlq-topic", "dlq", "--vm-topic", "vm",
                  "--pod-topic", "pod", "--tick-interval", "1", "--log-level", "warning"],
        "cloud": [*driver, "cloud", "--provider", "simulated", "--boot-seconds", str(boot_s),
                  "--observe-interval", "0.1", "--vm-topic", "vm", "--dlq-topic", "vm.dlq",
                  "--state", str(work / "cloud.db"), *common],
        "pods": [*driver, "pods", "--provider", "simulated", "--pod-topic", "pod",
                 "--dlq-topic", "pod.dlq", "--state", str(work / "pods.db"), *common]}
    processes = {}
    for name, argv in commands.items():
        with open(work / f"{name}.log", "wb") as log:
            processes[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                               preexec_fn=_die_with_parent)
    setup, creates = _loop_commands(cell, n, runtime)
    running = re.compile(r"^[^:]+:driver/pod/instance/(.+)#\d+/running#")
    sent: dict[str, float] = {}
    done: dict[str, float] = {}
    statuses: dict[str, int] = {}
    refused: dict[str, Any] = {}  # CreateInstance not accepted: never runs
    try:
        with Publisher(bootstrap) as publisher, CommandSource(bootstrap, "outcomes") as source:
            source.seek_all({0: 0})

            def drain(timeout_ms: int) -> None:
                for records in source.poll_batch(timeout_ms=timeout_ms).values():
                    arrived = time.perf_counter()
                    for record in records:
                        outcome = json.loads(record.value)
                        statuses[outcome["status"]] = statuses.get(outcome["status"], 0) + 1
                        command_id = outcome.get("command_id") or ""
                        if command_id.startswith("bench-create-") and \
                                outcome["status"] != "accepted":
                            refused[f"i-{int(command_id.rsplit('-', 1)[1]):05d}"] = \
                                outcome.get("reasons")
                        match = running.match(command_id)
                        if match and outcome["status"] == "accepted":
                            done.setdefault(match[1], arrived)

            for command in setup:
                publisher.send_command("admin", cell, json.dumps(command).encode())
            publisher.flush()
            deadline = time.monotonic() + timeout_s
            while statuses.get("accepted", 0) < len(setup):
                _alive(processes, work, deadline)
                drain(200)
            began = time.perf_counter()
            for k, command in enumerate(creates):
                while time.perf_counter() < began + k / rate:
                    drain(5)
                publisher.send_command("commands", cell, json.dumps(command).encode())
                publisher.flush()
                sent[command["instance_id"]] = time.perf_counter()
            while len(done) + len(refused) < n:
                _alive(processes, work, deadline)
                drain(200)
            wall = time.perf_counter() - began
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        broker.stop()
    latencies = sorted(done[i] - sent[i] for i in done)
    if not latencies:
        raise RuntimeError(f"no instance ran; refused: {list(refused.values())[:1]}")
    return {"bench": "driver-loop-kafka", "instances": n, "rate_per_s": rate,
            "boot_seconds": boot_s, "runtime": runtime, "store": store.split(":")[0],
            "wall_s": round(wall, 3), "outcomes": statuses, "running": len(done),
            "refused": len(refused), "first_refusal": next(iter(refused.values()), None),
            "latency_s": {"min": round(latencies[0], 3),
                          "p50": round(statistics.median(latencies), 3),
                          "p95": round(latencies[int(0.95 * (len(latencies) - 1))], 3),
                          "max": round(latencies[-1], 3)},
            "note": "wall-clock seconds from CreateInstance sent to the engine's accepted "
                    "outcome of the driver's running report; includes the node boot "
                    "(--boot-seconds) for instances that waited for a node and the runtime's "
                    "start (runc 0.632 s, kata 1.249 s)"}


def _alive(processes: dict[str, Any], work: Path, deadline: float) -> None:
    for name, process in processes.items():
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited ({process.returncode}); see {work}/{name}.log")
    if time.monotonic() > deadline:
        raise RuntimeError(f"the loop did not finish in time; logs in {work}")


def main(kind: str, n: int, seed: int = 7, **options: Any) -> int:
    if kind == "kafka":
        result = bench_kafka(n, **options)
    else:
        result = bench_aws(n) if kind == "aws" else bench_loop(n, seed)
    print(json.dumps(result))
    return 0
