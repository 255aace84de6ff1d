"""Command handlers: validate against the state, then record the decided events.

Each handler first collects every reason to refuse (raising `Rejected` before touching any
aggregate), then acts. Stale or duplicate reports are accepted no-ops with a note.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from engine import billing, scaling
from engine.context import Context, Rejected, reason
from engine.domain.instance import ENDED, ON_NODE, PENDING, TERMINAL, Instance
from engine.domain.node import AT_START, BY_OPERATOR, GONE, Node
from engine.domain.pool import Pool
from engine.domain.price_book import PriceBook
from engine.policies import restart
from engine.policies.demand import demand_of
from engine.policies.spec_catalogue import Spec, SpecRejected
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


def _billed_spec(pool: Pool | None, cmd: c.CreateInstance) -> tuple[Spec | None, list[dict]]:
    if pool is None:
        return None, []
    choice = pool.billed_spec(cmd.vcpu, cmd.memory_gib)
    if isinstance(choice, SpecRejected):
        return None, [reason("containers", f"{r.message} (spec outside the catalogue)")
                      for r in choice.reasons]
    return choice.billed, []


@handles(c.CreateInstance)
def create_instance(ctx: Context, cmd: c.CreateInstance) -> str | None:
    world = ctx.world
    pool = world.pool(cmd.cell, cmd.pool)
    reasons = []
    if pool is None:
        reasons.append(reason("pool", f"no pool {cmd.pool!r} in cell {cmd.cell!r}"))
    if world.instance(cmd.cell, cmd.account, cmd.instance_id) is not None:
        reasons.append(reason("instance_id", f"instance {cmd.instance_id!r} already exists"))
    book = world.price_book(cmd.cell)
    if book is None or not any(v["effective_from"] <= cmd.issued_at.timestamp()
                               for v in book.versions):
        reasons.append(reason("cell", f"no price book in force in cell {cmd.cell!r}"))
    billed, spec_reasons = _billed_spec(pool, cmd)
    reasons += spec_reasons
    demand: dict[str, int] = {}
    if pool is not None and billed is not None:
        overhead = pool.config["cpu_overhead_millicores"]
        demand = demand_of(billed.vcpu, billed.memory_gib, cmd.runtime, overhead)
        if pool.smallest_model(demand) is None:
            reasons.append(reason("containers", f"no node model of pool {cmd.pool!r} holds "
                                                f"{demand} (spec plus runtime overhead)"))
    if reasons:
        raise Rejected(reasons)
    assert pool is not None and billed is not None
    instance = Instance.create(
        cmd.issued_at, cell=cmd.cell, name=cmd.instance_id, account=cmd.account, pool=cmd.pool,
        containers=[ct.model_dump(mode="json") for ct in cmd.containers],
        restart_policy=cmd.restart_policy, runtime=cmd.runtime,
        network=cmd.network.model_dump(mode="json"), node_selector=dict(cmd.node_selector),
        requested_vcpu=cmd.vcpu, requested_memory_gib=cmd.memory_gib,
        billed_vcpu=billed.vcpu, billed_memory_gib=billed.memory_gib, demand=demand,
    )
    ctx.touch(instance, f"instance/{instance.name}")
    not_placed = scaling.try_place(ctx, pool, instance, cmd.issued_at)
    if not_placed:
        instance.mark_unschedulable(not_placed, cmd.issued_at)
        ctx.touch(instance, f"instance/{instance.name}")
        scaling.scale_out(ctx, pool, cmd.issued_at, recent=SCALE_OUT_RECENT)
        return "unschedulable: waits for capacity"
    return None


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


@handles(c.ReportInstanceStarting)
def instance_starting(ctx: Context, cmd: c.ReportInstanceStarting) -> str | None:
    instance = _reported_instance(ctx.world, cmd)
    if instance.state != "scheduled":
        return _stale(instance)
    instance.start(max(cmd.occurred_at, instance.state_since))
    ctx.touch(instance, f"instance/{instance.name}")
    return None


@handles(c.ReportInstanceRunning)
def instance_running(ctx: Context, cmd: c.ReportInstanceRunning) -> str | None:
    instance = _reported_instance(ctx.world, cmd)
    if instance.state not in ("scheduled", "starting", "restarting"):
        return _stale(instance)
    at = max(cmd.occurred_at, instance.state_since)
    if instance.state == "scheduled":  # the starting report is late or lost
        instance.start(at)
    instance.run(at)
    ctx.touch(instance, f"instance/{instance.name}")
    return None


@handles(c.ReportContainerExited)
def container_exited(ctx: Context, cmd: c.ReportContainerExited) -> str | None:
    instance = _reported_instance(ctx.world, cmd)
    if cmd.container not in instance.container_names:
        raise Rejected([reason("container", f"instance has no container {cmd.container!r}")])
    if instance.state not in ON_NODE:
        return _stale(instance)
    if cmd.container in instance.completed:
        return f"stale report: container {cmd.container} already completed"
    at = max(cmd.occurred_at, instance.state_since)
    if instance.state == "scheduled":
        instance.start(at)
    decision = restart.decide_exit(instance.restart_policy, cmd.exit_code, cmd.container,
                                   instance.container_names, instance.completed)
    if decision == "restart":
        instance.restart(cmd.container, cmd.exit_code, restart.backoff_seconds(instance.restarts),
                         at)
    else:
        instance.complete_container(cmd.container, cmd.exit_code, at)
        if decision == "succeed":
            instance.end(Instance.Succeeded, "all containers completed", at)
        elif decision == "fail":
            instance.end(Instance.Failed, f"container {cmd.container} exited {cmd.exit_code}", at)
    ctx.touch(instance, f"instance/{instance.name}")
    _place_waiting_if_freed(ctx, instance, at)
    return None


@handles(c.ReportInstanceTerminated)
def instance_terminated(ctx: Context, cmd: c.ReportInstanceTerminated) -> str | None:
    instance = _reported_instance(ctx.world, cmd)
    if instance.state not in ON_NODE:
        return _stale(instance)
    _end(ctx, instance, Instance.Failed, cmd.reason, cmd.occurred_at)
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


@handles(c.PublishPriceBook)
def publish_price_book(ctx: Context, cmd: c.PublishPriceBook) -> str | None:
    book = ctx.world.price_book(cmd.cell)
    effective_from = int(cmd.effective_from.timestamp())
    reasons = []
    if effective_from < cmd.issued_at.timestamp():
        reasons.append(reason("effective_from", "prices are never retroactive: effective_from "
                                                "is before issued_at"))
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


# Periodic decisions, in order; each returns a note or None.
TICK_DECIDERS: list[Callable[[Context, c.Tick], str | None]] = [
    expire_pending, scaling.autoscale, billing.finalise_periods]


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
