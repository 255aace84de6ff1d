"""The whole loop with real parts: tansu, `cis serve` on PostgreSQL, `cis driver cloud
--provider aws` on a moto server and `cis driver pods --provider simulated`, each its own
process. Commands go in on the role topics; the engine's VM and Pod commands come out of its
outbox, the drivers carry them out and only what the infrastructure shows comes back as
reports. Times are the wall clock's (the ticker's and the drivers'), so the commands put in
here carry wall-clock times too (a cell's clock is earned: engine/limits.py)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from adapters import queries
from adapters.bootstrap import connect
from adapters.drivers.aws import CELL_TAG, GROUP_TAG, MODEL_TAG, NODE_TAG
from simulations.tansu import Broker
from tests import test_serve_helpers as h
from tests.moto_fixtures import REGION, MotoServer, moto_server  # noqa: F401 (fixture)
from tests.stores import PostgresTestDatabase
from tests.test_serve_helpers import reap_serve_processes  # noqa: F401 (autouse)

CELL, ACCOUNT, POOL = "az-7", "acme", "general"
MODELS = [{"name": "2C4G", "millicores": 2000, "memory_mib": 4096},
          {"name": "4C8G", "millicores": 4000, "memory_mib": 8192}]
CATALOGUE = [{"vcpu": "0.5", "memory_gib": "1"}, {"vcpu": "2", "memory_gib": "4"}]
# The node model a dedicated pool picks for each instance (the smallest that holds its spec
# plus the runtime's overhead) and the EC2 type the driver maps that model to.
INSTANCES = {"web-1": ("0.5", "1", "2C4G"), "web-2": ("0.5", "1", "2C4G"),
             "big-1": ("2", "4", "4C8G")}
EC2_TYPES = {"2C4G": "c6i.large", "4C8G": "c6i.xlarge"}
LIVE = ["pending", "running", "stopping", "stopped"]


def now(offset_s: float = 0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=offset_s)).isoformat()


def whole_second() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def setup_commands() -> list[dict[str, Any]]:
    second = whole_second()  # prices start at a whole second and are never retroactive
    return [
        {"type": "PublishPriceBook", "command_id": "e2e-price", "cell": CELL,
         "issued_at": second, "effective_from": second, "rate_per_vcpu_second": "0.01",
         "rate_per_gib_second": "0.001"},
        {"type": "ConfigurePool", "command_id": "e2e-pool", "cell": CELL, "issued_at": now(),
         "pool": POOL, "kind": "dedicated", "node_models": MODELS, "min_nodes": 0,
         "max_nodes": 10, "spec_catalogue": CATALOGUE, "scale_down_unneeded_seconds": 1},
        {"type": "SetAccountNetworks", "command_id": "e2e-networks", "cell": CELL,
         "issued_at": now(), "account": ACCOUNT, "vpcs": ["vpc-1"], "subnets": ["subnet-1"]}]


def create(name: str) -> dict[str, Any]:
    vcpu, gib, _ = INSTANCES[name]
    return {"type": "CreateInstance", "command_id": f"create-{name}", "cell": CELL,
            "issued_at": now(), "account": ACCOUNT, "instance_id": name, "pool": POOL,
            "restart_policy": "Always",
            "containers": [{"name": "c0", "image": "nginx:1.27", "vcpu": vcpu,
                            "memory_gib": gib}],
            "network": {"vpc": "vpc-1", "subnet": "subnet-1"}}


def stop(name: str) -> dict[str, Any]:
    return {"type": "StopInstance", "command_id": f"stop-{name}", "cell": CELL,
            "issued_at": now(), "account": ACCOUNT, "instance_id": name}


def vms(ec2: Any) -> dict[str, dict[str, Any]]:
    """Live EC2 instances carrying a node id, by node id."""
    found: dict[str, dict[str, Any]] = {}
    pages = ec2.get_paginator("describe_instances").paginate(Filters=[
        {"Name": "instance-state-name", "Values": LIVE},
        {"Name": "tag-key", "Values": [NODE_TAG]}])
    for page in pages:
        for reservation in page["Reservations"]:
            for vm in reservation["Instances"]:
                tags = {t["Key"]: t["Value"] for t in vm["Tags"]}
                assert tags[NODE_TAG] not in found, f"two VMs for node {tags[NODE_TAG]}"
                found[tags[NODE_TAG]] = {**vm, "tags": tags}
    return found


def driver(args: list[str], log_path: Path) -> h.ServeProcess:
    """A `cis driver …` process (reaped like `cis serve` if the test fails)."""
    return h.ServeProcess([h.CIS, "driver", *args], log_path,
                          env={"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"})


@pytest.fixture
def aws(moto_server: MotoServer) -> dict[str, Any]:  # noqa: F811
    moto_server.reset()
    (subnet,), image = moto_server.network()
    return {"ec2": moto_server.client("ec2"), "autoscaling": moto_server.client("autoscaling"),
            "url": moto_server.url, "subnet": subnet, "image": image}


@pytest.fixture
def loop(kafka_broker: Broker, kafka_topic_factory: Callable[..., str],
         pg_database: PostgresTestDatabase, aws: dict[str, Any], tmp_path: Path
         ) -> Iterator[dict[str, Any]]:
    topics = {name: kafka_topic_factory(name, partitions=1) for name in (
        "commands", "reports", "admin", "outcomes", "dlq", "vm", "pod", "vm-dlq", "pod-dlq")}
    store = pg_database.new_schema()
    bootstrap = kafka_broker.bootstrap
    serve = h.ServeProcess(h.serve_args(store, bootstrap, topics, "--tick-interval", "1"),
                           tmp_path / "serve.log")
    common = ["--kafka", bootstrap, "--reports-topic", topics["reports"], "--backoff", "0.1",
              "--log-level", "info"]
    cloud = driver(["cloud", "--provider", "aws", *common, "--state",
                    str(tmp_path / "cloud.db"), "--vm-topic", topics["vm"], "--dlq-topic",
                    topics["vm-dlq"], "--region", REGION, "--endpoint-url", aws["url"],
                    "--image-id", aws["image"], "--subnet", aws["subnet"],
                    "--observe-interval", "0.3"], tmp_path / "cloud.log")
    pods = driver(["pods", "--provider", "simulated", *common, "--state",
                   str(tmp_path / "pods.db"), "--pod-topic", topics["pod"], "--dlq-topic",
                   topics["pod-dlq"]], tmp_path / "pods.log")
    yield {"topics": topics, "store": store, "serve": serve, "cloud": cloud, "pods": pods,
           "bootstrap": bootstrap, **aws}
    for process in (pods, cloud, serve):
        process.kill()


def outcomes(loop: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    return h.outcomes_by_id(h.read_topic(loop["bootstrap"], loop["topics"]["outcomes"]))


def wait(loop: dict[str, Any], what: Callable[[], bool], name: str) -> None:
    """Poll with a deadline (against hangs only), failing early if a process died."""
    def alive_and(what: Callable[[], bool]) -> bool:
        for key in ("cloud", "pods"):
            process = loop[key]
            assert process.alive(), f"{key} driver exited: {process.log_path.read_text()[-3000:]}"
        return what()
    h.wait_until(lambda: alive_and(what), name, process=loop["serve"])


def test_the_loop_runs_on_ec2_and_pods_bills_and_scales_in(loop: dict[str, Any]) -> None:
    topics, store, ec2 = loop["topics"], loop["store"], loop["ec2"]
    h.produce_by_role(loop["bootstrap"], topics, setup_commands())
    wait(loop, lambda: {"e2e-price", "e2e-pool"} <= outcomes(loop).keys(), "the set-up")
    set_up = {k: o[0] for k, o in outcomes(loop).items() if k.startswith("e2e-")}
    assert all(o["status"] == "accepted" for o in set_up.values()), [
        o.get("reasons") for o in set_up.values()]

    h.produce_by_role(loop["bootstrap"], topics, [create(n) for n in INSTANCES])
    with connect(store) as engine:
        def rows() -> dict[str, dict[str, Any]]:
            return {r["instance_id"]: r for r in queries.instances(engine, ACCOUNT)}

        wait(loop, lambda: len(rows()) == len(INSTANCES)
             and all(r["state"] == "running" for r in rows().values()),
             "every instance running")
        nodes = {name: row["node_id"] for name, row in rows().items()}
        assert len(set(nodes.values())) == len(INSTANCES), "a dedicated pool: a VM each"

        # One EC2 instance per node, of its model's type, tagged with node, cell, group, model.
        live = vms(ec2)
        assert live.keys() == set(nodes.values()), "one VM per node, no spare one"
        for name, node in nodes.items():
            model = INSTANCES[name][2]
            vm = live[node]
            assert vm["InstanceType"] == EC2_TYPES[model], (name, vm["InstanceType"])
            assert vm["State"]["Name"] == "running"
            assert {k: vm["tags"][k] for k in (CELL_TAG, MODEL_TAG, GROUP_TAG)} == {
                CELL_TAG: CELL, MODEL_TAG: model, GROUP_TAG: f"{CELL}-{POOL}-{model}"}
        groups = aws_groups(loop["autoscaling"])
        assert groups == {f"{CELL}-{POOL}-2C4G": 2, f"{CELL}-{POOL}-4C8G": 1}, \
            "running VMs are attached to their model's group"

        # The reports came from the drivers.
        reports = [json.loads(r.value) for r in h.read_topic(loop["bootstrap"],
                                                            topics["reports"])]
        kinds = {(r["type"], r.get("node_id"), r.get("instance_id")) for r in reports}
        assert {("ReportNodeReady", n, None) for n in nodes.values()} <= kinds
        assert {("ReportInstanceRunning", nodes[i], i) for i in INSTANCES} <= kinds

        # Invoices: the open period bills each instance once it ran (ticks move the clock).
        def billed() -> dict[str, Any]:
            found = queries.invoices(engine, ACCOUNT)["invoices"]
            return {line["instance_id"]: line for invoice in found
                    for line in invoice["lines"]}

        wait(loop, lambda: billed().keys() == INSTANCES.keys() and all(
            line["seconds"] > 0 and Decimal(line["amount"]) > 0 for line in billed().values()),
            "an invoice line with billed seconds for each instance")

        # Scale-in: web-1 stops; its node empties and goes; the others stay.
        h.produce_by_role(loop["bootstrap"], topics, [stop("web-1")])
        wait(loop, lambda: nodes["web-1"] not in vms(ec2), "web-1's VM terminated")
        assert vms(ec2).keys() == {nodes["web-2"], nodes["big-1"]}
        assert rows()["web-1"]["state"] == "stopped"

        # Everything stops: with min_nodes 0 no VM is left behind.
        h.produce_by_role(loop["bootstrap"], topics, [stop("web-2"), stop("big-1")])
        wait(loop, lambda: not vms(ec2), "every VM terminated")
        assert {r["state"] for r in rows().values()} == {"stopped"}
        assert aws_groups(loop["autoscaling"]) == dict.fromkeys(
            [f"{CELL}-{POOL}-2C4G", f"{CELL}-{POOL}-4C8G"], 0)

    # Every report the drivers sent was decided, and accepted (a repeat after a restart
    # would be answered with its recorded outcome).
    reports = [json.loads(r.value) for r in h.read_topic(loop["bootstrap"], topics["reports"])]
    wait(loop, lambda: {r["command_id"] for r in reports} <= outcomes(loop).keys(),
         "an outcome for every report")
    decided = outcomes(loop)
    assert {r["type"] for r in reports} == {
        "ReportNodeReady", "ReportInstanceStarting", "ReportInstanceRunning"}
    assert {r["command_id"]: decided[r["command_id"]][0]["status"] for r in reports} == {
        r["command_id"]: "accepted" for r in reports}
    for key in ("vm-dlq", "pod-dlq", "dlq"):
        assert h.read_topic(loop["bootstrap"], topics[key]) == [], key
    for key in ("pods", "cloud", "serve"):
        assert loop[key].terminate() == 0, loop[key].log_path.read_text()[-3000:]


def aws_groups(autoscaling: Any) -> dict[str, int]:
    """Auto Scaling groups by name: their in-service (attached, live) instance count."""
    return {g["AutoScalingGroupName"]: sum(
                1 for i in g["Instances"] if i["LifecycleState"] not in ("Terminated",
                                                                         "Terminating"))
            for g in autoscaling.describe_auto_scaling_groups()["AutoScalingGroups"]}
