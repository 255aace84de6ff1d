"""Placement and autoscaling actions: read the world, ask the pure policies, record events."""

from __future__ import annotations

from datetime import datetime
from itertools import islice
from typing import Any

from engine.decision import Draft
from engine.domain.instance import Instance
from engine.domain.node import AT_START, Node
from engine.domain.pool import Pool
from engine.domain.pool_config import NodeModel
from engine.placement_state import NoRoom
from engine.policies import autoscaling
from engine.policies.demand import DIMENSIONS
from schemas.commands import Tick


def group_labels(pool: Pool, model: str) -> dict[str, str]:
    """The labels every node of a node group (a pool's model) carries."""
    return {**pool.config.labels, "model": model, "pool": pool.pool}


def _matches(labels: dict[str, str], selector: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def groups_for(pool: Pool, demand: dict[str, int], selector: dict[str, str]
               ) -> list[NodeModel]:
    """The node models (groups) whose nodes hold `demand` and satisfy `selector`, smallest
    first: the only groups scale-out may ask for this instance."""
    return sorted((m for m in pool.config.node_models
                   if m.holds(demand) and _matches(group_labels(pool, m.name), selector)),
                  key=lambda m: (m.millicores, m.memory_mib, m.name))


def selector_problem(pool: Pool, demand: dict[str, int], selector: dict[str, str]
                     ) -> str | None:
    """Why no node group of the pool can ever hold an instance with this selector."""
    if not selector or groups_for(pool, demand, selector):
        return None
    return (f"no node group of pool {pool.pool!r} matches node_selector "
            f"{dict(sorted(selector.items()))} and holds {demand}")


def model_for(pool: Pool, instance: Instance) -> NodeModel | None:
    """A dedicated instance's model: the smallest that holds it and its selector."""
    if not instance.node_selector:
        return pool.config.smallest_model(instance.demand)
    return next(iter(groups_for(pool, instance.demand, instance.node_selector)), None)


def try_place(draft: Draft, pool: Pool, instance: Instance, at: datetime) -> list[dict]:
    """Schedule the instance if a node has room; answer the reasons if none has."""
    model = model_for(pool, instance)
    if model is None:
        return [{"field": "node_selector", "code": "unsatisfiable_selector",
                 "problem": "no node group matches the node selector"}]
    choice = draft.world.placements[(pool.cell, pool.pool)].choose(
        instance.demand, instance.node_selector, model.name)
    if isinstance(choice, NoRoom):
        return choice.reasons
    instance.schedule(choice.node_id, choice.policy, choice.score, at,
                      attachment=choice.attachment(instance.network))
    draft.touch(instance, f"instance/{instance.name}")
    return []


def place_waiting(draft: Draft, pool: Pool, at: datetime) -> None:
    # Placing only takes room away, so once a shape (demand, selector) finds no node, every
    # later instance of that shape is skipped: a long backlog costs one search per shape.
    no_room: set[tuple[Any, ...]] = set()
    for instance in draft.world.waiting_in(pool.cell, pool.pool):
        shape = (tuple(instance.demand.values()), tuple(instance.node_selector.items()))
        if shape in no_room:
            continue
        if try_place(draft, pool, instance, max(at, instance.state_since)):
            no_room.add(shape)


def request_node(draft: Draft, pool: Pool, model: NodeModel, why: str,
                 at: datetime) -> None:
    node_id = pool.want_node(model.name, why, at)
    draft.touch(pool, f"pool/{pool.pool}")
    labels = group_labels(pool, model.name)
    node = Node.create(at, cell=pool.cell, node_id=node_id, pool=pool.pool,
                       model=model.name, capacity=model.capacity, labels=labels, reason=why)
    draft.touch(node, f"node/{node_id}")


def scale_out(draft: Draft, pool: Pool, at: datetime, recent: int | None = None) -> None:
    """Make room for waiting instances: uncordon nodes that would hold them, then ask the
    ASG for the nodes the simulation says are missing."""
    world = draft.world
    key = (pool.cell, pool.pool)
    if recent is None:  # the periodic pass also retries placement on existing room
        place_waiting(draft, pool, at)
    _uncordon_under_pressure(draft, pool, at)
    if not world.waiting[key]:
        return
    room = pool.config.max_nodes - len(world.live[key])
    if room <= 0:
        return
    values = world.waiting[key].values()
    waiting = (list(values) if recent is None
               else list(islice(reversed(values), recent))[::-1])
    dedicated = pool.config.kind == "dedicated"
    pending = []
    for i in waiting:
        # Only the groups that satisfy the instance's selector may be asked for it; an
        # instance none satisfies asks for nothing (it was said unschedulable).
        groups = groups_for(pool, i.demand, i.node_selector)
        if groups:
            pending.append(autoscaling.Pending(
                i.name, i.demand, groups[0].name if dedicated else None,
                frozenset(m.name for m in groups) if i.node_selector else None))
    if not pending:
        return
    nodes = world.pool_nodes[key]
    # On their way: nodes asked for, and nodes held at start until they are set up.
    starting = [n for n in sorted(world.cordoned[key]) if nodes[n].cordoned_by == AT_START]
    # Every model's: a dedicated instance counts only on a node of its own model (below).
    on_way = [*sorted(world.coming[key]), *starting]
    plan = autoscaling.plan_scale_out(pending, [nodes[n].capacity for n in on_way],
                                      pool.config.node_models, room,
                                      pool.config.expander, pool.config.kind,
                                      coming_models=[nodes[n].model for n in on_way])
    if plan is None:
        return
    model = pool.config.model(plan.model)
    for _ in range(plan.count):
        request_node(draft, pool, model, f"scale out: {plan.reason}", at)


def _uncordon_under_pressure(draft: Draft, pool: Pool, at: datetime) -> None:
    world = draft.world
    key = (pool.cell, pool.pool)
    placement = world.placements[key]
    for node_id in sorted(world.cordoned[key]):
        node = world.pool_nodes[key][node_id]
        if node.held:
            continue  # an operator's or a start-up hold is not ours to lift
        free = placement.free(node.node_id)
        wanting = [i.name for i in world.waiting_in(*key)
                   if all(i.demand[d] <= free[d] for d in DIMENSIONS)
                   and _matches(node.labels, i.node_selector)
                   and (pool.config.kind == "shared" or not world.node_instances[
                       (pool.cell, node.node_id)])]
        if wanting:
            node.uncordon(f"room needed by pending {', '.join(wanting[:5])}", at)
            draft.touch(node, f"node/{node.node_id}")
            place_waiting(draft, pool, at)


def autoscale(draft: Draft, tick: Tick) -> str | None:
    """The periodic pass: scale out for everything waiting, then scale in what is idle."""
    world = draft.world
    changed = 0
    for (cell, _), pool in sorted(world.pools.items()):
        if cell != tick.cell:
            continue
        before = len(draft.events)
        scale_out(draft, pool, tick.now)
        scale_in(draft, pool, tick.now)
        changed += len(draft.events) - before
    return f"autoscaler recorded {changed} event(s)" if changed else None


def scale_in(draft: Draft, pool: Pool, now: datetime) -> None:
    world = draft.world
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
        uses, now, config.scale_down_utilisation_threshold,
        config.scale_down_unneeded_seconds, config.min_nodes, config.disruption_budget)
    nodes = world.pool_nodes[key]
    for node_id, why in plan.cordon:
        nodes[node_id].cordon(why, now)
        draft.touch(nodes[node_id], f"node/{node_id}")
    for node_id, why in plan.terminate:
        nodes[node_id].terminate(why, now)
        draft.touch(nodes[node_id], f"node/{node_id}")
