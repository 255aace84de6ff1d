"""Command handlers: `decide(draft, command) -> Decision` (engine/decision.py).

Each handler first collects every reason to refuse and returns them as a `Refused` before
touching any aggregate; otherwise it records its events on the draft and returns them,
`Accepted`. Stale or duplicate reports are accepted no-ops with a note.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from engine import billing, scaling
from engine.billing.price_book import PriceVersion, version_in_force, weights
from engine.decision import Decision, Draft, Refused, reason, refused
from engine.domain.account import Account
from engine.domain.instance import ENDED, ON_NODE, PENDING, TERMINAL, Instance
from engine.domain.node import AT_START, BY_OPERATOR, GONE, Node
from engine.domain.pool import Pool
from engine.domain.pool_config import PoolConfig
from engine.domain.price_book import PriceBook
from engine.policies import networks, quotas, restart, runtimes, timeouts
from engine.policies.spec_catalogue import Spec, SpecChoice, SpecRejected
from engine.world import World
from schemas import commands as c

Handler = Callable[[Draft, Any], Decision]
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


def in_force(book: PriceBook | None, at: datetime) -> PriceVersion | None:
    """The cell's price version in force at `at`, if it has a book."""
    return version_in_force(book.versions, at) if book is not None else None


def size(pool: Pool, cmd: c.CreateInstance, version: PriceVersion
         ) -> tuple[str, SpecChoice | SpecRejected, dict[str, int] | None]:
    """What a create takes: its runtime (the pool's default if it names none); its billed
    spec, the round-up by the cell's own prices (the cheapest catalogue spec covering the
    request at the version in force, the runtime's rates if the version has some; ties go to
    the smaller vCPU, then the smaller memory); and its demand on a node. The handler decides
    with it and batch placement plans with it, so the two never disagree. In a dedicated
    pool whose node selector forces a larger model than the round-up's, the billed spec is
    raised to one that takes that model (`PoolConfig.billed_on_model`, §3.3)."""
    runtime = cmd.runtime or runtimes.DEFAULT_BY_KIND[pool.config.kind]
    rates = weights(version, runtime)
    choice = pool.config.billed_spec(cmd.vcpu, cmd.memory_gib, rates, runtime)
    if isinstance(choice, SpecRejected):
        return runtime, choice, None
    demand = pool.config.demand(choice.billed, runtime)
    if pool.config.kind == "dedicated" and cmd.node_selector:
        # The model the instance will occupy (as scaling.model_for picks it); none: the
        # selector is unsatisfiable, said at create, and nothing is bought.
        groups = scaling.groups_for(pool, demand, dict(cmd.node_selector))
        if groups:
            choice = pool.config.billed_on_model(choice, groups[0], rates, runtime)
            if isinstance(choice, SpecRejected):
                return runtime, choice, None
            demand = pool.config.demand(choice.billed, runtime)
    return runtime, choice, demand


def _billed_note(cmd: c.CreateInstance, billed: Spec, version: PriceVersion,
                 asked: tuple[Decimal, Decimal], model: str | None = None) -> str | None:
    vcpu, memory_gib = asked
    if (billed.vcpu, billed.memory_gib) == (vcpu, memory_gib):
        return None
    which = (f"cheapest covering spec that takes the {model} node its node_selector asks"
             if model else "cheapest covering spec")
    return (f"billed as {billed.vcpu} vCPU / {billed.memory_gib} GiB (asked "
            f"{vcpu} vCPU / {memory_gib} GiB; {which} at price version {version.version})")


_KEPT_PARTS = {"init_containers", "containers", "network", "retry_budget"}


