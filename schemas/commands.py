"""Commands: the public contract of what producers may ask or report.

A discriminated union on `type`; every command names its `cell` (the Kafka key), carries a
unique `command_id` and the time it speaks of (`issued_at` for requests, `occurred_at` for
reports from the infrastructure, `now` for ticks). This module imports nothing of ours.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    field_validator,
    model_validator,
)

SCHEMA_VERSION = 1
MAX_CONTAINERS = 10

Name = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
Label = Annotated[str, StringConstraints(min_length=1, max_length=63)]
CommandId = Annotated[str, StringConstraints(min_length=1, max_length=128)]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=255)]
Vcpu = Annotated[Decimal, Field(gt=0, le=64, max_digits=8, decimal_places=3)]
Gib = Annotated[Decimal, Field(gt=0, le=512, max_digits=8, decimal_places=3)]
Rate = Annotated[Decimal, Field(ge=0, max_digits=24, decimal_places=18)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CommandBase(Strict):
    schema_version: Literal[1] = SCHEMA_VERSION
    command_id: CommandId
    cell: Name

    @property
    def at(self) -> datetime:
        """The time this command speaks of."""
        raise NotImplementedError


class Request(CommandBase):
    issued_at: AwareDatetime

    @property
    def at(self) -> datetime:
        return self.issued_at


class Report(CommandBase):
    occurred_at: AwareDatetime

    @property
    def at(self) -> datetime:
        return self.occurred_at


# --- tenant requests -------------------------------------------------------------------


class Container(Strict):
    name: Name
    image: ShortText
    command: list[Annotated[str, StringConstraints(max_length=4096)]] = Field(
        default_factory=list, max_length=64
    )
    env: dict[Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")],
              Annotated[str, StringConstraints(max_length=4096)]] = Field(
        default_factory=dict, max_length=100
    )
    ports: list[Annotated[int, Field(ge=1, le=65535)]] = Field(
        default_factory=list, max_length=20
    )
    vcpu: Vcpu
    memory_gib: Gib


class Network(Strict):
    vpc: Label
    subnet: Label
    security_groups: list[Label] = Field(default_factory=list, max_length=5)


class CreateInstance(Request):
    type: Literal["CreateInstance"] = "CreateInstance"
    account: Name
    instance_id: Name
    pool: Name
    containers: list[Container] = Field(min_length=1, max_length=MAX_CONTAINERS)
    restart_policy: Literal["Always", "OnFailure", "Never"] = "Always"
    runtime: Literal["runc", "kata"] = "runc"
    network: Network
    node_selector: dict[Label, Label] = Field(default_factory=dict, max_length=10)

    @field_validator("containers")
    @classmethod
    def _unique_container_names(cls, containers: list[Container]) -> list[Container]:
        names = [c.name for c in containers]
        if len(set(names)) != len(names):
            raise ValueError("container names must be unique within an instance")
        return containers

    @property
    def vcpu(self) -> Decimal:
        return sum((c.vcpu for c in self.containers), Decimal(0))

    @property
    def memory_gib(self) -> Decimal:
        return sum((c.memory_gib for c in self.containers), Decimal(0))


class StopInstance(Request):
    type: Literal["StopInstance"] = "StopInstance"
    account: Name
    instance_id: Name


class DeleteInstance(Request):
    type: Literal["DeleteInstance"] = "DeleteInstance"
    account: Name
    instance_id: Name


# --- reports from the infrastructure ---------------------------------------------------


class ReportInstanceStarting(Report):
    type: Literal["ReportInstanceStarting"] = "ReportInstanceStarting"
    instance_id: Name


class ReportInstanceRunning(Report):
    type: Literal["ReportInstanceRunning"] = "ReportInstanceRunning"
    instance_id: Name


class ReportContainerExited(Report):
    type: Literal["ReportContainerExited"] = "ReportContainerExited"
    instance_id: Name
    container: Name
    exit_code: Annotated[int, Field(ge=0, le=255)]


class ReportInstanceTerminated(Report):
    type: Literal["ReportInstanceTerminated"] = "ReportInstanceTerminated"
    instance_id: Name
    reason: ShortText


class ReportNodeReady(Report):
    type: Literal["ReportNodeReady"] = "ReportNodeReady"
    node_id: Name


class ReportNodeLost(Report):
    type: Literal["ReportNodeLost"] = "ReportNodeLost"
    node_id: Name
    reason: ShortText = "unreachable"


# --- operator commands -----------------------------------------------------------------


class NodeModel(Strict):
    """A VM shape an ASG can launch, e.g. `2C4G`."""

    name: Annotated[str, StringConstraints(pattern=r"^[0-9]+C[0-9]+G$")]
    millicores: Annotated[int, Field(gt=0, le=1_024_000)]
    memory_mib: Annotated[int, Field(gt=0, le=16_777_216)]
    enis: Annotated[int, Field(gt=0, le=1024)] = 8
    pods: Annotated[int, Field(gt=0, le=1024)] = 110
    price_per_hour: Annotated[Decimal, Field(ge=0, max_digits=12, decimal_places=6)] = Decimal(0)
    priority: Annotated[int, Field(ge=0, le=1000)] = 0


class CatalogueSpec(Strict):
    vcpu: Vcpu
    memory_gib: Gib


class ConfigurePool(Request):
    type: Literal["ConfigurePool"] = "ConfigurePool"
    pool: Name
    kind: Literal["dedicated", "shared"] = "dedicated"
    node_models: list[NodeModel] = Field(min_length=1, max_length=20)
    min_nodes: Annotated[int, Field(ge=0, le=100_000)] = 0
    max_nodes: Annotated[int, Field(ge=0, le=100_000)] = 100
    labels: dict[Label, Label] = Field(default_factory=dict, max_length=20)
    spec_catalogue: list[CatalogueSpec] = Field(min_length=1, max_length=200)
    pending_timeout_seconds: Annotated[int, Field(ge=1, le=86_400 * 7)] = 900
    placement_policy: Literal["first_fit", "best_fit", "worst_fit", "dot_product"] = "best_fit"
    # Autoscaling, with the Kubernetes Cluster Autoscaler's defaults.
    expander: Literal["least-waste", "price", "priority"] = "least-waste"
    scale_down_utilisation_threshold: Annotated[float, Field(gt=0, le=1)] = 0.5
    scale_down_unneeded_seconds: Annotated[int, Field(ge=0, le=86_400)] = 600
    disruption_budget: Annotated[int, Field(ge=0, le=10_000)] = 1
    cpu_overhead_millicores: dict[Literal["runc", "kata"], Annotated[int, Field(ge=0)]] = Field(
        default_factory=lambda: {"runc": 0, "kata": 100}
    )
    # New nodes join cordoned and take no instances until an UncordonNode (an operator, or
    # an agent that finished setting the node up), like Karpenter's startup taints. Until
    # then the autoscaler counts them as capacity on its way.
    start_cordoned: bool = False

    @model_validator(mode="after")
    def _min_le_max(self) -> ConfigurePool:
        if self.min_nodes > self.max_nodes:
            raise ValueError("min_nodes must not exceed max_nodes")
        return self


class CordonNode(Request):
    """An operator holds a node: it takes no new instances and keeps those it has (never
    evicts); the autoscaler neither uncordons nor terminates it until UncordonNode."""

    type: Literal["CordonNode"] = "CordonNode"
    node_id: Name
    reason: ShortText = "cordoned by an operator"


class UncordonNode(Request):
    """The node takes work again (also ends a pool's start_cordoned hold)."""

    type: Literal["UncordonNode"] = "UncordonNode"
    node_id: Name
    reason: ShortText = "uncordoned by an operator"


class PublishPriceBook(Request):
    type: Literal["PublishPriceBook"] = "PublishPriceBook"
    effective_from: AwareDatetime
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] = "USD"
    minor_unit: Annotated[int, Field(ge=0, le=4)] = 2
    rate_per_vcpu_second: Rate
    rate_per_gib_second: Rate
    min_seconds: Annotated[int, Field(ge=0, le=86_400)] = 0
    grace_seconds: Annotated[int, Field(ge=0, le=86_400 * 31)] = 3600
    # Per-runtime rates replacing both base rates, e.g. {"kata": {"rate_per_vcpu_second":
    # "0.0000137", "rate_per_gib_second": "0.0000015"}}.
    runtime_rates: dict[Literal["runc", "kata"], dict[
        Literal["rate_per_vcpu_second", "rate_per_gib_second"], Rate]] = Field(
        default_factory=dict)

    @field_validator("runtime_rates")
    @classmethod
    def _both_rates(cls, value: dict[str, dict[str, Decimal]]) -> dict[str, dict[str, Decimal]]:
        for runtime, rates in value.items():
            if len(rates) != 2:
                raise ValueError(f"runtime {runtime!r} needs rate_per_vcpu_second and "
                                 "rate_per_gib_second")
        return value

    @field_validator("effective_from")
    @classmethod
    def _whole_second(cls, value: datetime) -> datetime:
        if value.microsecond:
            raise ValueError("effective_from must be a whole second")
        return value


class Tick(CommandBase):
    type: Literal["Tick"] = "Tick"
    now: AwareDatetime

    @property
    def at(self) -> datetime:
        return self.now


Command = Annotated[
    CreateInstance
    | StopInstance
    | DeleteInstance
    | ReportInstanceStarting
    | ReportInstanceRunning
    | ReportContainerExited
    | ReportInstanceTerminated
    | ReportNodeReady
    | ReportNodeLost
    | ConfigurePool
    | CordonNode
    | UncordonNode
    | PublishPriceBook
    | Tick,
    Field(discriminator="type"),
]

COMMAND_TYPES: dict[str, type[CommandBase]] = {
    cls.model_fields["type"].default: cls
    for cls in (
        CreateInstance, StopInstance, DeleteInstance, ReportInstanceStarting,
        ReportInstanceRunning, ReportContainerExited, ReportInstanceTerminated,
        ReportNodeReady, ReportNodeLost, ConfigurePool, CordonNode, UncordonNode,
        PublishPriceBook, Tick,
    )
}

command_adapter: TypeAdapter[Command] = TypeAdapter(Command)
