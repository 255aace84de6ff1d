"""Per-account admission in a cell: a vCPU quota and a launch token bucket.

* **vCPU quota** (`SetAccountQuota.vcpu`; none = unlimited): the billed vCPU of the account's
  live instances (every state before an end: waiting, scheduled, starting, running,
  restarting) plus the new instance's billed vCPU may not exceed it.
* **Launch rate**: a token bucket per account, `launch_burst` tokens (default 100) refilled
  at `launch_rate_per_second` (default 20), as Fargate publishes for RunTask. Each accepted
  create takes one token; a refused create takes none.

Both are derived from events only (no wall clock): the bucket advances to each accepted
create's `issued_at` and never goes back in time, so a create that claims an earlier time
sees no refill, and a tenant that claims a later one (within the cell's skew) only spends its
own future refill. Levels are integers (micro-tokens, microseconds), so replaying the log
after a restart gives the very same levels and decisions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from engine.domain.account import DEFAULT_LAUNCH_BURST, DEFAULT_LAUNCH_RATE, Account
from engine.domain.instance import TERMINAL, Instance

MICRO = 1_000_000  # micro-tokens per token; microseconds per second
AccountKey = tuple[str, str]  # (cell, account)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _us(at: datetime) -> int:
    # Exact: below 2**53 microseconds (year 2255) a timestamp times 10**6 rounds to the
    # integer; and 5x cheaper than timedelta arithmetic on the create path.
    return round(at.timestamp() * MICRO)


@dataclass
class Bucket:
    level: int  # micro-tokens
    at: int  # microseconds since the epoch: the time the level is for
    burst: int
    rate: Decimal  # tokens per second

    def level_at(self, at: int) -> int:
        if at <= self.at:
            return self.level
        # tokens/s x microseconds = micro-tokens; int() floors (both are positive).
        return min(self.burst * MICRO, self.level + int((at - self.at) * self.rate))

    def advance(self, at: int) -> None:
        self.level, self.at = self.level_at(at), max(self.at, at)

    def next_token_at(self, at: int) -> int:
        """When the bucket next holds a whole token, if nothing takes one before."""
        level = self.level_at(at)
        missing = MICRO - level
        if missing <= 0:
            return max(at, self.at)
        return max(at, self.at) + math.ceil(missing / self.rate)


class AccountUsage:
    """What each account uses in each cell, kept current from events (a World observer)."""

    def __init__(self) -> None:
        self.accounts: dict[AccountKey, Account] = {}
        self.vcpu: dict[AccountKey, Decimal] = {}  # billed vCPU of live instances
        self.live: dict[tuple[str, str, str], Decimal] = {}  # (cell, account, name) -> vCPU
        self.buckets: dict[AccountKey, Bucket] = {}

    def account(self, cell: str, account: str) -> Account | None:
        return self.accounts.get((cell, account))

    def bucket(self, cell: str, account: str) -> Bucket:
        """The account's bucket (a full one at the defaults if it never launched)."""
        found = self.buckets.get((cell, account))
        if found is not None:
            return found
        limits = self.accounts.get((cell, account))
        burst, rate = ((limits.launch_burst, limits.launch_rate_per_second) if limits
                       else (DEFAULT_LAUNCH_BURST, DEFAULT_LAUNCH_RATE))
        return Bucket(burst * MICRO, 0, burst, rate)

    def observe(self, event: Any, aggregate: Any) -> None:
        if isinstance(aggregate, Instance):
            self._observe_instance(event, aggregate)
        elif isinstance(aggregate, Account):
            key = (aggregate.cell, aggregate.account)
            self.accounts[key] = aggregate
            if isinstance(event, Account.LimitsSet):
                # Refill at the old rate up to the change, then the new limits hold.
                bucket = self.bucket(*key)
                bucket.advance(_us(event.timestamp))
                bucket.burst, bucket.rate = event.launch_burst, event.launch_rate_per_second
                bucket.level = min(bucket.level, bucket.burst * MICRO)
                self.buckets[key] = bucket

    def _observe_instance(self, event: Any, instance: Instance) -> None:
        key = (instance.cell, instance.account)
        ref = (instance.cell, instance.account, instance.name)
        if isinstance(event, Instance.Requested):
            self.live[ref] = instance.billed_vcpu
            self.vcpu[key] = self.vcpu.get(key, Decimal(0)) + instance.billed_vcpu
            bucket = self.bucket(*key)
            bucket.advance(_us(event.timestamp))
            # Never below empty: logs from before the bucket existed replay without debt.
            bucket.level = max(0, bucket.level - MICRO)
            self.buckets[key] = bucket
        elif instance.state in TERMINAL and ref in self.live:
            self.vcpu[key] -= self.live.pop(ref)


def _iso(us: int) -> str:
    return (EPOCH + timedelta(microseconds=us)).isoformat().replace("+00:00", "Z")


def admission_reasons(usage: AccountUsage, cell: str, account: str, asked_vcpu: Decimal,
                      at: datetime) -> list[dict[str, str]]:
    """Every reason the account may not launch an instance of `asked_vcpu` billed vCPU now
    (pure read: decisions are functions of the log and the command)."""
    reasons = []
    limits = usage.account(cell, account)
    used = usage.vcpu.get((cell, account), Decimal(0))
    if limits is not None and limits.vcpu_quota is not None \
            and used + asked_vcpu > limits.vcpu_quota:
        reasons.append({"field": "account", "code": "quota_exceeded", "problem": (
            f"vCPU quota exceeded: used {used}, asked {asked_vcpu}, limit "
            f"{limits.vcpu_quota} (billed vCPU of live instances in cell {cell!r})")})
    bucket = usage.bucket(cell, account)
    now = _us(at)
    level = bucket.level_at(now)
    if level < MICRO:
        reasons.append({"field": "account", "code": "rate_limited", "problem": (
            f"launch rate exceeded: tokens {Decimal(level) / MICRO:.6f} of burst "
            f"{bucket.burst} (refill {bucket.rate}/s), next token at "
            f"{_iso(bucket.next_token_at(now))}")})
    return reasons
