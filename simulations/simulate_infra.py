"""The simulated infrastructure at region scale: the same ports and behaviour as
`adapters/drivers/simulated.SimulatedInfrastructure`, with what is due kept in heaps.

The base class finds the next due fact, and the facts due now, by scanning every node and
every Pod it ever made: fine for a demo, quadratic over a day of 500,000 launches. Here
each fact and each node change is pushed on a heap when it is made, and popped when due;
entries of a Pod replaced, deleted or of a node gone are dropped as they surface.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from adapters.driver_ledger import Ledger
from adapters.driver_worker import CloudHandler, PodHandler
from adapters.drivers.simulated import SimulatedInfrastructure, _Node, _Pod
from adapters.ports import NodeStatus, PodObservation
from schemas.infra import DeletePod, ProvisionNode, RunPod, TerminateNode
from simulations.driven import DrivenHarness, failures_of


class HeapInfrastructure(SimulatedInfrastructure):
    """Implements `CloudDriver` and `PodDriver` (adapters/ports.py), as its base does."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._seq = itertools.count()
        # (at, seq, instance id, the Pod, index of its fact)
        self._facts: list[tuple[datetime, int, str, _Pod, int]] = []
        self._node_times: list[datetime] = []  # when some node boots, fails or is lost
        self._listed: dict[str, _Node] = {}  # the VMs no TerminateNode ended

    # --- CloudDriver ----------------------------------------------------------------

    def provision(self, command: ProvisionNode) -> str:
        known = command.node_id in self.nodes
        provider_id = super().provision(command)
        if not known:
            node = self._listed[command.node_id] = self.nodes[command.node_id]
            for at in (node.ready_at, node.lost_at):
                if at is not None:
                    heapq.heappush(self._node_times, at)
        return provider_id

    def terminate(self, command: TerminateNode) -> None:
        super().terminate(command)
        self._listed.pop(command.node_id, None)

    def describe(self, node_group: str) -> Sequence[NodeStatus]:
        """The group's VMs not terminated by a command: the handler watches no VM it
        terminated (its ledger says so before the call), and a day's scale-ins would make
        every describe list thousands of them."""
        now = self.clock()
        return [n.status(now) for n in self._listed.values() if n.node_group == node_group]

    def lose_node(self, node_id: str, reason: str = "node lost") -> None:
        super().lose_node(node_id, reason)
        heapq.heappush(self._node_times, self.clock())

    def nodes_changed(self) -> bool:
        """Whether some node booted, failed or was lost since the last call: only then
        can describing the node groups show anything new."""
        now, changed = self.clock(), False
        while self._node_times and self._node_times[0] <= now:
            heapq.heappop(self._node_times)
            changed = True
        return changed

    def next_due(self) -> datetime | None:
        self._drop_stale()
        times = [self._facts[0][0]] if self._facts else []
        return min([*times, *self._node_times[:1]], default=None)

    # --- PodDriver ------------------------------------------------------------------

    def run(self, command: RunPod) -> None:
        before = self.pods.get(command.instance_id)
        super().run(command)
        pod = self.pods[command.instance_id]
        if pod is not before:
            for index, fact in enumerate(pod.facts):
                heapq.heappush(self._facts, (fact.at, next(self._seq), command.instance_id,
                                             pod, index))

    def watch(self, timeout_s: float = 0.0) -> Sequence[PodObservation]:
        now = self.clock()
        due: list[PodObservation] = []
        while self._facts and self._facts[0][0] <= now:
            _, _, instance_id, pod, index = heapq.heappop(self._facts)
            if self._live(instance_id, pod, index):
                due.append(pod.facts[index])
                pod.emitted = index + 1
        return due

    def crash(self, instance_id: str, exit_code: int = 137, container: str | None = None
              ) -> None:
        pod = self.pods[instance_id]
        known = len(pod.facts)
        super().crash(instance_id, exit_code, container)
        for index in range(known, len(pod.facts)):
            heapq.heappush(self._facts, (pod.facts[index].at, next(self._seq), instance_id,
                                         pod, index))

    def _live(self, instance_id: str, pod: _Pod, index: int) -> bool:
        """A fact is still to be shown: its Pod is the instance's current one, not deleted
        before the fact, and the facts before it were shown (they are, in time order)."""
        fact = pod.facts[index]
        return (self.pods.get(instance_id) is pod and pod.emitted == index
                and (pod.deleted_at is None or fact.at <= pod.deleted_at))

    def _drop_stale(self) -> None:
        while self._facts and not self._live(*self._facts[0][2:]):
            heapq.heappop(self._facts)

    def delete(self, command: DeletePod) -> None:
        super().delete(command)
        pod = self.pods.get(command.instance_id)
        # Forget a deleted Pod with nothing left to show: a day's Pods would not fit.
        if pod is not None and pod.deleted_at is not None and all(
                f.at > pod.deleted_at for f in pod.facts[pod.emitted:]):
            del self.pods[command.instance_id]


class HeapDrivenHarness(DrivenHarness):
    """`DrivenHarness` on a `HeapInfrastructure`: the same run, without scanning every node
    and Pod at every step (the demo at --instances 20000)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.infra = HeapInfrastructure(self.clock, self.boot_seconds,
                                        failures=failures_of(self.plans))
        self.cloud = CloudHandler(self.infra, Ledger(":memory:"), self.clock)
        self.pods = PodHandler(self.infra)

    def _reports(self, handler: CloudHandler | PodHandler) -> list[Any]:
        if handler is self.cloud and not self.infra.nodes_changed():
            return []  # no node booted, failed or was lost: a describe shows nothing new
        return super()._reports(handler)