@handles(c.CreateInstance)
def create_instance(draft: Draft, cmd: c.CreateInstance) -> Decision:
    world = draft.world
    pool = world.pool(cmd.cell, cmd.pool)
    reasons = []
    if pool is None:
        reasons.append(reason("pool", f"no pool {cmd.pool!r} in cell {cmd.cell!r}"))
    if world.instance(cmd.cell, cmd.account, cmd.instance_id) is not None:
        reasons.append(reason("instance_id", f"instance {cmd.instance_id!r} already exists"))
    version = in_force(world.price_book(cmd.cell), cmd.issued_at)
    if version is None:
        reasons.append(reason("cell", f"no price book in force in cell {cmd.cell!r}"))
    runtime = cmd.runtime or "runc"
    if pool is not None:
        runtime = cmd.runtime or runtimes.DEFAULT_BY_KIND[pool.config.kind]
        if problem := runtimes.isolation_problem(pool.config.kind, runtime):
            reasons.append(reason("runtime", problem, code="runtime_not_isolated"))
    billed: Spec | None = None
    demand: dict[str, int] = {}
    model: str | None = None  # the selector's model, if it raised the billed spec
    if pool is not None and version is not None:
        runtime, choice, sized = size(pool, cmd, version)
        if isinstance(choice, SpecRejected):
            reasons += [reason("node_selector", r.message, code=r.code)
                        if r.code == "selector_model_unbillable" else
                        reason("containers", f"{r.message} (spec outside the catalogue)")
                        for r in choice.reasons]
        else:
            billed, demand, model = choice.billed, sized or {}, choice.model
    if pool is not None and billed is not None:
        if pool.config.smallest_model(demand) is None:
            reasons.append(reason("containers", f"no node model of pool {cmd.pool!r} holds "
                                                f"{demand} (spec plus runtime overhead)"))
    reasons += _network_ownership(world, cmd)
    reasons += _account_admission(world, cmd, billed, draft.clock)
    if reasons:
        return Refused(tuple(reasons))
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
    draft.touch(instance, f"instance/{instance.name}")
    note = _billed_note(cmd, billed, version, asked, model)
    if problem := scaling.selector_problem(pool, demand, instance.node_selector):
        # No node group can ever hold it: say so now, and ask the ASG for nothing.
        instance.mark_unschedulable([reason("node_selector", problem,
                                            code="unsatisfiable_selector")], cmd.issued_at)
        draft.touch(instance, f"instance/{instance.name}")
        return draft.accept("; ".join(filter(None, [f"unschedulable: {problem}", note])))
    not_placed = scaling.try_place(draft, pool, instance, cmd.issued_at)
    if not_placed:
        instance.mark_unschedulable(not_placed, cmd.issued_at)
        draft.touch(instance, f"instance/{instance.name}")
        scaling.scale_out(draft, pool, cmd.issued_at, recent=SCALE_OUT_RECENT)
        return draft.accept("; ".join(filter(None, ["unschedulable: waits for capacity", note])))
    return draft.accept(note)


def _account_admission(world: World, cmd: c.CreateInstance, billed: Spec | None,
                       clock: datetime | None) -> list[dict[str, str]]:
    """The account's vCPU quota and launch rate, refilled only up to the cell's clock
    (engine/policies/quotas.py)."""
    return quotas.admission_reasons(world.accounts, cmd.cell, cmd.account,
                                    billed.vcpu if billed is not None else cmd.vcpu,
                                    cmd.issued_at, clock)


def _network_ownership(world: World, cmd: c.CreateInstance) -> list[dict[str, str]]:
    """No VPC, subnet or security group registered to other accounts only
    (engine/policies/networks.py)."""
    usage = world.part(cmd.cell).accounts
    net = cmd.network
    return networks.not_owned(cmd.account, cmd.cell,
                              lambda kind, ident: usage.owners_of(cmd.cell, kind, ident),
                              net.vpc, net.subnet, net.security_groups)


def _tenant_instance(world: World, cmd: c.StopInstance | c.DeleteInstance
                     ) -> Instance | Refused:
    instance = world.instance(cmd.cell, cmd.account, cmd.instance_id)
    if instance is None:
        return refused(reason("instance_id", f"no instance {cmd.instance_id!r} for account "
                                              f"{cmd.account!r} in cell {cmd.cell!r}"))
    return instance


