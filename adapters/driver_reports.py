"""What drivers observe, as the engine's report commands (schemas/commands.py).

A report's command_id names the fact it states, so the same fact reported twice (a worker
restarted after sending but before remembering it sent) is the same command and the engine
deduplicates it. Ids stay within the contract's 128 characters: a longer one keeps its
head and ends in a digest of the whole.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from adapters.ports import PodObservation
from schemas.commands import (
    CommandBase,
    ReportContainerExited,
    ReportInstanceRunning,
    ReportInstanceStarting,
    ReportInstanceTerminated,
    ReportNodeLost,
    ReportNodeReady,
)

MAX_ID = 128
POD_REPORTS: dict[str, type[CommandBase]] = {
    "starting": ReportInstanceStarting, "running": ReportInstanceRunning,
    "exited": ReportContainerExited, "terminated": ReportInstanceTerminated}


def report_id(cell: str, *parts: str) -> str:
    whole = f"{cell}:driver/" + "/".join(parts)
    if len(whole) <= MAX_ID:
        return whole
    digest = hashlib.sha256(whole.encode()).hexdigest()[:24]
    return f"{whole[:MAX_ID - 25]}~{digest}"


# A node report's id names the VM (the provider's id) as well as the node: node ids are a
# counter anyone can guess, and an agent that sent a report under a guessed id first would
# make the driver's real one a `command_id_reused` (a lost VM billed on, a ready one never
# used). The provider's id exists only once the VM does, and stays the same across restarts.


def node_ready(cell: str, node_id: str, provider_id: str, at: datetime) -> ReportNodeReady:
    return ReportNodeReady(command_id=report_id(cell, "node", node_id, provider_id, "ready"),
                           cell=cell, node_id=node_id, occurred_at=at)


def node_lost(cell: str, node_id: str, provider_id: str, at: datetime, reason: str
              ) -> ReportNodeLost:
    return ReportNodeLost(command_id=report_id(cell, "node", node_id, provider_id, "lost"),
                          cell=cell, node_id=node_id, occurred_at=at,
                          reason=reason[:255] or "lost")


def pod_report(fact: PodObservation) -> CommandBase:
    model = POD_REPORTS[fact.report]
    fields: dict[str, object] = {
        "command_id": report_id(fact.cell, "pod", fact.key), "cell": fact.cell,
        "account": fact.account, "instance_id": fact.instance_id, "node_id": fact.node_id,
        "occurred_at": fact.at}
    if fact.report == "exited":
        fields.update(container=fact.container, exit_code=fact.exit_code)
    elif fact.report == "terminated":
        fields["reason"] = (fact.reason or "terminated")[:255]
    # The driver's ordering of an instance's facts goes with every report: the engine takes
    # a report numbered no higher than one it applied as stale (issue 14).
    if fact.sequence is not None:
        fields["sequence"] = fact.sequence
    return model(**fields)
