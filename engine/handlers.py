"""Command handlers: validate against the state, then record the decided events.

Each handler first collects every reason to refuse (raising `Rejected` before touching any
aggregate), then acts. Stale or duplicate reports are accepted no-ops with a note.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from engine import billing, scaling
from engine.context import Context, Rejected, reason
from engine.domain.account import Account
from engine.domain.instance import ENDED, ON_NODE, PENDING, TERMINAL, Instance
from engine.domain.node import AT_START, BY_OPERATOR, GONE, Node
from engine.domain.pool import Pool
from engine.domain.price_book import PriceBook
from engine.policies import quotas, restart, runtimes, timeouts
from engine.policies.demand import demand_of
from engine.policies.spec_catalogue import Spec, SpecChoice, SpecRejected
from engine.world import World
from schemas import commands as c

Handler = Callable[[Context, Any], str | None]
HANDLERS: dict[type, Handler] = {}
# A create that cannot be placed plans scale-out for the newest waiting instances only; the
# next Tick plans for all of them (like the Cluster Autoscaler's periodic loop).
SCALE_OUT_RECENT = 256


def handles(command_type: type) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        HANDLERS[command_type] = fn
        return fn
    return register


# --- tenant requests -------------------------------------------------------------------


def version_in_force(book: PriceBook | None, at: datetime) -> dict[str, Any] | None:
    """The price book's version in force at `at` (versions take effect in order)."""
    if book is None:
        return None
    when = at.timestamp()  # once, not once per version looked at
    for version in reversed(book.versions):
        if version["effective_from"] <= when:
            return version
    return None


def _rates(version: dict[str, Any], runtime: str) -> tuple[Decimal, Decimal]:
    rates = version.get("runtime_rates", {}).get(runtime) or version
    return Decimal(rates["rate_per_vcpu_second"]), Decimal(rates["rate_per_gib_second"])


def size(pool: Pool, cmd: c.CreateInstance, version: dict[str, Any]
         ) -> tuple[str, SpecChoice | SpecRejected, dict[str, int] | None]:
    """What a create takes: its runtime (the pool's default if it names none); its billed
    spec, the round-up by the cell's own prices (the cheapest catalogue spec covering the
    request at the version in force, the runtime's rates if the version has some; ties go to
    the smaller vCPU, then the smaller memory); and its demand on a node. The handler decides
    with it and batch placement plans with it, so the two never disagree."""
    runtime = cmd.runtime or runtimes.DEFAULT_BY_KIND[pool.config["kind"]]
    choice = pool.billed_spec(cmd.vcpu, cmd.memory_gib, _rates(version, runtime), runtime)
    if isinstance(choice, SpecRejected):
        return runtime, choice, None
    return runtime, choice, _demand(pool, choice.billed, runtime)


# (cell, pool, runtime, billed spec) -> (the pool's config it was worked out for, demand):
# tenants ask for few shapes, and demand_of re-reads the runtime profiles every time.
_DEMANDS: dict[tuple[str, str, str, Spec], tuple[dict[str, Any], dict[str, int]]] = {}
DEMANDS_AT_MOST = 4096


def _demand(pool: Pool, billed: Spec, runtime: str) -> dict[str, int]:
    key = (pool.cell, pool.pool, runtime, billed)
    known = _DEMANDS.get(key)
    if known is None or known[0] is not pool.config:  # a reconfigured pool: worked out again
        if len(_DEMANDS) >= DEMANDS_AT_MOST:
            _DEMANDS.clear()  # a simple bound
        known = _DEMANDS[key] = (pool.config, demand_of(billed.vcpu, billed.memory_gib,
                                                        runtime, pool.config))
    return dict(known[1])  # each instance's own: events and aggregates never share it


def _billed_note(cmd: c.CreateInstance, billed: Spec, version: dict[str, Any],
                 asked: tuple[Decimal, Decimal]) -> str | None:
    vcpu, memory_gib = asked
    if (billed.vcpu, billed.memory_gib) == (vcpu, memory_gib):
        return None
    return (f"billed as {billed.vcpu} vCPU / {billed.memory_gib} GiB (asked "
            f"{vcpu} vCPU / {memory_gib} GiB; cheapest covering spec at price "
            f"version {version['number']})")


_KEPT_PARTS = {"init_containers", "containers", "network", "retry_budget"}