@handles(c.StopInstance)
def stop_instance(draft: Draft, cmd: c.StopInstance) -> Decision:
    instance = _tenant_instance(draft.world, cmd)
    if isinstance(instance, Refused):
        return instance
    if instance.state in TERMINAL:
        return refused(reason("instance_id", f"instance is already {instance.state}"))
    _end(draft, instance, Instance.Stopped, "stopped by tenant", cmd.issued_at)
    return draft.accept()


@handles(c.DeleteInstance)
def delete_instance(draft: Draft, cmd: c.DeleteInstance) -> Decision:
    instance = _tenant_instance(draft.world, cmd)
    if isinstance(instance, Refused):
        return instance
    if instance.state == "deleted":
        return refused(reason("instance_id", "instance is already deleted"))
    if instance.state not in ENDED:
        _end(draft, instance, Instance.Stopped, "deleted by tenant", cmd.issued_at)
    instance.delete(max(cmd.issued_at, instance.state_since))
    draft.touch(instance, f"instance/{instance.name}")
    return draft.accept()


def _end(draft: Draft, instance: Instance, event_class: type[Instance.Ended], why: str,
         at: datetime) -> None:
    had_node = instance.state in ON_NODE
    instance.end(event_class, why, max(at, instance.state_since))
    draft.touch(instance, f"instance/{instance.name}")
    if had_node:
        _place_waiting_if_freed(draft, instance, at)


# --- reports from the infrastructure ---------------------------------------------------


def _reported_instance(world: World, cmd: Any) -> Instance | Refused:
    """The instance a node's report speaks of; only the node it is on may report on it."""
    instance = world.instance(cmd.cell, cmd.account, cmd.instance_id)
    if instance is None:
        return refused(reason("instance_id", f"no instance {cmd.instance_id!r} for account "
                                             f"{cmd.account!r} in cell {cmd.cell!r}"))
    if instance.state in PENDING:
        return refused(reason("instance_id", f"instance is {instance.state}: it has no node "
                                             "to report from"))
    if instance.node_id != cmd.node_id:
        # Never says which node it is on: the reporter has no business knowing.
        return refused(reason("node_id", f"instance {cmd.instance_id!r} is not on node "
                                         f"{cmd.node_id!r}", code="wrong_node"))
    return instance


def _stale(instance: Instance) -> str:
    return f"stale report: instance is {instance.state}"


def _out_of_order(instance: Instance, cmd: c.InstanceReport) -> str | None:
    """A report whose sequence is not above the highest applied is stale (issue 14)."""
    if cmd.sequence is None or instance.sequence is None or cmd.sequence > instance.sequence:
        return None
    return (f"stale report: sequence {cmd.sequence} is not above {instance.sequence}, "
            "already applied")


def _no_change(draft: Draft, instance: Instance, cmd: c.InstanceReport,
               note: str | None = None) -> str:
    """A report the instance's state makes a no-op. Its sequence still counts: the node has
    seen this far, so anything it numbered lower is older news (a run reported while
    already running makes the exit before it stale). An ended instance changes no more."""
    if instance.state not in TERMINAL and cmd.sequence is not None and (
            instance.sequence is None or cmd.sequence > instance.sequence):
        instance.sequenced(cmd.sequence, max(cmd.occurred_at, instance.state_since))
        draft.touch(instance, f"instance/{instance.name}")
    return note or _stale(instance)


def _applied(draft: Draft, instance: Instance, cmd: c.InstanceReport, at: datetime) -> None:
    """Record the report's sequence (if any) once it changed the instance."""
    if cmd.sequence is not None:
        instance.sequenced(cmd.sequence, at)
    draft.touch(instance, f"instance/{instance.name}")


def _start_if_scheduled(instance: Instance, cmd: c.InstanceReport, at: datetime) -> None:
    """A report that overtook (or outlived) the starting report implies it: starting since
    the Pod's startTime if the report says, else since this report."""
    if instance.state == "scheduled":
        instance.start(max(cmd.started_at or at, instance.state_since))


