"""A simulated infrastructure behind both ports, for the demo, tests and simulations.

Nodes boot after a configurable delay; Pods start after their runtime's measured start
time (docs/design.md §3.7: runc 0.632 s, kata 1.249 s, hyper 3.256 s); failures are injected: a VM
that never boots, a node lost after it booted, a container that exits. Time is the clock
passed in (a `VirtualClock` in tests and simulations): nothing here reads the wall clock,
so a run is a function of its commands, injections and clock readings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from adapters.ports import NodeStatus, PodObservation
from schemas.infra import DeletePod, ProvisionNode, RunPod, TerminateNode

Clock = Callable[[], datetime]

START_SECONDS: dict[str, float] = {"runc": 0.632, "kata": 1.249, "hyper": 3.256}
NODE_BOOT_SECONDS = 45.0
RESTART_BACKOFF_SECONDS = 10.0  # the kubelet's first back-off after a container exits


class VirtualClock:
    """A clock that moves only when told."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@dataclass(frozen=True)
class Exit:
    """A container of an instance exits `after_s` seconds after the Pod (re)started."""

    after_s: float
    exit_code: int = 137
    container: str | None = None  # None: the Pod's first container


@dataclass
class Failures:
    """What goes wrong, by name: set before the commands arrive or injected later."""

    boot_failures: set[str] = field(default_factory=set)  # node ids whose VM never boots
    node_losses: dict[str, float] = field(default_factory=dict)  # node id -> s after ready
    exits: dict[str, list[Exit]] = field(default_factory=dict)  # instance id -> its exits


@dataclass
class _Node:
    node_id: str
    node_group: str
    provider_id: str
    ready_at: datetime
    boots: bool
    lost_at: datetime | None = None
    lost_reason: str = "node lost"
    terminated_at: datetime | None = None

    def status(self, now: datetime) -> NodeStatus:
        def status(state: str, since: datetime | None, detail: str) -> NodeStatus:
            return NodeStatus(self.node_id, self.provider_id, state, since,  # type: ignore
                              detail)

        if self.terminated_at is not None and self.terminated_at <= now:
            return status("gone", self.terminated_at, "terminated")
        if not self.boots and self.ready_at <= now:
            return status("gone", self.ready_at, "boot failure")
        if self.lost_at is not None and self.lost_at <= now:
            return status("gone", self.lost_at, self.lost_reason)
        if self.ready_at <= now:
            return status("running", self.ready_at, "running")
        return status("pending", None, "booting")


@dataclass
class _Pod:
    command: RunPod
    containers: list[str]
    restarts_on: frozenset[str]  # "zero" and/or "nonzero": exits the restart policy restarts
    start_s: float
    facts: list[PodObservation] = field(default_factory=list)
    emitted: int = 0
    deleted_at: datetime | None = None

    def fact(self, report: str, at: datetime, **fields: object) -> PodObservation:
        c = self.command
        sequence = len(self.facts)
        key = f"{c.caused_by}/{report}#{sequence}"  # caused_by names the instance and run
        fact = PodObservation(report, c.cell, c.account, c.instance_id, c.node_id,  # type: ignore
                              at, key, sequence, **fields)  # type: ignore[arg-type]
        self.facts.append(fact)
        return fact

    def exit(self, spec: Exit) -> None:
        """After the latest (re)start: the exit, then a restart if the policy says so."""
        running = [f for f in self.facts if f.report == "running"]
        if not running or self.facts[-1].report != "running":
            return  # not running (exited for good): nothing to exit
        at = running[-1].at + timedelta(seconds=spec.after_s)
        self.fact("exited", at, container=spec.container or self.containers[0],
                  exit_code=spec.exit_code)
        if ("zero" if spec.exit_code == 0 else "nonzero") in self.restarts_on:
            self.fact("running", at + timedelta(seconds=RESTART_BACKOFF_SECONDS))


RESTARTS = {"Always": frozenset({"zero", "nonzero"}), "OnFailure": frozenset({"nonzero"}),
            "Never": frozenset()}