@handles(c.CreateInstance)
def create_instance(ctx: Context, cmd: c.CreateInstance) -> str | None:
    world = ctx.world
    pool = world.pool(cmd.cell, cmd.pool)
    reasons = []
    if pool is None:
        reasons.append(reason("pool", f"no pool {cmd.pool!r} in cell {cmd.cell!r}"))
    if world.instance(cmd.cell, cmd.account, cmd.instance_id) is not None:
        reasons.append(reason("instance_id", f"instance {cmd.instance_id!r} already exists"))
    version = version_in_force(world.price_book(cmd.cell), cmd.issued_at)
    if version is None:
        reasons.append(reason("cell", f"no price book in force in cell {cmd.cell!r}"))
    runtime = cmd.runtime or "runc"
    if pool is not None:
        runtime = cmd.runtime or runtimes.DEFAULT_BY_KIND[pool.config["kind"]]
        if problem := runtimes.isolation_problem(pool.config["kind"], runtime):
            reasons.append(reason("runtime", problem, code="runtime_not_isolated"))
    billed: Spec | None = None
    demand: dict[str, int] = {}
    if pool is not None and version is not None:
        runtime, choice, sized = size(pool, cmd, version)
        if isinstance(choice, SpecRejected):
            reasons += [reason("containers", f"{r.message} (spec outside the catalogue)")
                        for r in choice.reasons]
        else:
            billed, demand = choice.billed, sized or {}
    if pool is not None and billed is not None:
        if pool.smallest_model(demand) is None:
            reasons.append(reason("containers", f"no node model of pool {cmd.pool!r} holds "
                                                f"{demand} (spec plus runtime overhead)"))
    reasons += _account_admission(world, cmd, billed)
    if reasons:
        raise Rejected(reasons)
    assert pool is not None and billed is not None and version is not None
    asked = (cmd.vcpu, cmd.memory_gib)  # sums over the containers: once each
    # One serialisation for the four parts the event keeps (each part's own dump is the same).
    parts = cmd.model_dump(mode="json", include=_KEPT_PARTS)
    instance = Instance.create(
        cmd.issued_at, cell=cmd.cell, name=cmd.instance_id, account=cmd.account, pool=cmd.pool,
        # Init containers first, marked: they run to completion before the others start.
        containers=[*({**ct, "init": True} for ct in parts["init_containers"]),
                    *parts["containers"]],
        restart_policy=cmd.restart_policy, runtime=runtime,
        network=parts["network"], node_selector=dict(cmd.node_selector),
        requested_vcpu=asked[0], requested_memory_gib=asked[1],
        billed_vcpu=billed.vcpu, billed_memory_gib=billed.memory_gib, demand=demand,
        retry_budget=parts["retry_budget"],
    )
    ctx.touch(instance, f"instance/{instance.name}")
    note = _billed_note(cmd, billed, version, asked)
    if problem := scaling.selector_problem(pool, demand, instance.node_selector):
        # No node group can ever hold it: say so now, and ask the ASG for nothing.
        instance.mark_unschedulable([reason("node_selector", problem,
                                            code="unsatisfiable_selector")], cmd.issued_at)
        ctx.touch(instance, f"instance/{instance.name}")
        return "; ".join(filter(None, [f"unschedulable: {problem}", note]))
    not_placed = scaling.try_place(ctx, pool, instance, cmd.issued_at)
    if not_placed:
        instance.mark_unschedulable(not_placed, cmd.issued_at)
        ctx.touch(instance, f"instance/{instance.name}")
        scaling.scale_out(ctx, pool, cmd.issued_at, recent=SCALE_OUT_RECENT)
        return "; ".join(filter(None, ["unschedulable: waits for capacity", note]))
    return note


def _account_admission(world: World, cmd: c.CreateInstance, billed: Spec | None
                       ) -> list[dict[str, str]]:
    """The account's vCPU quota and launch rate (engine/policies/quotas.py)."""
    return quotas.admission_reasons(world.accounts, cmd.cell, cmd.account,
                                    billed.vcpu if billed is not None else cmd.vcpu,
                                    cmd.issued_at)


def _tenant_instance(world: World, cmd: c.StopInstance | c.DeleteInstance) -> Instance:
    instance = world.instance(cmd.cell, cmd.account, cmd.instance_id)
    if instance is None:
        raise Rejected([reason("instance_id", f"no instance {cmd.instance_id!r} for account "
                                              f"{cmd.account!r} in cell {cmd.cell!r}")])
    return instance