@handles(c.ReportInstanceStarting)
def instance_starting(draft: Draft, cmd: c.ReportInstanceStarting) -> Decision:
    instance = _reported_instance(draft.world, cmd)
    if isinstance(instance, Refused):
        return instance
    if stale := _out_of_order(instance, cmd):
        return draft.accept(stale)
    if instance.state != "scheduled":
        return draft.accept(_no_change(draft, instance, cmd))
    at = max(cmd.occurred_at, instance.state_since)
    instance.start(at)
    _applied(draft, instance, cmd, at)
    return draft.accept()


@handles(c.ReportInstanceRunning)
def instance_running(draft: Draft, cmd: c.ReportInstanceRunning) -> Decision:
    instance = _reported_instance(draft.world, cmd)
    if isinstance(instance, Refused):
        return instance
    if stale := _out_of_order(instance, cmd):
        return draft.accept(stale)
    if instance.state not in ("scheduled", "starting", "restarting"):
        return draft.accept(_no_change(draft, instance, cmd))
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
        _applied(draft, instance, cmd, at)
        return draft.accept(f"held: back-off until {instance.backoff_until.isoformat()} "
                            f"after restart {instance.restarts}; runs from then")
    if not _release_held_run(instance, at):  # a held run began at the back-off's end
        _start_if_scheduled(instance, cmd, at)
        instance.run(at)
    _applied(draft, instance, cmd, at)
    return draft.accept()


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
def container_exited(draft: Draft, cmd: c.ReportContainerExited) -> Decision:
    instance = _reported_instance(draft.world, cmd)
    if isinstance(instance, Refused):
        return instance
    if cmd.container not in instance.container_names:
        return refused(reason("container", f"instance has no container {cmd.container!r}"))
    if stale := _out_of_order(instance, cmd):
        return draft.accept(stale)
    if instance.state not in ON_NODE:
        return draft.accept(_no_change(draft, instance, cmd))
    if cmd.container in instance.completed:
        return draft.accept(_no_change(
            draft, instance, cmd, f"stale report: container {cmd.container} already completed"))
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
    _applied(draft, instance, cmd, at)
    _place_waiting_if_freed(draft, instance, at)
    return draft.accept()


@handles(c.ReportInstanceTerminated)
def instance_terminated(draft: Draft, cmd: c.ReportInstanceTerminated) -> Decision:
    instance = _reported_instance(draft.world, cmd)
    if isinstance(instance, Refused):
        return instance
    if stale := _out_of_order(instance, cmd):
        return draft.accept(stale)
    if instance.state not in ON_NODE:
        return draft.accept(_no_change(draft, instance, cmd))
    at = max(cmd.occurred_at, instance.state_since)
    if cmd.started_at is not None:  # without it, a scheduled instance never began: unbilled
        _start_if_scheduled(instance, cmd, at)
    if cmd.sequence is not None:
        instance.sequenced(cmd.sequence, at)
    _end(draft, instance, Instance.Failed, cmd.reason, at)
    return draft.accept()


def _place_waiting_if_freed(draft: Draft, instance: Instance, at: datetime) -> None:
    if instance.state not in ON_NODE:
        pool = draft.world.pool(instance.cell, instance.pool)
        assert pool is not None
        scaling.place_waiting(draft, pool, at)


def _reported_node(world: World, cmd: c.ReportNodeReady | c.ReportNodeLost) -> Node | Refused:
    node = world.node(cmd.cell, cmd.node_id)
    if node is None:
        return refused(reason("node_id", f"unknown node {cmd.node_id!r} in cell {cmd.cell!r}"))
    return node


