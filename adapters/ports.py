"""The ports between the engine's commands and the infrastructure that carries them out.

A `CloudDriver` makes VMs in node groups (AWS Auto Scaling, Tencent AS, the simulation); a
`PodDriver` runs Pods on nodes (Kubernetes, the simulation). The driver worker
(`adapters/driver_worker.py`) feeds them the outbox's commands and turns what they observe
into reports for the engine. Drivers are idempotent per command: doing a command twice (a
retry, a restart after a crash) leaves the infrastructure as doing it once would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol, runtime_checkable

from schemas.infra import DeletePod, ProvisionNode, RunPod, TerminateNode

# A VM as the cloud describes it, in our words: pending (booting), running (ready for
# Pods), stopped (stopped or stopping outside our commands), gone (terminated, shutting
# down or no longer listed).
NodeState = Literal["pending", "running", "stopped", "gone"]
PodReport = Literal["starting", "running", "exited", "terminated"]


class DriverError(Exception):
    """The infrastructure refused or failed a call; worth retrying (with back-off)."""


class DriverRefused(DriverError):
    """The infrastructure refused a command for good (the same call would be refused again:
    an invalid Pod, a forbidden namespace). The worker dead-letters it at once instead of
    retrying, and reports what the refusal ends (`refused_run`). `code` names the refusal."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code


@dataclass(frozen=True)
class NodeStatus:
    node_id: str
    provider_id: str  # the cloud's id of the VM (an EC2 instance id, ...)
    state: NodeState
    since: datetime | None = None  # when the VM entered this state, if the cloud says
    detail: str = ""  # the cloud's own state name or reason


@dataclass(frozen=True)
class PodObservation:
    """One fact about an instance's Pod, as a report will state it.

    `key` names the fact stably (the same fact observed again, e.g. after a restart of the
    worker, has the same key), so the report's command_id is stable and the engine
    deduplicates it. `sequence` orders an instance's facts (restarts count up); the engine
    takes a report numbered no higher than one it applied as stale. None: the driver cannot
    order this fact against the instance's others (the engine then decides by state).
    """

    report: PodReport
    cell: str
    account: str
    instance_id: str
    node_id: str
    at: datetime
    key: str
    sequence: int | None = 0
    container: str | None = None
    exit_code: int | None = None
    reason: str | None = None


@runtime_checkable
class CloudDriver(Protocol):
    def provision(self, command: ProvisionNode) -> str:
        """Start one VM for `command.node_id` in `command.node_group` (creating the group
        if needed) and return its provider id. Done again for the same command, returns
        the same VM: never a second one."""
        ...

    def terminate(self, command: TerminateNode) -> None:
        """Terminate the node's VM, decrementing the group's desired capacity. A VM that is
        already gone is no error."""
        ...

    def describe(self, node_group: str) -> Sequence[NodeStatus]:
        """The group's VMs that carry a node id, whatever their state."""
        ...


@runtime_checkable
class PodDriver(Protocol):
    def run(self, command: RunPod) -> None:
        """Create the Pod of `command.manifest` on its node. A Pod that already exists (a
        retried command) is no error."""
        ...

    def delete(self, command: DeletePod) -> None:
        """Delete the Pod with the command's grace period. A Pod that is gone is no error."""
        ...

    def watch(self, timeout_s: float) -> Sequence[PodObservation]:
        """What changed in our Pods since the last call, waiting up to `timeout_s` for
        something to change. May repeat a fact already returned (same key)."""
        ...