@handles(c.StopInstance)
def stop_instance(ctx: Context, cmd: c.StopInstance) -> str | None:
    instance = _tenant_instance(ctx.world, cmd)
    if instance.state in TERMINAL:
        raise Rejected([reason("instance_id", f"instance is already {instance.state}")])
    _end(ctx, instance, Instance.Stopped, "stopped by tenant", cmd.issued_at)
    return None


@handles(c.DeleteInstance)
def delete_instance(ctx: Context, cmd: c.DeleteInstance) -> str | None:
    instance = _tenant_instance(ctx.world, cmd)
    if instance.state == "deleted":
        raise Rejected([reason("instance_id", "instance is already deleted")])
    if instance.state not in ENDED:
        _end(ctx, instance, Instance.Stopped, "deleted by tenant", cmd.issued_at)
    instance.delete(max(cmd.issued_at, instance.state_since))
    ctx.touch(instance, f"instance/{instance.name}")
    return None


def _end(ctx: Context, instance: Instance, event_class: type[Instance.Ended], why: str,
         at: datetime) -> None:
    had_node = instance.state in ON_NODE
    instance.end(event_class, why, max(at, instance.state_since))
    ctx.touch(instance, f"instance/{instance.name}")
    if had_node:
        _place_waiting_if_freed(ctx, instance, at)


# --- reports from the infrastructure ---------------------------------------------------


def _reported_instance(world: World, cmd: Any) -> Instance:
    """The instance a node's report speaks of; only the node it is on may report on it."""
    instance = world.instance(cmd.cell, cmd.account, cmd.instance_id)
    if instance is None:
        raise Rejected([reason("instance_id", f"no instance {cmd.instance_id!r} for account "
                                              f"{cmd.account!r} in cell {cmd.cell!r}")])
    if instance.state in PENDING:
        raise Rejected([reason("instance_id", f"instance is {instance.state}: it has no node "
                                              "to report from")])
    if instance.node_id != cmd.node_id:
        # Never says which node it is on: the reporter has no business knowing.
        raise Rejected([reason("node_id", f"instance {cmd.instance_id!r} is not on node "
                                          f"{cmd.node_id!r}", code="wrong_node")])
    return instance


def _stale(instance: Instance) -> str:
    return f"stale report: instance is {instance.state}"


def _out_of_order(instance: Instance, cmd: c.InstanceReport) -> str | None:
    """A report whose sequence is not above the highest applied is stale (issue 14)."""
    if cmd.sequence is None or instance.sequence is None or cmd.sequence > instance.sequence:
        return None
    return (f"stale report: sequence {cmd.sequence} is not above {instance.sequence}, "
            "already applied")


def _no_change(ctx: Context, instance: Instance, cmd: c.InstanceReport,
               note: str | None = None) -> str:
    """A report the instance's state makes a no-op. Its sequence still counts: the node has
    seen this far, so anything it numbered lower is older news (a run reported while
    already running makes the exit before it stale). An ended instance changes no more."""
    if instance.state not in TERMINAL and cmd.sequence is not None and (
            instance.sequence is None or cmd.sequence > instance.sequence):
        instance.sequenced(cmd.sequence, max(cmd.occurred_at, instance.state_since))
        ctx.touch(instance, f"instance/{instance.name}")
    return note or _stale(instance)


def _applied(ctx: Context, instance: Instance, cmd: c.InstanceReport, at: datetime) -> None:
    """Record the report's sequence (if any) once it changed the instance."""
    if cmd.sequence is not None:
        instance.sequenced(cmd.sequence, at)
    ctx.touch(instance, f"instance/{instance.name}")


def _start_if_scheduled(instance: Instance, cmd: c.InstanceReport, at: datetime) -> None:
    """A report that overtook (or outlived) the starting report implies it: starting since
    the Pod's startTime if the report says, else since this report."""
    if instance.state == "scheduled":
        instance.start(max(cmd.started_at or at, instance.state_since))


@handles(c.ReportInstanceStarting)
def instance_starting(ctx: Context, cmd: c.ReportInstanceStarting) -> str | None:
    instance = _reported_instance(ctx.world, cmd)
    if stale := _out_of_order(instance, cmd):
        return stale
    if instance.state != "scheduled":
        return _no_change(ctx, instance, cmd)
    at = max(cmd.occurred_at, instance.state_since)
    instance.start(at)
    _applied(ctx, instance, cmd, at)
    return None