@handles(c.ReportNodeReady)
def node_ready(draft: Draft, cmd: c.ReportNodeReady) -> Decision:
    node = _reported_node(draft.world, cmd)
    if isinstance(node, Refused):
        return node
    if node.state in GONE:
        return refused(reason("node_id", f"node is {node.state}"))
    if node.state != "requested":
        return draft.accept(f"stale report: node is {node.state}")
    pool = draft.world.pool(node.cell, node.pool)
    assert pool is not None
    node.mark_ready(cmd.occurred_at)
    if pool.config.start_cordoned:
        node.cordon("pool starts nodes cordoned: waits for UncordonNode", cmd.occurred_at,
                    by=AT_START)
    draft.touch(node, f"node/{node.node_id}")
    if node.state == "cordoned":
        return draft.accept("cordoned at start: waits for UncordonNode")
    scaling.place_waiting(draft, pool, cmd.occurred_at)
    return draft.accept()


@handles(c.ReportNodeLost)
def node_lost(draft: Draft, cmd: c.ReportNodeLost) -> Decision:
    node = _reported_node(draft.world, cmd)
    if isinstance(node, Refused):
        return node
    if node.state in GONE:
        return draft.accept(f"stale report: node is {node.state}")
    victims = draft.world.instances_on(node.cell, node.node_id)
    # Lost first, so the room its instances free is not offered to anyone.
    node.mark_lost(cmd.reason, cmd.occurred_at)
    draft.touch(node, f"node/{node.node_id}")
    for instance in victims:
        _end(draft, instance, Instance.Failed, f"node lost: {cmd.reason}", cmd.occurred_at)
    return draft.accept()


# --- operators and the ticker ----------------------------------------------------------


@handles(c.ConfigurePool)
def configure_pool(draft: Draft, cmd: c.ConfigurePool) -> Decision:
    config = cmd.model_dump(mode="json", exclude={
        "schema_version", "type", "command_id", "cell", "issued_at", "pool"})
    typed = PoolConfig.of(config)
    pool = draft.world.pool(cmd.cell, cmd.pool)
    if pool is None:
        pool = Pool.create(cmd.issued_at, cell=cmd.cell, pool=cmd.pool, config=config)
    elif pool.config.same(typed):
        return draft.accept("unchanged")
    elif pool.config.kind != typed.kind:
        return refused(reason("kind", f"pool is {pool.config.kind}; kind cannot change"))
    else:
        pool.reconfigure(config, cmd.issued_at)
    draft.touch(pool, f"pool/{pool.pool}")
    live = len(draft.world.live[(cmd.cell, cmd.pool)])
    smallest = min(typed.node_models, key=lambda m: (m.millicores, m.memory_mib))
    for _ in range(typed.min_nodes - live):
        scaling.request_node(draft, pool, smallest, "below min_nodes", cmd.issued_at)
    return draft.accept()


def _operated_node(world: World, cmd: c.CordonNode | c.UncordonNode) -> Node | Refused:
    node = world.node(cmd.cell, cmd.node_id)
    if node is None:
        return refused(reason("node_id", f"unknown node {cmd.node_id!r} in cell {cmd.cell!r}"))
    if node.state not in ("ready", "cordoned"):
        return refused(reason("node_id", f"node is {node.state}: only a ready or cordoned "
                                         "node can be cordoned or uncordoned"))
    return node


@handles(c.CordonNode)
def cordon_node(draft: Draft, cmd: c.CordonNode) -> Decision:
    node = _operated_node(draft.world, cmd)
    if isinstance(node, Refused):
        return node
    if node.state == "cordoned" and node.cordoned_by == BY_OPERATOR:
        return draft.accept("unchanged: already cordoned by an operator")
    # Also takes over a scale-in cordon: the autoscaler will not terminate it when it empties.
    node.cordon(cmd.reason, cmd.issued_at, by=BY_OPERATOR)
    draft.touch(node, f"node/{node.node_id}")
    return draft.accept()


