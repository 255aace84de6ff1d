"""An account's limits and networks in one cell, set by operators (`SetAccountQuota`,
`SetAccountNetworks`).

Only what operators set lives here; what the account uses (live vCPU, its launch token bucket) is
derived from the instance events by `engine/policies/quotas.AccountUsage`, so a restart
replays it exactly.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from uuid import UUID

from eventsourcing.domain import Aggregate

from engine.domain.base import Recorded
from engine.domain.ids import aggregate_id

# Fargate's published launch rate for RunTask: a burst of 100, refilled at 20 per second.
DEFAULT_LAUNCH_BURST = 100
DEFAULT_LAUNCH_RATE = Decimal(20)


class Account(Recorded):
    @staticmethod
    def create_id(cell: str, account: str) -> UUID:
        return aggregate_id("account", cell, account)

    class Opened(Aggregate.Created):
        cell: str
        account: str

    def __init__(self, cell: str, account: str) -> None:
        self.cell = cell
        self.account = account
        self.vcpu_quota: Decimal | None = None  # None: unlimited
        self.launch_burst = DEFAULT_LAUNCH_BURST
        self.launch_rate_per_second = DEFAULT_LAUNCH_RATE

    class LimitsSet(Aggregate.Event):
        vcpu_quota: Decimal | None
        launch_burst: int
        launch_rate_per_second: Decimal

        def apply(self, account: Account) -> None:
            account.vcpu_quota = self.vcpu_quota
            account.launch_burst = self.launch_burst
            account.launch_rate_per_second = self.launch_rate_per_second

    # The network ids the account owns in the cell (`SetAccountNetworks`), sorted: no other
    # account may name them (engine/policies/networks.py). Class defaults: snapshots from
    # before the field load as owning none.
    vpcs: tuple[str, ...] = ()
    subnets: tuple[str, ...] = ()
    security_groups: tuple[str, ...] = ()

    class NetworksSet(Aggregate.Event):
        vpcs: list[str]
        subnets: list[str]
        security_groups: list[str]

        def apply(self, account: Account) -> None:
            account.vpcs = tuple(self.vpcs)
            account.subnets = tuple(self.subnets)
            account.security_groups = tuple(self.security_groups)

    @property
    def networks(self) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
        return self.vpcs, self.subnets, self.security_groups

    def set_networks(self, vpcs: list[str], subnets: list[str], security_groups: list[str],
                     at: datetime) -> None:
        self.trigger_event(self.NetworksSet, vpcs=vpcs, subnets=subnets,
                           security_groups=security_groups, timestamp=at)

    @property
    def limits(self) -> tuple[Decimal | None, int, Decimal]:
        return self.vcpu_quota, self.launch_burst, self.launch_rate_per_second

    def set_limits(self, vcpu_quota: Decimal | None, launch_burst: int,
                   launch_rate_per_second: Decimal, at: datetime) -> None:
        self.trigger_event(self.LimitsSet, vcpu_quota=vcpu_quota, launch_burst=launch_burst,
                           launch_rate_per_second=launch_rate_per_second, timestamp=at)
