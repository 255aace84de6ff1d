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
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
        image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        driver = AwsCloudDriver.connect(AwsConfig(image_id=image, subnets=[subnet]), REGION,
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


def main(kind: str, n: int, seed: int = 7) -> int:
    result = bench_aws(n) if kind == "aws" else bench_loop(n, seed)
    print(json.dumps(result))
    return 0