@handles(c.ReportInstanceRunning)
def instance_running(ctx: Context, cmd: c.ReportInstanceRunning) -> str | None:
    instance = _reported_instance(ctx.world, cmd)
    if stale := _out_of_order(instance, cmd):
        return stale
    if instance.state not in ("scheduled", "starting", "restarting"):
        return _no_change(ctx, instance, cmd)
    at = max(cmd.occurred_at, instance.state_since)
    if instance.state == "restarting" and instance.backoff_until is not None \
            and at < instance.backoff_until:
        # CrashLoopBackOff is enforced: no run begins before the back-off ends. A run
        # reported earlier is held: the instance stays restarting (billed alike) and runs
        # from the back-off's end once a Tick or a later report reaches it; an exit before
        # then is a crash during the back-off. Never dated ahead of the cell's time, so a
        # storm of early reports cannot push its timeline (and its bill) into the future.
        if not instance.run_held:
            instance.hold_run(at)
        _applied(ctx, instance, cmd, at)
        return (f"held: back-off until {instance.backoff_until.isoformat()} after restart "
                f"{instance.restarts}; runs from then")
    if not _release_held_run(instance, at):  # a held run began at the back-off's end
        _start_if_scheduled(instance, cmd, at)
        instance.run(at)
    _applied(ctx, instance, cmd, at)
    return None


def _release_held_run(instance: Instance, now: datetime) -> bool:
    """A held run begins at the back-off's end once `now` has reached it."""
    until = instance.backoff_until
    if instance.run_held and instance.state == "restarting" and until is not None \
            and until <= now:
        instance.run(until)
        return True
    return False


def _restart_or_fail(instance: Instance, cmd: c.ReportContainerExited, at: datetime) -> None:
    budget = instance.retry_budget
    used = instance.restarts_within(budget["window_seconds"], at)
    if restart.budget_exhausted(used, budget):
        instance.end(Instance.Failed, f"retry_budget_exhausted: {used} restarts in "
                                      f"{budget['window_seconds']} s (budget "
                                      f"{budget['restarts']}); container {cmd.container} "
                                      f"exited {cmd.exit_code}", at)
        return
    ran = (at - instance.state_since).total_seconds() if instance.state == "running" else None
    backoff, streak = restart.next_backoff(instance.backoff_streak, ran)
    instance.restart(cmd.container, cmd.exit_code, backoff, at, streak=streak)


@handles(c.ReportContainerExited)
def container_exited(ctx: Context, cmd: c.ReportContainerExited) -> str | None:
    instance = _reported_instance(ctx.world, cmd)
    if cmd.container not in instance.container_names:
        raise Rejected([reason("container", f"instance has no container {cmd.container!r}")])
    if stale := _out_of_order(instance, cmd):
        return stale
    if instance.state not in ON_NODE:
        return _no_change(ctx, instance, cmd)
    if cmd.container in instance.completed:
        return _no_change(ctx, instance, cmd,
                          f"stale report: container {cmd.container} already completed")
    at = max(cmd.occurred_at, instance.state_since)
    _start_if_scheduled(instance, cmd, at)
    _release_held_run(instance, at)
    decision = restart.decide_exit(instance.restart_policy, cmd.exit_code, cmd.container,
                                   instance.container_names, instance.completed,
                                   instance.init_container_names)
    if decision == "restart":
        _restart_or_fail(instance, cmd, at)
    else:
        instance.complete_container(cmd.container, cmd.exit_code, at)
        if decision == "succeed":
            instance.end(Instance.Succeeded, "all containers completed", at)
        elif decision == "fail":
            instance.end(Instance.Failed, f"container {cmd.container} exited {cmd.exit_code}", at)
    _applied(ctx, instance, cmd, at)
    _place_waiting_if_freed(ctx, instance, at)
    return None


@handles(c.ReportInstanceTerminated)
def instance_terminated(ctx: Context, cmd: c.ReportInstanceTerminated) -> str | None:
    instance = _reported_instance(ctx.world, cmd)
    if stale := _out_of_order(instance, cmd):
        return stale
    if instance.state not in ON_NODE:
        return _no_change(ctx, instance, cmd)
    at = max(cmd.occurred_at, instance.state_since)
    if cmd.started_at is not None:  # without it, a scheduled instance never began: unbilled
        _start_if_scheduled(instance, cmd, at)
    if cmd.sequence is not None:
        instance.sequenced(cmd.sequence, at)
    _end(ctx, instance, Instance.Failed, cmd.reason, at)
    return None


