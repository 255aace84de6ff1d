"""Placements and whole lifecycles as waves of commands, for the apply and intake benches.

Each instance takes five commands: CreateInstance (placed on a node: Requested, Scheduled),
ReportInstanceStarting and ReportInstanceRunning from its node (each with its sequence:
Starting or Running, and Sequenced), StopInstance (Stopped: its room is freed) and
DeleteInstance (Deleted). They go in waves, a pipeline: wave k creates group k, reports
group k-1 starting and group k-2 running, stops group k-3 and deletes group k-4. A report
names the node its instance was placed on, so between waves the caller reads the new
Scheduled events (`Placements.learn`, untimed) before building the next wave.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from eventsourcing.utils import get_topic

from engine.application import CisApplication
from engine.domain.instance import Instance
from simulations import workloads

POOL = "bench-life"
NODES = 10
# Room for every live instance of the pipeline: 64 vCPU, 256 GiB, 250 ENIs and Pods a node.
MODEL = {"name": "64C256G", "millicores": 64_000, "memory_mib": 262_144, "enis": 250,
         "pods": 250}
STEPS = 5  # commands per instance
ACCOUNTS = 100


def setup_commands(cell: str = workloads.CELL, at: datetime = workloads.DAY_START
                   ) -> list[dict[str, Any]]:
    """The price book, a shared pool of NODES nodes and each node's ready report."""
    price, _, kata = workloads.setup(at=at, cell=cell)[:3]
    pool = {**kata, "pool": POOL, "command_id": f"{POOL}-pool", "min_nodes": NODES,
            "max_nodes": NODES, "node_models": [MODEL]}
    ready = [{"type": "ReportNodeReady", "command_id": f"{POOL}-ready-{k}", "cell": cell,
              "occurred_at": (at + timedelta(seconds=30)).isoformat(),
              "node_id": f"{POOL}-{k:05d}"} for k in range(1, NODES + 1)]
    networks = workloads.account_networks(
        (f"acct-{i}" for i in range(ACCOUNTS)), cell, at,
        {"vpc": "vpc-1", "subnet": "subnet-1"}, prefix=POOL)
    return [price, pool, *ready, *networks]


class Placements:
    """The node each bench instance was scheduled on, read from the log's Scheduled events."""

    TOPICS = (get_topic(Instance.Scheduled),)

    def __init__(self, names: Iterable[tuple[str, str, str]]) -> None:
        # aggregate id -> instance id, for the (cell, account, instance id) of each instance
        self._names = {Instance.create_id(cell, account, name): name
                       for cell, account, name in names}
        self.nodes: dict[str, str] = {}
        self.position = 0

    def learn(self, app: CisApplication) -> None:
        """Read the Scheduled events stored since the last call."""
        while page := app.page(self.position, topics=self.TOPICS):
            for position, event in page:
                self.position = position
                name = self._names.get(event.originator_id)
                if name is not None:
                    self.nodes[name] = event.node_id


class Lifecycles:
    """`instances` instances in groups of `group`, their commands in waves."""

    def __init__(self, instances: int, group: int, cell: str = workloads.CELL,
                 start: datetime = workloads.DAY_START + timedelta(seconds=60)) -> None:
        self.instances, self.group, self.cell, self.start = instances, group, cell, start
        self.waves = -(-instances // group) + STEPS - 1  # the pipeline fills and drains

    def names(self) -> list[tuple[str, str, str]]:
        return [(self.cell, self._account(i), self._name(i)) for i in range(self.instances)]

    def wave(self, k: int, nodes: dict[str, str]) -> list[dict[str, Any]]:
        """Wave k's commands, creates first; `nodes` must know where group k-1 was placed."""
        at = self.start + timedelta(seconds=k)
        out: list[dict[str, Any]] = []
        for step in range(STEPS):
            for i in self._group(k - step):
                out.append(self._command(step, i, at + timedelta(milliseconds=len(out)),
                                         nodes))
        return out

    def _group(self, g: int) -> range:
        if g < 0:
            return range(0)
        return range(g * self.group, min((g + 1) * self.group, self.instances))

    @staticmethod
    def _name(i: int) -> str:
        return f"life-{i:07d}"

    @staticmethod
    def _account(i: int) -> str:
        return f"acct-{i % ACCOUNTS}"

    def _command(self, step: int, i: int, at: datetime, nodes: dict[str, str]
                 ) -> dict[str, Any]:
        name, account = self._name(i), self._account(i)
        base = {"command_id": f"{name}-{step}", "cell": self.cell, "account": account,
                "instance_id": name}
        if step == 0:
            return {**base, "type": "CreateInstance", "issued_at": at.isoformat(),
                    "pool": POOL, "runtime": "kata", "restart_policy": "Always",
                    "containers": [{"name": "main", "image": "nginx:1.27", "vcpu": "0.25",
                                    "memory_gib": "0.5"}],
                    "network": {"vpc": "vpc-1", "subnet": "subnet-1"}}
        if step in (1, 2):
            report = "ReportInstanceStarting" if step == 1 else "ReportInstanceRunning"
            return {**base, "type": report, "occurred_at": at.isoformat(),
                    "node_id": nodes[name], "sequence": step}
        kind = "StopInstance" if step == 3 else "DeleteInstance"
        return {**base, "type": kind, "issued_at": at.isoformat()}
