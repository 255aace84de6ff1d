"""Per-account admission in a cell: a vCPU quota and a launch token bucket.

* **vCPU quota** (`SetAccountQuota.vcpu`; none = unlimited): the billed vCPU of the account's
  live instances (every state before an end: waiting, scheduled, starting, running,
  restarting) plus the new instance's billed vCPU may not exceed it.
* **Launch rate**: a token bucket per account, `launch_burst` tokens (default 100) refilled
  at `launch_rate_per_second` (default 20), as Fargate publishes for RunTask. Each accepted
  create takes one token; a refused create takes none.

Both are derived from events only (no wall clock). The bucket refills only up to time the
cell has earned: min(the create's `issued_at`, the cell's clock at decision). A tenant may
date a create ahead of the clock (by the tenant skew), but that buys no refill: a create
dated ahead is charged at the clock until the clock reaches its own time, and only then
counts at that time (its tokens are never refilled twice). So at any one clock at most
`launch_burst` creates are admitted; without a ticker the bucket refills only as the clock
moves. Creates are taken in time order whenever they are settled (each new one is dated at
or after the clock, and a limits change at or after it), so replaying the log after a
restart, or deciding in other batches, gives the very same levels and decisions. Levels are
integers (micro-tokens, microseconds).
"""

from __future__ import annotations

import math
from bisect import bisect_right, insort
from dataclasses import dataclass, field
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
    # Creates the clock had not reached when last settled (µs, in order): each costs a
    # token at any clock before its own time.
    ahead: list[int] = field(default_factory=list)

    def level_at(self, at: int) -> int:
        if at <= self.at:
            return self.level
        # tokens/s x microseconds = micro-tokens; int() floors (both are positive).
        return min(self.burst * MICRO, self.level + int((at - self.at) * self.rate))

    def advance(self, at: int) -> None:
        self.level, self.at = self.level_at(at), max(self.at, at)

    def spend(self, at: int) -> None:
        """One token taken by a create dated `at` (settled once the clock reaches it)."""
        insort(self.ahead, at)

    def settle(self, clock: int) -> None:
        """Take the creates dated up to `clock`, in time order: each refills up to its own
        time, then takes its token. Settling sooner or later gives the same levels."""
        reached = bisect_right(self.ahead, clock)
        for at in self.ahead[:reached]:
            self.advance(at)
            # Never below empty: logs from before the bucket existed replay without debt.
            self.level = max(0, self.level - MICRO)
        del self.ahead[:reached]

    def available(self, clock: int) -> int:
        """Micro-tokens at `clock`: refilled up to it, less a token per create dated after
        it (settles what the clock has reached)."""
        self.settle(clock)
        return max(0, self.level_at(clock) - len(self.ahead) * MICRO)

    def next_token_at(self, clock: int) -> int:
        """The earliest clock at which a whole token is free, if nothing takes one before:
        between two creates dated ahead, the bucket refills towards its burst less a token
        for each create still ahead."""
        self.settle(clock)
        state = Bucket(self.level, self.at, self.burst, self.rate)  # a copy to settle on
        start = clock
        for k, due in enumerate([*self.ahead, None]):
            wanted = (len(self.ahead) - k + 1) * MICRO  # the creates still ahead, plus one
            if wanted <= self.burst * MICRO:
                at = max(start, state.at)
                if state.level_at(at) < wanted:
                    at = state.at + math.ceil((wanted - state.level) / self.rate)
                if due is None or at < due:
                    return max(at, start)
            if due is not None:  # the clock reaches this create: it takes its token
                state.advance(due)
                state.level, start = max(0, state.level - MICRO), due
        raise AssertionError("unreachable: with nothing ahead a token always comes")