def _place_waiting_if_freed(ctx: Context, instance: Instance, at: datetime) -> None:
    if instance.state not in ON_NODE:
        pool = ctx.world.pool(instance.cell, instance.pool)
        assert pool is not None
        scaling.place_waiting(ctx, pool, at)


def _reported_node(world: World, cmd: c.ReportNodeReady | c.ReportNodeLost) -> Node:
    node = world.node(cmd.cell, cmd.node_id)
    if node is None:
        raise Rejected([reason("node_id", f"unknown node {cmd.node_id!r} in cell {cmd.cell!r}")])
    return node


@handles(c.ReportNodeReady)
def node_ready(ctx: Context, cmd: c.ReportNodeReady) -> str | None:
    node = _reported_node(ctx.world, cmd)
    if node.state in GONE:
        raise Rejected([reason("node_id", f"node is {node.state}")])
    if node.state != "requested":
        return f"stale report: node is {node.state}"
    pool = ctx.world.pool(node.cell, node.pool)
    assert pool is not None
    node.mark_ready(cmd.occurred_at)
    if pool.config.get("start_cordoned", False):  # absent from pools configured before it
        node.cordon("pool starts nodes cordoned: waits for UncordonNode", cmd.occurred_at,
                    by=AT_START)
    ctx.touch(node, f"node/{node.node_id}")
    if node.state == "cordoned":
        return "cordoned at start: waits for UncordonNode"
    scaling.place_waiting(ctx, pool, cmd.occurred_at)
    return None


@handles(c.ReportNodeLost)
def node_lost(ctx: Context, cmd: c.ReportNodeLost) -> str | None:
    node = _reported_node(ctx.world, cmd)
    if node.state in GONE:
        return f"stale report: node is {node.state}"
    victims = ctx.world.instances_on(node.cell, node.node_id)
    # Lost first, so the room its instances free is not offered to anyone.
    node.mark_lost(cmd.reason, cmd.occurred_at)
    ctx.touch(node, f"node/{node.node_id}")
    for instance in victims:
        _end(ctx, instance, Instance.Failed, f"node lost: {cmd.reason}", cmd.occurred_at)
    return None


# --- operators and the ticker ----------------------------------------------------------


@handles(c.ConfigurePool)
def configure_pool(ctx: Context, cmd: c.ConfigurePool) -> str | None:
    config = cmd.model_dump(mode="json", exclude={
        "schema_version", "type", "command_id", "cell", "issued_at", "pool"})
    pool = ctx.world.pool(cmd.cell, cmd.pool)
    if pool is None:
        pool = Pool.create(cmd.issued_at, cell=cmd.cell, pool=cmd.pool, config=config)
    elif pool.config == config:
        return "unchanged"
    elif pool.config["kind"] != config["kind"]:
        raise Rejected([reason("kind", f"pool is {pool.config['kind']}; kind cannot change")])
    else:
        pool.reconfigure(config, cmd.issued_at)
    ctx.touch(pool, f"pool/{pool.pool}")
    live = len(ctx.world.live[(cmd.cell, cmd.pool)])
    smallest = min(config["node_models"], key=lambda m: (m["millicores"], m["memory_mib"]))
    for _ in range(config["min_nodes"] - live):
        scaling.request_node(ctx, pool, smallest, "below min_nodes", cmd.issued_at)
    return None


def _operated_node(world: World, cmd: c.CordonNode | c.UncordonNode) -> Node:
    node = world.node(cmd.cell, cmd.node_id)
    if node is None:
        raise Rejected([reason("node_id", f"unknown node {cmd.node_id!r} in cell {cmd.cell!r}")])
    if node.state not in ("ready", "cordoned"):
        raise Rejected([reason("node_id", f"node is {node.state}: only a ready or cordoned "
                                          "node can be cordoned or uncordoned")])
    return node


@handles(c.CordonNode)
def cordon_node(ctx: Context, cmd: c.CordonNode) -> str | None:
    node = _operated_node(ctx.world, cmd)
    if node.state == "cordoned" and node.cordoned_by == BY_OPERATOR:
        return "unchanged: already cordoned by an operator"
    # Also takes over a scale-in cordon: the autoscaler will not terminate it when it empties.
    node.cordon(cmd.reason, cmd.issued_at, by=BY_OPERATOR)
    ctx.touch(node, f"node/{node.node_id}")
    return None


