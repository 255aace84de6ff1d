"""Query responses: what the HTTP query API (and `cis … --json`) answers.

Amounts and rates are decimals, written as strings in JSON so no digit is lost; times are
ISO 8601 UTC strings. This module imports nothing of ours.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.commands import SCHEMA_VERSION


class View(BaseModel):
    model_config = ConfigDict(frozen=True)


class Projected(View):
    """How far the read models have followed the log: answers are as of this event."""

    position: int = Field(description="notification id of the last event applied")
    at: str | None = Field(default=None, description="that event's time (the default as_of "
                           "is the newest clock of the account's cells up to this position)")


class Health(View):
    status: Literal["ok"] = "ok"
    projected: Projected


class InstanceView(View):
    id: str
    cell: str
    instance_id: str
    account: str
    pool: str
    state: str
    node_id: str | None
    runtime: str
    restart_policy: str
    requested_vcpu: Decimal
    requested_memory_gib: Decimal
    billed_vcpu: Decimal
    billed_memory_gib: Decimal
    restarts: int
    created_at: str
    state_since: str
    ended_at: str | None
    reason: str | None


NEXT = Field(default=None, description="cursor of the next page (pass as `cursor`); "
             "absent or null on the last page")


class InstancesReport(View):
    schema_version: Literal[1] = SCHEMA_VERSION
    account: str
    projected: Projected
    instances: list[InstanceView]
    next: str | None = NEXT


class Allocation(View):
    used: int = Field(description="summed over the instances on the node")
    capacity: int | None = Field(description="the node model's (null: a dimension only "
                                 "instances state)")


class NodeInstance(View):
    account: str
    instance_id: str
    state: str
    placed_at: str | None


class NodeView(View):
    cell: str
    node_id: str
    pool: str
    model: str
    asg: str = Field(description="the node group it was launched in: `{cell}-{pool}-{model}`")
    state: str = Field(description="requested, ready, cordoned, terminated or lost")
    held_by: str | None = Field(description="who holds it cordoned (operator, start); null if "
                                "not held (the autoscaler's own cordons are no hold)")
    reason: str | None = Field(description="why it reached its state")
    labels: dict[str, str]
    allocation: dict[str, Allocation] = Field(
        description="per dimension (millicores, memory_mib, enis, pods): used of capacity")
    instances: list[NodeInstance]
    requested_at: str
    ready_at: str | None
    state_since: str
    ended_at: str | None
    idle_since: str | None = Field(description="since when it has held no instance (ready, "
                                   "empty); null if busy, not yet ready, or gone")
    idle_seconds: int | None = Field(description="idle_since up to the projected position")


class NodesReport(View):
    schema_version: Literal[1] = SCHEMA_VERSION
    projected: Projected
    nodes: list[NodeView]
    next: str | None = NEXT


class UsageLine(View):
    cell: str
    instance_id: str
    state: str
    requested: str
    billed_spec: str
    billed_seconds: int
    amount: Decimal
    currency: str | None


class UsageReport(View):
    schema_version: Literal[1] = SCHEMA_VERSION
    account: str
    as_of: str | None
    projected: Projected
    instances: list[UsageLine]
    totals: dict[str, Decimal] = Field(description="over every instance, not just this page")
    next: str | None = NEXT


class InvoiceLine(View):
    line: int
    instance_id: str
    price_version: int
    runtime: str
    requested: str
    billed_spec: str
    rate_vcpu_s: Decimal
    rate_gib_s: Decimal
    price_per_second: Decimal
    seconds: int
    topup_seconds: int
    amount: Decimal


class Adjustment(View):
    period: str
    instance_id: str
    price_version: int
    billed_before: Decimal
    recomputed: Decimal
    amount: Decimal
    corrects: list[str]


class InvoiceView(View):
    cell: str
    account: str
    period: str
    status: Literal["open", "finalised"]
    finalised_at: str | None = None
    hash_verified: bool | None = None
    chain_head: str | None = Field(
        default=None, description="finalised: the cell's hash-chain head the invoice pins "
        "(hex): the stored link of its finalisation event, covering it and everything before "
        "it in its cell (invoices finalised before that rule: the head before their batch); "
        "`cis audit verify --heads` can check the log against it; none for one finalised "
        "before the chain existed")
    as_of: str | None = None
    currency: str
    total: Decimal
    content_hash: str
    lines: list[InvoiceLine]
    adjustments: list[Adjustment]


class InvoicesReport(View):
    schema_version: Literal[1] = SCHEMA_VERSION
    account: str
    # Absent for an account with nothing yet: no cell of its own to take a clock from.
    as_of: str | None = None
    projected: Projected
    invoices: list[InvoiceView]
    next: str | None = NEXT


class BilledInterval(View):
    opened_by: str | None = Field(description="the event that opened it: instance/NAME#VERSION")
    opened_at: str
    closed_by: str | None = Field(description="the event that closed it (null: still open "
                                  "when the line was rated)")
    closed_at: str | None
    seconds_in_line: int = Field(description="the line's billed seconds it holds; each "
                                 "second is given to one interval, so these add up to the line")
    topup_seconds: int = Field(default=0, description="the minimum-seconds top-up of the "
                               "billed run this interval ends")


class Provenance(View):
    billed_on: str = Field(description="which intervals: as at a period's close, or as known")
    intervals: list[BilledInterval]
    seconds: int
    topup_seconds: int
    price_per_second: Decimal | None = None
    amount: Decimal | None = Field(default=None, description="the side's amount, rated: "
                                   "price_per_second x (seconds + topup_seconds), rounded")


class LineExplanation(View):
    cell: str
    period: str = Field(description="the invoice's period")
    status: Literal["open", "finalised"]
    kind: Literal["line", "adjustment"]
    invoice_total: Decimal
    line: InvoiceLine | None = None
    billed_on: str | None = None
    intervals: list[BilledInterval] = Field(default_factory=list)
    seconds: int | None = None
    topup_seconds: int | None = None
    adjustments: list[Adjustment] = Field(default_factory=list, description="adjustments "
                                          "correcting the line's instance")
    adjustment: Adjustment | None = None
    billed_before: Provenance | None = None
    recomputed: Provenance | None = None


class ExplainReport(View):
    schema_version: Literal[1] = SCHEMA_VERSION
    account: str
    projected: Projected
    lines: list[LineExplanation]


class ProblemItem(View):
    loc: list[str | int] = Field(description="where: e.g. [\"query\", \"as_of\"]")
    msg: str
    type: str | None = None


class Problem(View):
    """An error answer (RFC 9457, `application/problem+json`): every reason at once."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    errors: list[ProblemItem] | None = None