@handles(c.UncordonNode)
def uncordon_node(draft: Draft, cmd: c.UncordonNode) -> Decision:
    node = _operated_node(draft.world, cmd)
    if isinstance(node, Refused):
        return node
    if node.state == "ready":
        return draft.accept("unchanged: the node takes work")
    node.uncordon(cmd.reason, cmd.issued_at)
    draft.touch(node, f"node/{node.node_id}")
    pool = draft.world.pool(node.cell, node.pool)
    assert pool is not None
    scaling.place_waiting(draft, pool, cmd.issued_at)
    return draft.accept()


@handles(c.SetAccountQuota)
def set_account_quota(draft: Draft, cmd: c.SetAccountQuota) -> Decision:
    limits = (cmd.vcpu, cmd.launch_burst, cmd.launch_rate_per_second)
    account = draft.world.accounts.account(cmd.cell, cmd.account)
    if account is None:
        account = Account.create(cmd.issued_at, cell=cmd.cell, account=cmd.account)
    elif account.limits == limits:
        return draft.accept("unchanged")
    # Never before the cell's clock: the launch bucket has refilled up to it already.
    at = max(cmd.issued_at, draft.clock) if draft.clock is not None else cmd.issued_at
    account.set_limits(*limits, at=at)
    draft.touch(account, f"account/{cmd.account}")
    used = draft.world.accounts.vcpu.get((cmd.cell, cmd.account), 0)
    if cmd.vcpu is not None and used > cmd.vcpu:
        return draft.accept(f"the account's live instances hold {used} vCPU, above the new "
                            "quota: they keep running, new ones are refused until it is under")
    return draft.accept()


@handles(c.SetAccountNetworks)
def set_account_networks(draft: Draft, cmd: c.SetAccountNetworks) -> Decision:
    # Sorted and without repeats: the same set stated in another order is unchanged.
    owned = (sorted(set(cmd.vpcs)), sorted(set(cmd.subnets)), sorted(set(cmd.security_groups)))
    account = draft.world.accounts.account(cmd.cell, cmd.account)
    if account is None:
        account = Account.create(cmd.issued_at, cell=cmd.cell, account=cmd.account)
    elif account.networks == tuple(map(tuple, owned)):
        return draft.accept("unchanged")
    account.set_networks(*owned, at=cmd.issued_at)
    draft.touch(account, f"account/{cmd.account}")
    # Running instances keep their ENIs: only new creates are checked against the new set.
    return draft.accept()


@handles(c.PublishPriceBook)
def publish_price_book(draft: Draft, cmd: c.PublishPriceBook) -> Decision:
    book = draft.world.price_book(cmd.cell)
    effective_from = int(cmd.effective_from.timestamp())
    reasons = []
    # Never retroactive, measured against the cell's clock too: a backdated issued_at must not
    # reprice time already accrued.
    now = max(cmd.issued_at, draft.clock) if draft.clock is not None else cmd.issued_at
    if effective_from < now.timestamp():
        reasons.append(reason("effective_from", "prices are never retroactive: effective_from "
                                                f"is before {now.isoformat()} (issued_at or the "
                                                "cell's clock)", "retroactive_price"))
    if book is not None and book.versions and effective_from <= book.versions[-1].effective_from:
        reasons.append(reason("effective_from", "must be later than the effective_from of "
                                                f"version {book.versions[-1].version}"))
    reasons += _price_book_conflicts(draft.world, cmd, book, effective_from)
    if reasons:
        return Refused(tuple(reasons))
    if book is None:
        book = PriceBook.create(cmd.issued_at, cell=cmd.cell)
    terms = cmd.model_dump(mode="json", include={
        "currency", "minor_unit", "rate_per_vcpu_second", "rate_per_gib_second",
        "min_seconds", "grace_seconds", "runtime_rates"})
    book.publish({**terms, "effective_from": effective_from}, cmd.issued_at)
    draft.touch(book, f"price-book/{cmd.cell}")
    return draft.accept()


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
            if getattr(cmd, field) != getattr(last, field):
                reasons.append(reason(field, f"the cell's price book is in "
                                             f"{getattr(last, field)!r}; "
                                             f"{field} cannot change", code="currency_change"))
    return reasons


