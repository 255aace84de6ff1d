"""What drivers observe, as the engine's report commands (schemas/commands.py).

A report's command_id names the fact it states, so the same fact reported twice (a worker
restarted after sending but before remembering it sent) is the same command and the engine
deduplicates it. Ids stay within the contract's 128 characters: a longer one keeps its
head and ends in a digest of the whole.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime

from adapters.ports import DriverRefused, PodObservation
from schemas.commands import (
    CommandBase,
    ReportContainerExited,
    ReportInstanceRunning,
    ReportInstanceStarting,
    ReportInstanceTerminated,
    ReportNodeLost,
    ReportNodeReady,
)
from schemas.infra import RunPod
from schemas.limits import MAX_TEXT_CHARS

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


def refused_run(command: RunPod, refusal: DriverRefused) -> ReportInstanceTerminated:
    """A Pod that will never run: its instance ends failed, so the tenant hears why and it
    is not billed (no started_at). Dated at the RunPod's own time and named by it, so a
    repeat after a crash is the same report, deduplicated."""
    return ReportInstanceTerminated(
        command_id=report_id(command.cell, "pod", command.instance_id, command.caused_by,
                             "refused"),
        cell=command.cell, account=command.account, instance_id=command.instance_id,
        node_id=command.node_id, occurred_at=command.at,
        reason=_printable(f"pod refused: {refusal}")[:MAX_TEXT_CHARS])


def _printable(text: str) -> str:
    # An API server's message may hold line breaks; a reason never holds control characters.
    return re.sub(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]+", " ", text)