@handles(c.UncordonNode)
def uncordon_node(ctx: Context, cmd: c.UncordonNode) -> str | None:
    node = _operated_node(ctx.world, cmd)
    if node.state == "ready":
        return "unchanged: the node takes work"
    node.uncordon(cmd.reason, cmd.issued_at)
    ctx.touch(node, f"node/{node.node_id}")
    pool = ctx.world.pool(node.cell, node.pool)
    assert pool is not None
    scaling.place_waiting(ctx, pool, cmd.issued_at)
    return None


@handles(c.SetAccountQuota)
def set_account_quota(ctx: Context, cmd: c.SetAccountQuota) -> str | None:
    limits = (cmd.vcpu, cmd.launch_burst, cmd.launch_rate_per_second)
    account = ctx.world.accounts.account(cmd.cell, cmd.account)
    if account is None:
        account = Account.create(cmd.issued_at, cell=cmd.cell, account=cmd.account)
    elif account.limits == limits:
        return "unchanged"
    account.set_limits(*limits, at=cmd.issued_at)
    ctx.touch(account, f"account/{cmd.account}")
    used = ctx.world.accounts.vcpu.get((cmd.cell, cmd.account), 0)
    if cmd.vcpu is not None and used > cmd.vcpu:
        return (f"the account's live instances hold {used} vCPU, above the new quota: they "
                "keep running, new ones are refused until it is under")
    return None


@handles(c.PublishPriceBook)
def publish_price_book(ctx: Context, cmd: c.PublishPriceBook) -> str | None:
    book = ctx.world.price_book(cmd.cell)
    effective_from = int(cmd.effective_from.timestamp())
    reasons = []
    # Never retroactive, measured against the cell's clock too: a backdated issued_at must not
    # reprice time already accrued.
    now = max(cmd.issued_at, ctx.clock) if ctx.clock is not None else cmd.issued_at
    if effective_from < now.timestamp():
        reasons.append(reason("effective_from", "prices are never retroactive: effective_from "
                                                f"is before {now.isoformat()} (issued_at or the "
                                                "cell's clock)", "retroactive_price"))
    if book is not None and book.versions and effective_from <= book.versions[-1][
            "effective_from"]:
        reasons.append(reason("effective_from", "must be later than the effective_from of "
                                                f"version {book.versions[-1]['number']}"))
    reasons += _price_book_conflicts(ctx.world, cmd, book, effective_from)
    if reasons:
        raise Rejected(reasons)
    if book is None:
        book = PriceBook.create(cmd.issued_at, cell=cmd.cell)
    terms = cmd.model_dump(mode="json", include={
        "currency", "minor_unit", "rate_per_vcpu_second", "rate_per_gib_second",
        "min_seconds", "grace_seconds", "runtime_rates"})
    book.publish({**terms, "effective_from": effective_from}, cmd.issued_at)
    ctx.touch(book, f"price-book/{cmd.cell}")
    return None


def _price_book_conflicts(world: World, cmd: c.PublishPriceBook, book: PriceBook | None,
                          effective_from: int) -> list[dict[str, str]]:
    """A version may neither reprice a finalised period (its invoices never change) nor
    change the book's currency (amounts in two currencies cannot be summed)."""
    reasons = []
    meter = world.billing.cells.get(cmd.cell)
    if meter is not None and meter.closed_end is not None and effective_from < meter.closed_end:
        reasons.append(reason("effective_from", f"falls in period {meter.closed}, or before, "
                                                "which is already finalised",
                              code="period_finalised"))
    if book is not None and book.versions:
        last = book.versions[-1]
        for field in ("currency", "minor_unit"):
            if getattr(cmd, field) != last[field]:
                reasons.append(reason(field, f"the cell's price book is in {last[field]!r}; "
                                             f"{field} cannot change", code="currency_change"))
    return reasons