def expire_pending(draft: Draft, cmd: c.Tick) -> str | None:
    """Expire instances stuck pending past their pool's limit."""
    expired = 0
    # Sorted: the dict's order is first access, which differs after a restart.
    for key in sorted(draft.world.waiting):
        cell, pool_name = key
        if cell != cmd.cell:
            continue
        pool = draft.world.pool(cell, pool_name)
        assert pool is not None
        limit = pool.config.pending_timeout_seconds
        for instance in draft.world.waiting_in(cell, pool_name):
            if (cmd.now - instance.created_on).total_seconds() >= limit:
                _end(draft, instance, Instance.Expired, f"pending longer than {limit} s", cmd.now)
                expired += 1
    return f"expired {expired} instance(s)" if expired else None


def time_out_starts(draft: Draft, cmd: c.Tick) -> str | None:
    """Fail instances stuck scheduled or starting past their pool's limit, at the deadline
    (billing stops there); their Pods are deleted (the outbox's DeletePod on Failed) and
    their room goes to waiting instances at the tick's time. Also begins the runs held
    until their back-off's end (one scan of the instances on nodes does both)."""
    overdue: list[tuple[datetime, str, str, Instance]] = []
    held: list[tuple[str, str, Instance]] = []
    world, waits = draft.world, timeouts.LIMITS.keys()
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
            draft.touch(instance, f"instance/{instance.name}")
            released += 1
    pools: set[str] = set()
    for due, _, _, instance in sorted(overdue, key=lambda o: o[:3]):
        pool = world.pool(cmd.cell, instance.pool)
        assert pool is not None
        instance.end(Instance.Failed, timeouts.why(instance.state, pool.config), due)
        draft.touch(instance, f"instance/{instance.name}")
        pools.add(instance.pool)
    for name in sorted(pools):
        pool = world.pool(cmd.cell, name)
        assert pool is not None
        scaling.place_waiting(draft, pool, cmd.now)
    notes = [f"timed out {len(overdue)} start(s)" if overdue else "",
             f"{released} held run(s) began" if released else ""]
    return "; ".join(filter(None, notes)) or None


# Periodic decisions, in order; each returns a note or None.
TICK_DECIDERS: list[Callable[[Draft, c.Tick], str | None]] = [
    expire_pending, time_out_starts, scaling.autoscale, billing.finalise_periods]


def _tick_too_far(draft: Draft, cmd: c.Tick) -> list[dict[str, str]]:
    """A Tick may move its cell's clock by a bounded step and close a bounded number of
    periods; an operator's `catch_up: true` lifts both."""
    if draft.clock is None:  # a cell begins with an operator's pool or price book
        return [reason("cell", f"no cell {cmd.cell!r}: nothing was ever accepted in it",
                       code="unknown_cell")]
    if cmd.catch_up:
        return []
    limits, reasons = draft.limits, []
    step = (cmd.now - draft.clock).total_seconds()
    if step > limits.max_tick_step_seconds:
        reasons.append(reason("now", f"moves the cell's clock {step:.0f} s (from "
                                     f"{draft.clock.isoformat()}); at most "
                                     f"{limits.max_tick_step_seconds} s per tick unless "
                                     "catch_up is true", code="tick_too_far"))
    meter = draft.world.billing.cells.get(cmd.cell)
    due = meter.due_periods(billing.micros(cmd.now), limits.max_periods_per_tick) \
        if meter is not None else []
    if len(due) > limits.max_periods_per_tick:
        reasons.append(reason("now", f"would finalise more than {limits.max_periods_per_tick} "
                                     f"periods (from {due[0]}) unless catch_up is true",
                              code="tick_too_far"))
    return reasons


@handles(c.Tick)
def tick(draft: Draft, cmd: c.Tick) -> Decision:
    if reasons := _tick_too_far(draft, cmd):
        return Refused(tuple(reasons))
    notes = [note for decide in TICK_DECIDERS if (note := decide(draft, cmd))]
    return draft.accept("; ".join(notes) or None)