class SimulatedInfrastructure:
    """Implements `CloudDriver` and `PodDriver` (see adapters/ports.py)."""

    def __init__(self, clock: Clock, boot_seconds: float = NODE_BOOT_SECONDS,
                 start_seconds: dict[str, float] | None = None,
                 failures: Failures | None = None) -> None:
        self.clock = clock
        self.boot_seconds = boot_seconds
        self.start_seconds = dict(START_SECONDS if start_seconds is None else start_seconds)
        self.failures = failures or Failures()
        self.nodes: dict[str, _Node] = {}
        self.pods: dict[str, _Pod] = {}  # instance id -> its (latest) Pod
        self.calls: list[tuple[str, str]] = []  # (verb, command_id): what was asked, in order

    # --- CloudDriver ----------------------------------------------------------------

    def provision(self, command: ProvisionNode) -> str:
        self.calls.append(("provision", command.command_id))
        node = self.nodes.get(command.node_id)
        if node is None:
            now = self.clock()
            ready_at = now + timedelta(seconds=self.boot_seconds)
            node = _Node(command.node_id, command.node_group, f"sim-{len(self.nodes) + 1:06d}",
                         ready_at, boots=command.node_id not in self.failures.boot_failures)
            loss = self.failures.node_losses.get(command.node_id)
            if loss is not None:
                node.lost_at = ready_at + timedelta(seconds=loss)
            self.nodes[command.node_id] = node
        return node.provider_id

    def terminate(self, command: TerminateNode) -> None:
        self.calls.append(("terminate", command.command_id))
        node = self.nodes.get(command.node_id)
        if node is not None and node.terminated_at is None:
            node.terminated_at = self.clock()

    def describe(self, node_group: str) -> Sequence[NodeStatus]:
        now = self.clock()
        return [n.status(now) for n in self.nodes.values() if n.node_group == node_group]

    def next_due(self) -> datetime | None:
        """When the next thing happens by itself (a boot, a loss, a Pod's next fact): a
        virtual clock can jump there."""
        now = self.clock()
        times = [t for n in self.nodes.values() if n.terminated_at is None
                 for t in (n.ready_at, n.lost_at) if t is not None and t > now]
        times += [p.facts[p.emitted].at for p in self.pods.values()
                  if p.emitted < len(p.facts) and p.deleted_at is None]
        return min(times, default=None)

    def lose_node(self, node_id: str, reason: str = "node lost") -> None:
        """The VM disappears now, outside our commands (a hypervisor failure)."""
        node = self.nodes[node_id]
        node.lost_at, node.lost_reason = self.clock(), reason

    # --- PodDriver ------------------------------------------------------------------

    def run(self, command: RunPod) -> None:
        self.calls.append(("run", command.command_id))
        known = self.pods.get(command.instance_id)
        if known is not None and known.command.command_id == command.command_id:
            return  # the same command again: the Pod exists
        spec = command.manifest["spec"]
        pod = _Pod(command, [c["name"] for c in spec["containers"]],
                   RESTARTS[spec.get("restartPolicy", "Always")],
                   self.start_seconds[spec.get("runtimeClassName") or "runc"])
        now = self.clock()
        pod.fact("starting", now)
        pod.fact("running", now + timedelta(seconds=pod.start_s))
        for spec_exit in self.failures.exits.get(command.instance_id, []):
            pod.exit(spec_exit)
        self.pods[command.instance_id] = pod

    def delete(self, command: DeletePod) -> None:
        self.calls.append(("delete", command.command_id))
        pod = self.pods.get(command.instance_id)
        if pod is not None and pod.deleted_at is None:
            pod.deleted_at = self.clock()

    def watch(self, timeout_s: float = 0.0) -> Sequence[PodObservation]:
        """Facts due by now, once each, in time order (a virtual clock never waits)."""
        now = self.clock()
        due: list[PodObservation] = []
        for pod in self.pods.values():
            while pod.emitted < len(pod.facts):
                fact = pod.facts[pod.emitted]
                if fact.at > now or (pod.deleted_at is not None and fact.at > pod.deleted_at):
                    break
                due.append(fact)
                pod.emitted += 1
        return sorted(due, key=lambda f: f.at)

    def crash(self, instance_id: str, exit_code: int = 137, container: str | None = None) -> None:
        """A container of the running instance exits now."""
        pod = self.pods[instance_id]
        running = [f for f in pod.facts if f.report == "running"]
        if running:
            pod.exit(Exit((self.clock() - running[-1].at).total_seconds(), exit_code,
                          container))
