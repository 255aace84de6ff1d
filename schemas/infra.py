"""Infrastructure commands: what the engine tells the cloud and the nodes to do.

The outbox derives them from the event log and publishes them (VM commands keyed by cell,
Pod commands keyed by node). Delivery is at least once: a `command_id` is the id of the
event that caused the command, so a consumer deduplicates by it and a re-publication after
a crash is byte for byte the same message. This module imports nothing of ours.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from schemas.commands import SCHEMA_VERSION


class InfraCommandBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    schema_version: Literal[1] = SCHEMA_VERSION
    command_id: str = Field(description="`{cell}:{caused_by}`: unique, stable across re-sends")
    caused_by: str = Field(description="the event this follows from, as outcomes name events")
    cell: str
    at: datetime = Field(description="the time of that event")


class ProvisionNode(InfraCommandBase):
    """Create one VM in the pool's node group (cloud: an auto-scaling group or fleet whose
    launch template is the group's; instance type = `model`; tag it with `node_id` and the
    labels). The node agent then reports `ReportNodeReady{node_id}`."""

    type: Literal["ProvisionNode"] = "ProvisionNode"
    node_id: str
    pool: str
    node_group: str = Field(description="`{cell}-{pool}-{model}`: one group per node model")
    model: str
    capacity: dict[str, int]
    labels: dict[str, str]
    reason: str


class TerminateNode(InfraCommandBase):
    """Terminate the VM (cloud: terminate the instance in its group, decrementing desired
    capacity). Sent only for nodes the engine emptied; a lost node needs no command."""

    type: Literal["TerminateNode"] = "TerminateNode"
    node_id: str
    pool: str
    node_group: str
    reason: str


class RunPod(InfraCommandBase):
    """Create the instance's Pod on its node: `manifest` is a Kubernetes v1 Pod bound to the
    node (`spec.nodeName`), so no other scheduler is involved."""

    type: Literal["RunPod"] = "RunPod"
    instance_id: str
    account: str
    node_id: str
    manifest: dict[str, Any]


class DeletePod(InfraCommandBase):
    """Delete the instance's Pod: it ended or was stopped, and billing has already stopped."""

    type: Literal["DeletePod"] = "DeletePod"
    instance_id: str
    account: str
    node_id: str
    namespace: str
    pod: str
    reason: str
    grace_period_seconds: int = Field(ge=0)


VmCommand = Annotated[ProvisionNode | TerminateNode, Field(discriminator="type")]
PodCommand = Annotated[RunPod | DeletePod, Field(discriminator="type")]
InfraCommand = Annotated[ProvisionNode | TerminateNode | RunPod | DeletePod,
                         Field(discriminator="type")]
infra_command_adapter: TypeAdapter[Any] = TypeAdapter(InfraCommand)
INFRA_COMMAND_TYPES: dict[str, type[InfraCommandBase]] = {
    c.__name__: c for c in (ProvisionNode, TerminateNode, RunPod, DeletePod)}