def expire_pending(ctx: Context, cmd: c.Tick) -> str | None:
    """Expire instances stuck pending past their pool's limit."""
    expired = 0
    # Sorted: the dict's order is first access, which differs after a restart.
    for key in sorted(ctx.world.waiting):
        cell, pool_name = key
        if cell != cmd.cell:
            continue
        pool = ctx.world.pool(cell, pool_name)
        assert pool is not None
        limit = pool.config["pending_timeout_seconds"]
        for instance in ctx.world.waiting_in(cell, pool_name):
            if (cmd.now - instance.created_on).total_seconds() >= limit:
                _end(ctx, instance, Instance.Expired, f"pending longer than {limit} s", cmd.now)
                expired += 1
    return f"expired {expired} instance(s)" if expired else None


def time_out_starts(ctx: Context, cmd: c.Tick) -> str | None:
    """Fail instances stuck scheduled or starting past their pool's limit, at the deadline
    (billing stops there); their Pods are deleted (the outbox's DeletePod on Failed) and
    their room goes to waiting instances at the tick's time. Also begins the runs held
    until their back-off's end (one scan of the instances on nodes does both)."""
    overdue: list[tuple[datetime, str, str, Instance]] = []
    held: list[tuple[str, str, Instance]] = []
    world, waits = ctx.world, timeouts.LIMITS.keys()
    for (cell, _), refs in world.node_instances.items():
        if cell != cmd.cell:
            continue
        for account, name in refs:
            instance = world.instances[(cell, account, name)]
            if instance.run_held:
                held.append((account, name, instance))
            elif instance.state in waits:  # most are running: nothing more to look at
                pool = world.pools[(cell, instance.pool)]
                due = timeouts.deadline(instance.state, instance.state_since, pool.config)
                if due is not None and due <= cmd.now:
                    overdue.append((due, account, name, instance))
    # Sorted: the index's order is first access, which differs after a restart.
    released = 0
    for _, _, instance in sorted(held, key=lambda h: h[:2]):
        if _release_held_run(instance, cmd.now):  # its back-off is over: it runs
            ctx.touch(instance, f"instance/{instance.name}")
            released += 1
    pools: set[str] = set()
    for due, _, _, instance in sorted(overdue, key=lambda o: o[:3]):
        pool = world.pool(cmd.cell, instance.pool)
        assert pool is not None
        instance.end(Instance.Failed, timeouts.why(instance.state, pool.config), due)
        ctx.touch(instance, f"instance/{instance.name}")
        pools.add(instance.pool)
    for name in sorted(pools):
        pool = world.pool(cmd.cell, name)
        assert pool is not None
        scaling.place_waiting(ctx, pool, cmd.now)
    notes = [f"timed out {len(overdue)} start(s)" if overdue else "",
             f"{released} held run(s) began" if released else ""]
    return "; ".join(filter(None, notes)) or None


# Periodic decisions, in order; each returns a note or None.
TICK_DECIDERS: list[Callable[[Context, c.Tick], str | None]] = [
    expire_pending, time_out_starts, scaling.autoscale, billing.finalise_periods]


def _tick_too_far(ctx: Context, cmd: c.Tick) -> list[dict[str, str]]:
    """A Tick may move its cell's clock by a bounded step and close a bounded number of
    periods; an operator's `catch_up: true` lifts both."""
    if ctx.clock is None:  # a cell begins with an operator's pool or price book
        return [reason("cell", f"no cell {cmd.cell!r}: nothing was ever accepted in it",
                       code="unknown_cell")]
    if cmd.catch_up:
        return []
    limits, reasons = ctx.limits, []
    step = (cmd.now - ctx.clock).total_seconds()
    if step > limits.max_tick_step_seconds:
        reasons.append(reason("now", f"moves the cell's clock {step:.0f} s (from "
                                     f"{ctx.clock.isoformat()}); at most "
                                     f"{limits.max_tick_step_seconds} s per tick unless "
                                     "catch_up is true", code="tick_too_far"))
    meter = ctx.world.billing.cells.get(cmd.cell)
    due = meter.due_periods(billing.micros(cmd.now), limits.max_periods_per_tick) \
        if meter is not None else []
    if len(due) > limits.max_periods_per_tick:
        reasons.append(reason("now", f"would finalise more than {limits.max_periods_per_tick} "
                                     f"periods (from {due[0]}) unless catch_up is true",
                              code="tick_too_far"))
    return reasons


@handles(c.Tick)
def tick(ctx: Context, cmd: c.Tick) -> str | None:
    if reasons := _tick_too_far(ctx, cmd):
        raise Rejected(reasons)
    notes = [note for decide in TICK_DECIDERS if (note := decide(ctx, cmd))]
    return "; ".join(notes) or None
