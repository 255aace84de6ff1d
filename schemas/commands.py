"""Commands: the public contract of what producers may ask or report.

A discriminated union on `type`; every command names its `cell` (the Kafka key), carries a
unique `command_id` and the time it speaks of (`issued_at` for requests, `occurred_at` for
reports from the infrastructure, `now` for ticks). This module imports nothing of ours.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    field_validator,
    model_validator,
)

from schemas.limits import (
    MAX_ACCOUNT_NETWORK_IDS,
    MAX_ACCOUNT_VCPU,
    MAX_ARG_CHARS,
    MAX_ARGS,
    MAX_CATALOGUE,
    MAX_COMMAND_ID_CHARS,
    MAX_CONTAINERS,
    MAX_DECIMAL_CHARS,
    MAX_ENV_NAME_CHARS,
    MAX_ENV_VARS,
    MAX_INIT_CONTAINERS,
    MAX_LABEL_CHARS,
    MAX_LAUNCH_BURST,
    MAX_LAUNCH_RATE,
    MAX_MEMORY_MIB,
    MAX_MILLICORES,
    MAX_NODE_ENIS,
    MAX_NODE_MODELS,
    MAX_NODE_PODS,
    MAX_NODE_SELECTOR,
    MAX_POOL_LABELS,
    MAX_POOL_NODES,
    MAX_PORTS,
    MAX_REPORT_SEQUENCE,
    MAX_RETRY_RESTARTS,
    MAX_RETRY_WINDOW_SECONDS,
    MAX_RUNTIME_IMAGE_MB,
    MAX_RUNTIME_START_MS,
    MAX_SECURITY_GROUPS,
    MAX_TEXT_CHARS,
    MAX_TIMEOUT_SECONDS,
    TIME_MAX,
    TIME_MIN,
)

SCHEMA_VERSION = 1

# Container runtimes (engine/policies/runtimes.py has their profiles): plain containers, and
# two sandboxes with a micro-VM per Pod.
RuntimeName = Literal["runc", "kata", "hyper"]

# Who may send a command; each role writes its own topic (cis.commands, cis.reports, cis.admin).
Role = Literal["tenant", "agent", "operator"]


def _in_window(value: datetime) -> datetime:
    if not TIME_MIN <= value < TIME_MAX:
        raise ValueError(f"time_window: must lie in [{TIME_MIN:%Y-%m-%d}, {TIME_MAX:%Y-%m-%d})")
    return value


# RFC 3339 with an offset, nothing else: no Unix seconds as a number or a string.
RFC3339 = (r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
           r"([Zz]|[+-][0-9]{2}:[0-9]{2})$")
_RFC3339_MATCH = re.compile(RFC3339).fullmatch  # compiled once: every command has a time


def _rfc3339(value: object) -> object:
    # Parsed here, so that strict validation (JSON input) sees a datetime, never a number.
    # Up to nine fractional digits (Go's RFC3339Nano, Java's Instant) are taken and truncated
    # to the microsecond (fromisoformat floors them), one rule so no billed second moves.
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and _RFC3339_MATCH(value):
        try:
            return datetime.fromisoformat(value.upper())
        except ValueError:
            pass  # e.g. month 13: said below
    raise ValueError("not_rfc3339: must be an RFC 3339 date-time string with an offset, e.g. "
                     "2026-01-01T00:00:00Z")


# Every time a command speaks of is an RFC 3339 string inside the supported window
# [TIME_MIN, TIME_MAX).
Instant = Annotated[AwareDatetime, BeforeValidator(_rfc3339), AfterValidator(_in_window),
                    Field(json_schema_extra={"pattern": RFC3339})]


def _limit(name: str, **extra: object) -> Any:
    """Names a limit of schemas.limits in the JSON Schema (`x-limit`)."""
    return Field(json_schema_extra={"x-limit": name, **extra})


# Text never holds control characters (NUL breaks PostgreSQL) nor lone surrogates (not
# Unicode: pydantic refuses them as not a string).
# No control characters, and none of the invisible ones that reorder or break a line where
# the text is shown (line/paragraph separators, bidirectional overrides and isolates).
PRINTABLE = r"^[^\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]*$"
Name = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]


def _not_reserved(value: str) -> str:
    # An account is a Kubernetes namespace (adapters/pods.py): never one the cluster owns. Add-on
    # namespaces (`istio-system`, `monitoring`) are not refused by name: accounts that already
    # end in `-system` must keep stopping and deleting what they run; the Pod driver uses only
    # a namespace it made, labelled for the account (adapters/drivers/kubernetes.py).
    if value == "default" or value.startswith("kube-"):
        raise ValueError("reserved_account: `default` and names starting `kube-` are "
                         "Kubernetes' own namespaces")
    return value


AccountName = Annotated[Name, AfterValidator(_not_reserved)]
Label = Annotated[str, StringConstraints(min_length=1, max_length=MAX_LABEL_CHARS,
                                         pattern=PRINTABLE), _limit("MAX_LABEL_CHARS")]
CommandId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_COMMAND_ID_CHARS,
                                             pattern=PRINTABLE), _limit("MAX_COMMAND_ID_CHARS")]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT_CHARS,
                                             pattern=PRINTABLE), _limit("MAX_TEXT_CHARS")]
Arg = Annotated[str, StringConstraints(max_length=MAX_ARG_CHARS, pattern=PRINTABLE),
                _limit("MAX_ARG_CHARS")]
EnvName = Annotated[str, StringConstraints(
    pattern=rf"^[A-Za-z_][A-Za-z0-9_]{{0,{MAX_ENV_NAME_CHARS - 1}}}$")]

# A decimal is a JSON number or, exactly, a JSON string of ASCII digits ("0.5", "1E-7"):
# no sign, no spaces, no other digits (Python's Decimal would take "٣" and " 1 "), and an
# exponent of at most two digits ("0E-999999999" is zero, but no amount to compute with).
DECIMAL = r"^[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]{1,2})?$"
_DECIMAL_MATCH = re.compile(DECIMAL).fullmatch


def _decimal(value: object) -> object:
    # Converted here, so that strict validation (JSON input) sees a Decimal.
    if isinstance(value, Decimal):
        return _unsigned_zero(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        # A float's shortest repr: 0.1, not 0.1000000000000000055…
        return _unsigned_zero(Decimal(repr(value)))
    if isinstance(value, str) and len(value) <= MAX_DECIMAL_CHARS \
            and _DECIMAL_MATCH(value):
        return Decimal(value)
    raise ValueError(f"not_a_decimal: must be a JSON number or a decimal string such as "
                     f"\"0.5\" (ASCII digits, at most {MAX_DECIMAL_CHARS} characters)")


def _unsigned_zero(value: Decimal) -> Decimal:
    """JSON's -0.0 is zero: "-0.00" on an invoice would differ from "0.00" for every reader
    and every hash."""
    return value.copy_abs() if value.is_zero() else value


def _decimal_schema(schema: dict[str, Any]) -> None:
    for branch in schema.get("anyOf", []):
        if branch.get("type") == "string":
            branch.update(pattern=DECIMAL, maxLength=MAX_DECIMAL_CHARS)


def _strict_decimal(**bounds: Any) -> Any:
    return Annotated[Decimal, Field(**bounds), BeforeValidator(_decimal),
                     Field(json_schema_extra=_decimal_schema)]


Vcpu = _strict_decimal(gt=0, le=64, max_digits=8, decimal_places=3)
Gib = _strict_decimal(gt=0, le=512, max_digits=8, decimal_places=3)
Rate = _strict_decimal(ge=0, max_digits=24, decimal_places=18)
PricePerHour = _strict_decimal(ge=0, max_digits=12, decimal_places=6)


def _not_bool(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError("bool_not_number: must be a number, not a boolean")
    if isinstance(value, float):
        raise ValueError("int_type: must be the integer 1, not a fraction")
    return value


# JSON's `true` (or `1.0`) is not the integer 1 (pydantic's Literal[1] would take both, even
# strictly).
SchemaVersion = Annotated[Literal[1], BeforeValidator(_not_bool)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CommandBase(Strict):
    schema_version: SchemaVersion = SCHEMA_VERSION
    command_id: CommandId
    cell: Name

    @property
    def at(self) -> datetime:
        """The time this command speaks of."""
        raise NotImplementedError

    @property
    def role(self) -> Role:
        return COMMAND_ROLES[self.type]  # type: ignore[attr-defined]

    @property
    def principal(self) -> str:
        """Who speaks: command ids are unique per principal (an account, a node's agent, or
        the operator)."""
        if self.role == "tenant":
            return f"account:{self.account}"  # type: ignore[attr-defined]
        if self.role == "agent":
            return f"node:{self.node_id}"  # type: ignore[attr-defined]
        return "operator"


class Request(CommandBase):
    issued_at: Instant

    @property
    def at(self) -> datetime:
        return self.issued_at


class Report(CommandBase):
    occurred_at: Instant

    @property
    def at(self) -> datetime:
        return self.occurred_at


# --- tenant requests -------------------------------------------------------------------


# An image reference as the OCI distribution grammar has it ([host[:port]/]path[:tag]
# [@digest]): ASCII, no whitespace; what kube-apiserver would refuse (a Pod of " nginx "
# is a 422) is refused here, not retried by the Pod driver. Uppercase only in the host.
_HOST = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*" \
        r"[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?"
_PATH = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9A-Fa-f]{32,}"
IMAGE = rf"^(?:{_HOST}/)?{_PATH}(?::{_TAG})?(?:@{_DIGEST})?$"
Image = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT_CHARS,
                                         pattern=IMAGE), _limit("MAX_TEXT_CHARS")]


class Container(Strict):
    name: Name
    image: Image
    command: list[Arg] = Field(default_factory=list, max_length=MAX_ARGS,
                               json_schema_extra={"x-limit": "MAX_ARGS"})
    env: dict[EnvName, Arg] = Field(default_factory=dict, max_length=MAX_ENV_VARS,
                                    json_schema_extra={"x-limit": "MAX_ENV_VARS"})
    ports: list[Annotated[int, Field(ge=1, le=65535)]] = Field(
        default_factory=list, max_length=MAX_PORTS, json_schema_extra={"x-limit": "MAX_PORTS"})
    vcpu: Vcpu
    memory_gib: Gib


# Cloud resource ids (vpc-…, subnet-…, sg-…): no commas, spaces or slashes, so a list of
# them never reads as more entries where it is joined (a Pod annotation).
NetworkId = Annotated[str, StringConstraints(
    min_length=1, max_length=MAX_LABEL_CHARS,
    pattern=r"^[A-Za-z0-9]([A-Za-z0-9._:-]*[A-Za-z0-9])?$"), _limit("MAX_LABEL_CHARS")]


class Network(Strict):
    vpc: NetworkId
    subnet: NetworkId
    security_groups: list[NetworkId] = Field(default_factory=list, max_length=MAX_SECURITY_GROUPS,
                                         json_schema_extra={"x-limit": "MAX_SECURITY_GROUPS"})


class RetryBudget(Strict):
    """At most `restarts` restarts in any `window_seconds`; one more fails the instance
    with `retry_budget_exhausted`."""

    restarts: Annotated[int, Field(ge=0, le=MAX_RETRY_RESTARTS),
                        _limit("MAX_RETRY_RESTARTS")] = 10
    window_seconds: Annotated[int, Field(ge=1, le=MAX_RETRY_WINDOW_SECONDS),
                              _limit("MAX_RETRY_WINDOW_SECONDS")] = 3600


class CreateInstance(Request):
    type: Literal["CreateInstance"] = "CreateInstance"
    account: AccountName
    instance_id: Name
    pool: Name
    containers: list[Container] = Field(min_length=1, max_length=MAX_CONTAINERS,
                                        json_schema_extra={"x-limit": "MAX_CONTAINERS"})
    restart_policy: Literal["Always", "OnFailure", "Never"] = "Always"
    retry_budget: RetryBudget = Field(default_factory=RetryBudget)
    # Omitted: the pool's default, runc on a dedicated pool and kata on a shared one (a
    # shared pool takes only sandboxed runtimes: kata, hyper).
    runtime: RuntimeName | None = None
    network: Network
    node_selector: dict[Label, Label] = Field(default_factory=dict, max_length=MAX_NODE_SELECTOR,
                                              json_schema_extra={"x-limit": "MAX_NODE_SELECTOR"})

    # Run one after another to completion before `containers` start (Kubernetes
    # initContainers); billed like the rest (the spec is the larger of their largest and the
    # containers' sum, as Kubernetes sizes a Pod).
    init_containers: list[Container] = Field(
        default_factory=list, max_length=MAX_INIT_CONTAINERS,
        json_schema_extra={"x-limit": "MAX_INIT_CONTAINERS"})

    @field_validator("containers")
    @classmethod
    def _unique_container_names(cls, containers: list[Container]) -> list[Container]:
        names = [c.name for c in containers]
        if len(set(names)) != len(names):
            raise ValueError("container names must be unique within an instance")
        return containers

    @model_validator(mode="after")
    def _init_names_apart(self) -> CreateInstance:
        names = [c.name for c in [*self.init_containers, *self.containers]]
        if len(set(names)) != len(names):
            raise ValueError("container names must be unique within an instance (init "
                             "containers included)")
        return self

    @property
    def vcpu(self) -> Decimal:
        # Kubernetes' effective request: init containers run alone, before the others.
        total = sum((c.vcpu for c in self.containers), Decimal(0))
        if not self.init_containers:  # the common case, without building a list for max
            return total
        return max([total, *(c.vcpu for c in self.init_containers)])

    @property
    def memory_gib(self) -> Decimal:
        total = sum((c.memory_gib for c in self.containers), Decimal(0))
        if not self.init_containers:
            return total
        return max([total, *(c.memory_gib for c in self.init_containers)])


class StopInstance(Request):
    type: Literal["StopInstance"] = "StopInstance"
    account: AccountName
    instance_id: Name


class DeleteInstance(Request):
    type: Literal["DeleteInstance"] = "DeleteInstance"
    account: AccountName
    instance_id: Name


# --- reports from the infrastructure ---------------------------------------------------


class InstanceReport(Report):
    """A node's report about one instance on it.

    `sequence` orders one instance's reports (the kubelet's Pod resourceVersion, or the
    agent's counter): a report whose sequence is not above the highest applied is stale, an
    accepted no-op. Absent: unordered (the instance's state alone decides). `started_at`
    (the Pod's status.startTime) lets a report that overtakes the starting report bill the
    instance from when it really began starting.
    """

    account: AccountName
    instance_id: Name
    node_id: Name
    sequence: Annotated[int, Field(ge=0, le=MAX_REPORT_SEQUENCE),
                        _limit("MAX_REPORT_SEQUENCE")] | None = None
    started_at: Instant | None = None

    @model_validator(mode="after")
    def _started_before(self) -> InstanceReport:
        if self.started_at is not None and self.started_at > self.occurred_at:
            raise ValueError("started_at must not be after occurred_at")
        return self


class ReportInstanceStarting(InstanceReport):
    type: Literal["ReportInstanceStarting"] = "ReportInstanceStarting"


class ReportInstanceRunning(InstanceReport):
    type: Literal["ReportInstanceRunning"] = "ReportInstanceRunning"


class ReportContainerExited(InstanceReport):
    type: Literal["ReportContainerExited"] = "ReportContainerExited"
    container: Name
    exit_code: Annotated[int, Field(ge=0, le=255)]


class ReportInstanceTerminated(InstanceReport):
    type: Literal["ReportInstanceTerminated"] = "ReportInstanceTerminated"
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

    name: Annotated[str, StringConstraints(max_length=MAX_LABEL_CHARS,
                                           pattern=r"^[0-9]+C[0-9]+G$")]
    millicores: Annotated[int, Field(gt=0, le=MAX_MILLICORES), _limit("MAX_MILLICORES")]
    memory_mib: Annotated[int, Field(gt=0, le=MAX_MEMORY_MIB), _limit("MAX_MEMORY_MIB")]
    enis: Annotated[int, Field(gt=0, le=MAX_NODE_ENIS), _limit("MAX_NODE_ENIS")] = 8
    pods: Annotated[int, Field(gt=0, le=MAX_NODE_PODS), _limit("MAX_NODE_PODS")] = 110
    price_per_hour: PricePerHour = Decimal(0)
    priority: Annotated[int, Field(ge=0, le=1000)] = 0


class RuntimeProfile(Strict):
    """What a runtime costs: sandbox start, its own image, memory beside the containers."""

    start_ms: Annotated[int, Field(ge=0, le=MAX_RUNTIME_START_MS),
                        _limit("MAX_RUNTIME_START_MS")]
    image_mb: Annotated[int, Field(ge=0, le=MAX_RUNTIME_IMAGE_MB),
                        _limit("MAX_RUNTIME_IMAGE_MB")]
    memory_overhead_mib: Annotated[int, Field(ge=0, le=MAX_MEMORY_MIB),
                                   _limit("MAX_MEMORY_MIB")]


class CatalogueSpec(Strict):
    vcpu: Vcpu
    memory_gib: Gib


class ConfigurePool(Request):
    type: Literal["ConfigurePool"] = "ConfigurePool"
    pool: Name
    kind: Literal["dedicated", "shared"] = "dedicated"
    node_models: list[NodeModel] = Field(min_length=1, max_length=MAX_NODE_MODELS,
                                         json_schema_extra={"x-limit": "MAX_NODE_MODELS"})
    min_nodes: Annotated[int, Field(ge=0, le=MAX_POOL_NODES), _limit("MAX_POOL_NODES")] = 0
    max_nodes: Annotated[int, Field(ge=0, le=MAX_POOL_NODES), _limit("MAX_POOL_NODES")] = 100
    labels: dict[Label, Label] = Field(default_factory=dict, max_length=MAX_POOL_LABELS,
                                       json_schema_extra={"x-limit": "MAX_POOL_LABELS"})
    spec_catalogue: list[CatalogueSpec] = Field(min_length=1, max_length=MAX_CATALOGUE,
                                                json_schema_extra={"x-limit": "MAX_CATALOGUE"})
    pending_timeout_seconds: Annotated[int, Field(ge=1, le=86_400 * 7)] = 900
    # How long an instance may stay scheduled (no starting report) and starting (no running
    # report) before it fails with start_timeout at that deadline.
    scheduled_timeout_seconds: Annotated[int, Field(ge=1, le=MAX_TIMEOUT_SECONDS),
                                         _limit("MAX_TIMEOUT_SECONDS")] = 300
    starting_timeout_seconds: Annotated[int, Field(ge=1, le=MAX_TIMEOUT_SECONDS),
                                        _limit("MAX_TIMEOUT_SECONDS")] = 600
    placement_policy: Literal["first_fit", "best_fit", "worst_fit", "dot_product"] = "best_fit"
    # Autoscaling, with the Kubernetes Cluster Autoscaler's defaults.
    expander: Literal["least-waste", "price", "priority"] = "least-waste"
    scale_down_utilisation_threshold: Annotated[float, Field(gt=0, le=1)] = 0.5
    scale_down_unneeded_seconds: Annotated[int, Field(ge=0, le=86_400)] = 600
    disruption_budget: Annotated[int, Field(ge=0, le=10_000)] = 1
    cpu_overhead_millicores: dict[RuntimeName, Annotated[
        int, Field(ge=0, le=MAX_MILLICORES), _limit("MAX_MILLICORES")]] = Field(
        default_factory=lambda: {"runc": 0, "kata": 100, "hyper": 100}
    )
    # Per-runtime profiles replacing the seed's (engine/policies/runtimes.py), e.g.
    # {"kata": {"start_ms": 900, "image_mb": 62, "memory_overhead_mib": 128}}; a runtime
    # left out keeps the seed's profile.
    runtime_profiles: dict[RuntimeName, RuntimeProfile] = Field(default_factory=dict)
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
    effective_from: Instant
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] = "USD"
    minor_unit: Annotated[int, Field(ge=0, le=4)] = 2
    rate_per_vcpu_second: Rate
    rate_per_gib_second: Rate
    min_seconds: Annotated[int, Field(ge=0, le=86_400)] = 0
    grace_seconds: Annotated[int, Field(ge=0, le=86_400 * 31)] = 3600
    # Per-runtime rates replacing both base rates, e.g. {"kata": {"rate_per_vcpu_second":
    # "0.0000137", "rate_per_gib_second": "0.0000015"}}.
    runtime_rates: dict[RuntimeName, dict[
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


def _limited_decimal(limit: str, **bounds: Any) -> Any:
    """A strict decimal whose bound is a named limit (one schema callable does both: pydantic
    drops a callable composed with a dict)."""
    def schema(schema: dict[str, Any]) -> None:
        _decimal_schema(schema)
        schema["x-limit"] = limit
    return Annotated[Decimal, Field(**bounds), BeforeValidator(_decimal),
                     Field(json_schema_extra=schema)]


class SetAccountQuota(Request):
    """An operator sets an account's limits in the cell. Each command states them all: a
    field left out goes back to its default (no vCPU quota: unlimited)."""

    type: Literal["SetAccountQuota"] = "SetAccountQuota"
    account: AccountName
    # Billed vCPU of the account's live instances, the new one included; None: unlimited.
    vcpu: _limited_decimal("MAX_ACCOUNT_VCPU", ge=0, le=MAX_ACCOUNT_VCPU, max_digits=10,
                           decimal_places=3) | None = None
    # The launch token bucket (Fargate's published RunTask rate: burst 100, 20 per second).
    launch_burst: Annotated[int, Field(ge=1, le=MAX_LAUNCH_BURST),
                            _limit("MAX_LAUNCH_BURST")] = 100
    launch_rate_per_second: _limited_decimal("MAX_LAUNCH_RATE", gt=0, le=MAX_LAUNCH_RATE,
                                             max_digits=10, decimal_places=3) = Decimal(20)


def _network_ids() -> Any:
    return Field(default_factory=list, max_length=MAX_ACCOUNT_NETWORK_IDS,
                 json_schema_extra={"x-limit": "MAX_ACCOUNT_NETWORK_IDS"})


class SetAccountNetworks(Request):
    """An operator states the VPCs, subnets and security groups an account owns in the cell:
    an id registered to some accounts may be named on a create only by them
    (`network_not_owned`); an id nobody registered stays free. Several accounts may share an
    id. Each command states them all: an id left out is no longer the account's (its running
    instances keep their ENIs)."""

    type: Literal["SetAccountNetworks"] = "SetAccountNetworks"
    account: AccountName
    vpcs: list[NetworkId] = _network_ids()
    subnets: list[NetworkId] = _network_ids()
    security_groups: list[NetworkId] = _network_ids()


class Tick(CommandBase):
    type: Literal["Tick"] = "Tick"
    now: Instant
    # An operator's explicit catch-up: lets one Tick jump further, or finalise more periods,
    # than the engine's limits allow an ordinary tick.
    catch_up: bool = False

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
    | SetAccountQuota
    | SetAccountNetworks
    | Tick,
    Field(discriminator="type"),
]

COMMAND_TYPES: dict[str, type[CommandBase]] = {
    cls.model_fields["type"].default: cls
    for cls in (
        CreateInstance, StopInstance, DeleteInstance, ReportInstanceStarting,
        ReportInstanceRunning, ReportContainerExited, ReportInstanceTerminated,
        ReportNodeReady, ReportNodeLost, ConfigurePool, CordonNode, UncordonNode,
        PublishPriceBook, SetAccountQuota, SetAccountNetworks, Tick,
    )
}

command_adapter: TypeAdapter[Command] = TypeAdapter(Command)

COMMAND_ROLES: dict[str, Role] = {
    **dict.fromkeys(["CreateInstance", "StopInstance", "DeleteInstance"], "tenant"),
    **dict.fromkeys(["ReportInstanceStarting", "ReportInstanceRunning", "ReportContainerExited",
                     "ReportInstanceTerminated", "ReportNodeReady", "ReportNodeLost"], "agent"),
    **dict.fromkeys(["ConfigurePool", "CordonNode", "UncordonNode", "PublishPriceBook",
                     "SetAccountQuota", "SetAccountNetworks", "Tick"],
                    "operator"),
}
ROLE_TOPICS: dict[Role, str] = {"tenant": "cis.commands", "agent": "cis.reports",
                                "operator": "cis.admin"}