class AccountUsage:
    """What each account uses in each cell, kept current from events (a World observer)."""

    def __init__(self) -> None:
        self.accounts: dict[AccountKey, Account] = {}
        self.vcpu: dict[AccountKey, Decimal] = {}  # billed vCPU of live instances
        self.live: dict[tuple[str, str, str], Decimal] = {}  # (cell, account, name) -> vCPU
        self.buckets: dict[AccountKey, Bucket] = {}
        # (cell, kind, id) -> the accounts an operator registered that network id to, and each
        # account's registered (kind, id)s: who may name an id (engine/policies/networks.py).
        self.network_owners: dict[tuple[str, str, str], frozenset[str]] = {}
        self.networks_of: dict[AccountKey, frozenset[tuple[str, str]]] = {}

    def owners_of(self, cell: str, kind: str, ident: str) -> frozenset[str]:
        """The accounts registered to network id `ident` of `kind` in `cell` (none: unclaimed)."""
        return self.network_owners.get((cell, kind, ident.lower()), frozenset())

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
                # Refill at the old rate up to the change, then the new limits hold (the
                # change is dated at or after the cell's clock: see set_account_quota).
                bucket = self.bucket(*key)
                bucket.settle(_us(event.timestamp))
                bucket.advance(_us(event.timestamp))
                bucket.burst, bucket.rate = event.launch_burst, event.launch_rate_per_second
                bucket.level = min(bucket.level, bucket.burst * MICRO)
                self.buckets[key] = bucket
            elif isinstance(event, Account.NetworksSet):
                self._register_networks(key, aggregate)

    def _register_networks(self, key: AccountKey, account: Account) -> None:
        cell, name = key
        vpcs, subnets, groups = account.networks
        # Ids are ASCII and compared case-folded: clouds and CNIs may not tell `SUBNET-0ABC`
        # from `subnet-0abc`, so neither may we.
        now = frozenset([*(("vpc", i.lower()) for i in vpcs),
                         *(("subnet", i.lower()) for i in subnets),
                         *(("security_group", i.lower()) for i in groups)])
        before = self.networks_of.get(key, frozenset())
        owners = self.network_owners
        for kind, ident in before - now:
            left = owners[(cell, kind, ident)] - {name}
            if left:
                owners[(cell, kind, ident)] = left
            else:
                del owners[(cell, kind, ident)]
        for kind, ident in now - before:
            owners[(cell, kind, ident)] = owners.get((cell, kind, ident), frozenset()) | {name}
        self.networks_of[key] = now

    def _observe_instance(self, event: Any, instance: Instance) -> None:
        key = (instance.cell, instance.account)
        ref = (instance.cell, instance.account, instance.name)
        if isinstance(event, Instance.Requested):
            self.live[ref] = instance.billed_vcpu
            self.vcpu[key] = self.vcpu.get(key, Decimal(0)) + instance.billed_vcpu
            bucket = self.bucket(*key)
            bucket.spend(_us(event.timestamp))
            self.buckets[key] = bucket
        elif instance.state in TERMINAL and ref in self.live:
            self.vcpu[key] -= self.live.pop(ref)


def _iso(us: int) -> str:
    return (EPOCH + timedelta(microseconds=us)).isoformat().replace("+00:00", "Z")


def admission_reasons(usage: AccountUsage, cell: str, account: str, asked_vcpu: Decimal,
                      at: datetime, clock: datetime | None) -> list[dict[str, str]]:
    """Every reason the account may not launch an instance of `asked_vcpu` billed vCPU,
    dated `at`, when the cell's clock is `clock` (None: a new cell). A read: it only settles
    what the clock has reached, which leaves every later answer as it was, so decisions are
    functions of the log and the command."""
    reasons = []
    limits = usage.account(cell, account)
    used = usage.vcpu.get((cell, account), Decimal(0))
    if limits is not None and limits.vcpu_quota is not None \
            and used + asked_vcpu > limits.vcpu_quota:
        reasons.append({"field": "account", "code": "quota_exceeded", "problem": (
            f"vCPU quota exceeded: used {used}, asked {asked_vcpu}, limit "
            f"{limits.vcpu_quota} (billed vCPU of live instances in cell {cell!r})")})
    bucket = usage.bucket(cell, account)
    now = _us(at if clock is None else min(at, clock))  # time the cell has earned
    level = bucket.available(now)
    if level < MICRO:
        reasons.append({"field": "account", "code": "rate_limited", "problem": (
            f"launch rate exceeded: tokens {Decimal(level) / MICRO:.6f} of burst "
            f"{bucket.burst} (refill {bucket.rate}/s), next token at "
            f"{_iso(bucket.next_token_at(now))}")})
    return reasons
