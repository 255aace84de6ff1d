"""Placement and autoscaling actions: read the world, ask the pure policies, record events."""

from __future__ import annotations

from datetime import datetime
from itertools import islice
from operator import ge, itemgetter
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
    return list(_groups(pool, demand, selector))


# Scale-out asks for the groups of every waiting instance at each create that waits; they
# depend only on the pool's config and name and the instance's shape, so they are worked
# out once per config (a config is immutable: a ConfigurePool makes a new one) and kept on
# it: one memo per pool, however many pools there are.
def _groups(pool: Pool, demand: dict[str, int], selector: dict[str, str]
            ) -> tuple[NodeModel, ...]:
    config = pool.config
    known: dict[tuple[Any, ...], tuple[NodeModel, ...]] | None = config.derived.get("groups")
    if known is None:
        known = config.derived["groups"] = {}
    shape = (pool.pool, tuple(demand.items()), tuple(selector.items()))
    groups = known.get(shape)
    if groups is None:
        if len(known) > 4096:  # tenants choose selectors: keep the memo bounded
            known.clear()
        groups = known[shape] = tuple(sorted(
            (m for m in config.node_models
             if m.holds(demand) and _matches(group_labels(pool, m.name), selector)),
            key=lambda m: (m.millicores, m.memory_mib, m.name)))
    return groups


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


def try_place(draft: Draft, pool: Pool, instance: Instance, at: datetime,
              why: bool = True) -> list[dict]:
    """Schedule the instance if a node has room; answer the reasons if none has (why=False:
    some non-empty stand-in for them, for a caller that only asks whether it was placed)."""
    model = model_for(pool, instance)
    if model is None:
        return [{"field": "node_selector", "code": "unsatisfiable_selector",
                 "problem": "no node group matches the node selector"}]
    choice = draft.world.placements[(pool.cell, pool.pool)].choose(
        instance.demand, instance.node_selector, model.name, why)
    if isinstance(choice, NoRoom):
        return choice.reasons
    instance.schedule(choice.node_id, choice.policy, choice.score, at,
                      attachment=choice.attachment(instance.network))
    draft.touch(instance, f"instance/{instance.name}")
    return []


def place_waiting(draft: Draft, pool: Pool, at: datetime) -> None:
    # Placing only takes room away, so once a shape (demand, selector) finds no node, every
    # later instance of that shape is skipped: a long backlog costs one search per shape.
    # In a shared pool any node that fits, of the selector's, takes an instance; so where no
    # node holds a demand, none holds a larger one with the same selector: skipped too.
    shared = pool.config.kind == "shared"
    no_room: set[tuple[Any, ...]] = set()
    smaller: dict[tuple[Any, ...], list[tuple[int, ...]]] = {}  # selector -> demands refused
    for instance in draft.world.waiting_in(pool.cell, pool.pool):
        vector, selector = _vector(instance.demand), tuple(instance.node_selector.items())
        if (vector, selector) in no_room or (shared and any(
                all(map(ge, vector, low)) for low in smaller.get(selector, ()))):
            continue
        # Only whether it was placed matters here: the reasons are never recorded.
        if try_place(draft, pool, instance, max(at, instance.state_since), why=False):
            no_room.add((vector, selector))
            smaller.setdefault(selector, []).append(vector)


_vector = itemgetter(*DIMENSIONS)  # a demand as a tuple, dimensions in order


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
    pending = _pendings(pool, waiting)
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
                                      coming_models=[nodes[n].model for n in on_way],
                                      memo=_fit_memo(pool))
    if plan is None:
        return
    model = pool.config.model(plan.model)
    for _ in range(plan.count):
        request_node(draft, pool, model, f"scale out: {plan.reason}", at)


# Each waiting instance's Pending, made once per config (kept on it, as _groups' memo): a
# create that waits plans for up to SCALE_OUT_RECENT of them. Keyed by ids, the instance
# kept (so the id stays its); an instance's name, demand and selector never change.
_Pendings = dict[int, tuple[Instance, autoscaling.Pending | None]]


def _fit_memo(pool: Pool) -> autoscaling.FitMemo:
    """The pool's last first fit on its coming nodes, kept on its config like the memos above
    (not in the process: two engines in one process never share it): the next create that
    waits resumes it. The plan checks that it is the same question, so a stale memo costs a
    redo, never a different answer."""
    memo = pool.config.derived.get("fits")
    if memo is None:
        memo = pool.config.derived["fits"] = autoscaling.FitMemo()
    return memo


def _pendings(pool: Pool, waiting: list[Instance]) -> list[autoscaling.Pending]:
    config = pool.config
    known: _Pendings | None = config.derived.get("pendings")
    if known is None:
        known = config.derived["pendings"] = {}
    if len(known) > 50_000:  # instances long placed or gone
        known.clear()
    pending = []
    for i in waiting:
        hit = known.get(id(i))
        if hit is None or hit[0] is not i:
            hit = known[id(i)] = (i, _pending(pool, i))
        if hit[1] is not None:
            pending.append(hit[1])
    return pending


def _pending(pool: Pool, i: Instance) -> autoscaling.Pending | None:
    """What scale-out plans for a waiting instance; None if no group may be asked for it."""
    # Only the groups that satisfy the instance's selector may be asked for it; an
    # instance none satisfies asks for nothing (it was said unschedulable).
    groups = _groups(pool, i.demand, i.node_selector)
    if not groups:
        return None
    return autoscaling.Pending(
        i.name, i.demand, groups[0].name if pool.config.kind == "dedicated" else None,
        frozenset(m.name for m in groups) if i.node_selector else None)



def _uncordon_under_pressure(draft: Draft, pool: Pool, at: datetime) -> None:
    world = draft.world
    key = (pool.cell, pool.pool)
    placement = world.placements[key]
    for node_id in sorted(world.cordoned[key]):
        node = world.pool_nodes[key][node_id]
        if node.held:
            continue  # an operator's or a start-up hold is not ours to lift
        if pool.config.kind != "shared" and world.node_instances[(pool.cell, node.node_id)]:
            continue  # a dedicated node hosts one instance: none waiting can use it
        free = placement.free(node.node_id)
        # The reason names five: the scan (at every create that waits) stops there.
        wanting = list(islice((i.name for i in world.waiting[key].values()
                               if all(i.demand[d] <= free[d] for d in DIMENSIONS)
                               and _matches(node.labels, i.node_selector)), 5))
        if wanting:
            node.uncordon(f"room needed by pending {', '.join(wanting)}", at)
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
