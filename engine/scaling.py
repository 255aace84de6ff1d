"""Placement and autoscaling actions: read the world, ask the pure policies, record events."""

from __future__ import annotations

from datetime import datetime
from itertools import islice
from typing import Any

from engine.context import Context
from engine.domain.instance import Instance
from engine.domain.node import AT_START, Node
from engine.domain.pool import Pool
from engine.placement_state import NoRoom
from engine.policies import autoscaling
from engine.policies.demand import DIMENSIONS
from schemas.commands import Tick


def model_for(pool: Pool, instance: Instance) -> dict[str, Any]:
    model = pool.smallest_model(instance.demand)
    assert model is not None  # checked when the instance was accepted
    return model


def try_place(ctx: Context, pool: Pool, instance: Instance, at: datetime) -> list[dict]:
    """Schedule the instance if a node has room; answer the reasons if none has."""
    choice = ctx.world.placements[(pool.cell, pool.pool)].choose(
        instance.demand, instance.node_selector, model_for(pool, instance)["name"])
    if isinstance(choice, NoRoom):
        return choice.reasons
    instance.schedule(choice.node_id, choice.policy, choice.score, at)
    ctx.touch(instance, f"instance/{instance.name}")
    return []


def place_waiting(ctx: Context, pool: Pool, at: datetime) -> None:
    # Placing only takes room away, so once a shape (demand, selector) finds no node, every
    # later instance of that shape is skipped: a long backlog costs one search per shape.
    no_room: set[tuple[Any, ...]] = set()
    for instance in ctx.world.waiting_in(pool.cell, pool.pool):
        shape = (tuple(instance.demand.values()), tuple(instance.node_selector.items()))
        if shape in no_room:
            continue
        if try_place(ctx, pool, instance, max(at, instance.state_since)):
            no_room.add(shape)


def request_node(ctx: Context, pool: Pool, model: dict[str, Any], why: str,
                 at: datetime) -> None:
    node_id = pool.want_node(model["name"], why, at)
    ctx.touch(pool, f"pool/{pool.pool}")
    capacity = {d: model[d] for d in DIMENSIONS}
    labels = {**pool.config["labels"], "model": model["name"], "pool": pool.pool}
    node = Node.create(at, cell=pool.cell, node_id=node_id, pool=pool.pool,
                       model=model["name"], capacity=capacity, labels=labels, reason=why)
    ctx.touch(node, f"node/{node_id}")


def scale_out(ctx: Context, pool: Pool, at: datetime, recent: int | None = None) -> None:
    """Make room for waiting instances: uncordon nodes that would hold them, then ask the
    ASG for the nodes the simulation says are missing."""
    world = ctx.world
    key = (pool.cell, pool.pool)
    if recent is None:  # the periodic pass also retries placement on existing room
        place_waiting(ctx, pool, at)
    _uncordon_under_pressure(ctx, pool, at)
    if not world.waiting[key]:
        return
    room = pool.config["max_nodes"] - len(world.live[key])
    if room <= 0:
        return
    values = world.waiting[key].values()
    waiting = (list(values) if recent is None
               else list(islice(reversed(values), recent))[::-1])
    dedicated = pool.config["kind"] == "dedicated"
    pending = [autoscaling.Pending(i.name, i.demand,
                                   model_for(pool, i)["name"] if dedicated else None)
               for i in waiting]
    nodes = world.pool_nodes[key]
    # On their way: nodes asked for, and nodes held at start until they are set up.
    starting = [n for n in sorted(world.cordoned[key]) if nodes[n].cordoned_by == AT_START]
    coming = [nodes[n].capacity for n in [*sorted(world.coming[key]), *starting]
              if not dedicated or nodes[n].model == pending[0].model]
    plan = autoscaling.plan_scale_out(pending, coming, pool.config["node_models"], room,
                                      pool.config["expander"], pool.config["kind"])
    if plan is None:
        return
    model = pool.model(plan.model)
    for _ in range(plan.count):
        request_node(ctx, pool, model, f"scale out: {plan.reason}", at)


def _uncordon_under_pressure(ctx: Context, pool: Pool, at: datetime) -> None:
    world = ctx.world
    key = (pool.cell, pool.pool)
    placement = world.placements[key]
    for node_id in sorted(world.cordoned[key]):
        node = world.pool_nodes[key][node_id]
        if node.held:
            continue  # an operator's or a start-up hold is not ours to lift
        free = placement.free(node.node_id)
        wanting = [i.name for i in world.waiting_in(*key)
                   if all(i.demand[d] <= free[d] for d in DIMENSIONS)
                   and (pool.config["kind"] == "shared" or not world.node_instances[
                       (pool.cell, node.node_id)])]
        if wanting:
            node.uncordon(f"room needed by pending {', '.join(wanting[:5])}", at)
            ctx.touch(node, f"node/{node.node_id}")
            place_waiting(ctx, pool, at)


def autoscale(ctx: Context, tick: Tick) -> str | None:
    """The periodic pass: scale out for everything waiting, then scale in what is idle."""
    world = ctx.world
    changed = 0
    for (cell, _), pool in sorted(world.pools.items()):
        if cell != tick.cell:
            continue
        before = len(ctx.events)
        scale_out(ctx, pool, tick.now)
        scale_in(ctx, pool, tick.now)
        changed += len(ctx.events) - before
    return f"autoscaler recorded {changed} event(s)" if changed else None


def scale_in(ctx: Context, pool: Pool, now: datetime) -> None:
    world = ctx.world
    key = (pool.cell, pool.pool)
    placement = world.placements[key]
    uses = [autoscaling.NodeUse(
        node_id=n.node_id, state="held" if n.held else n.state,
        instances=len(world.node_instances[(pool.cell, n.node_id)]),
        utilisation=placement.utilisation(n.node_id),
        unneeded_since=world.unneeded_since.get((pool.cell, n.node_id)))
        for n in world.pool_nodes[key].values() if n.state in ("ready", "cordoned")]
    config = pool.config
    plan = autoscaling.plan_scale_in(
        uses, now, config["scale_down_utilisation_threshold"],
        config["scale_down_unneeded_seconds"], config["min_nodes"], config["disruption_budget"])
    nodes = world.pool_nodes[key]
    for node_id, why in plan.cordon:
        nodes[node_id].cordon(why, now)
        ctx.touch(nodes[node_id], f"node/{node_id}")
    for node_id, why in plan.terminate:
        nodes[node_id].terminate(why, now)
        ctx.touch(nodes[node_id], f"node/{node_id}")
