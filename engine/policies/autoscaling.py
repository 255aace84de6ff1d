"""Autoscaling decisions for one pool (an ASG): pure functions over plain values.

Scale-out simulates the pending instances against the nodes already on their way and then
against fresh nodes of each candidate model (the pool's node models are its node groups), and
an expander picks the model: least-waste, price or priority, as in the Kubernetes Cluster
Autoscaler. Scale-in never evicts: under-used nodes are cordoned so they empty as their
instances end, and empty nodes past the unneeded time are terminated, never below min_nodes
and at most a budget at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from operator import itemgetter
from typing import TYPE_CHECKING

from engine.policies.demand import DIMENSIONS

if TYPE_CHECKING:  # a value the pool's config holds; policies take it, never import state
    from engine.domain.pool_config import NodeModel

Vector = dict[str, int]


@dataclass(frozen=True)
class Pending:
    name: str
    demand: Vector
    model: str | None = None  # dedicated pools: the one model this instance needs
    # The node groups (models) whose labels satisfy its node selector; None: any group.
    models: frozenset[str] | None = None
    # The demand as a tuple in DIMENSIONS order, for the first fit on the hot path.
    vector: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "vector", _vector(self.demand))

    def allows(self, model: str) -> bool:
        return self.models is None or model in self.models


@dataclass(frozen=True)
class ScaleOut:
    model: str
    count: int
    instances: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class NodeUse:
    node_id: str
    state: str  # ready | cordoned (by the autoscaler) | held (cordoned by anyone else)
    instances: int
    utilisation: float
    unneeded_since: datetime | None


@dataclass(frozen=True)
class ScaleIn:
    cordon: tuple[tuple[str, str], ...] = ()  # (node_id, reason)
    terminate: tuple[tuple[str, str], ...] = ()


def _fits(demand: Vector, free: Vector) -> bool:
    return all(demand[d] <= free[d] for d in DIMENSIONS)


def _take(free: Vector, demand: Vector) -> None:
    for d in DIMENSIONS:
        free[d] -= demand[d]


def _pack(pending: list[Pending], model: NodeModel, limit: int
          ) -> tuple[int, list[str], float]:
    """First-fit-decreasing of pending demands onto new nodes of `model`.

    Returns (nodes opened, instances placed, wasted share of cpu+memory on those nodes).
    """
    bins: list[Vector] = []
    placed: list[str] = []
    order = sorted(pending, key=lambda p: (-p.demand["millicores"] - p.demand["memory_mib"],
                                           p.name))
    for item in order:
        if not model.holds(item.demand) or not item.allows(model.name):
            continue
        for free in bins:
            if _fits(item.demand, free):
                _take(free, item.demand)
                placed.append(item.name)
                break
        else:
            if len(bins) >= limit:
                continue
            free = model.capacity
            _take(free, item.demand)
            bins.append(free)
            placed.append(item.name)
    # The Cluster Autoscaler's least-waste: unused share of the new nodes' cpu plus memory.
    waste = (sum(f["millicores"] for f in bins) / (model.millicores * len(bins) or 1)
             + sum(f["memory_mib"] for f in bins) / (model.memory_mib * len(bins) or 1))
    return len(bins), placed, waste


Coming = tuple[tuple[tuple[int, ...], str | None], ...]  # (free, model) of each, in order


@dataclass
class FitMemo:
    """Where a first fit on the coming nodes stood after some pending instances. A create
    that waits plans again for the same pending instances plus itself: when the coming
    nodes are the same and the pending start with `done`, the fit resumes from here."""

    coming: Coming = ()
    kind: str = ""
    low: tuple[int, ...] = ()
    done: list[Pending] = field(default_factory=list)
    bins: list[tuple[list[int], str | None]] = field(default_factory=list)
    still: list[Pending] = field(default_factory=list)


def _not_on_coming(pending: list[Pending], coming_free: list[Vector],
                   coming_models: list[str] | None, kind: str,
                   memo: FitMemo | None = None) -> list[Pending]:
    """The pending instances that do not fit, first fit in order, on the nodes on their way.

    It runs at every create that waits, over up to a few hundred instances, so it works on
    tuples and drops a node once it cannot hold even the smallest pending demand (`low`) in
    some dimension: no instance can take it, so first fit never picks it. With a `memo` it
    resumes the previous fit when that is the same question with instances added at the end
    (first fit places each in order, so the answer is the same as from scratch).
    """
    names = list(coming_models) if coming_models is not None else [None] * len(coming_free)
    coming = tuple(zip(map(_vector, coming_free), names, strict=True))
    memo = memo if memo is not None else FitMemo()
    n = len(memo.done)
    if (memo.coming == coming and memo.kind == kind and pending[:n] == memo.done
            and all(_holds_one(p.vector, memo.low) for p in pending[n:])):
        fresh = pending[n:]
    else:
        fresh = pending
        memo.coming, memo.kind, memo.done, memo.still = coming, kind, [], []
        memo.low = low = tuple(map(min, zip(*(p.vector for p in pending), strict=True)))
        memo.bins = [(list(free), name) for free, name in coming if _holds_one(free, low)]
    _first_fit(fresh, memo.bins, memo.low, kind == "dedicated", memo.still)
    memo.done.extend(fresh)
    return list(memo.still)


def _first_fit(pending: list[Pending], bins: list[tuple[list[int], str | None]],
               low: tuple[int, ...], dedicated: bool, still: list[Pending]) -> None:
    """Take each instance's demand from the first bin that holds it; add to `still` those
    none holds. Bins that can hold no demand of at least `low` are dropped."""
    for item in pending:
        cpu, mem, enis, pods = item.vector
        for k, (free, name) in enumerate(bins):
            if not (cpu <= free[0] and mem <= free[1] and enis <= free[2] and pods <= free[3]
                    and (name is None or item.allows(name))
                    # dedicated: only its own model's node will take it
                    and (not dedicated or None in (name, item.model) or name == item.model)):
                continue
            if dedicated:
                del bins[k]  # a dedicated node hosts one instance
                break
            free[0] -= cpu
            free[1] -= mem
            free[2] -= enis
            free[3] -= pods
            if not _holds_one(free, low):
                del bins[k]
            break
        else:
            still.append(item)


_vector = itemgetter(*DIMENSIONS)  # a demand or a capacity as a tuple


def _holds_one(free: Sequence[int], low: Sequence[int]) -> bool:
    return (free[0] >= low[0] and free[1] >= low[1] and free[2] >= low[2]
            and free[3] >= low[3])


def plan_scale_out(pending: list[Pending], coming_free: list[Vector], models: Sequence[NodeModel],
                   room: int, expander: str, kind: str,
                   coming_models: list[str] | None = None,
                   memo: FitMemo | None = None) -> ScaleOut | None:
    """How many nodes of which model to ask for so that the pending instances fit.

    `coming_free` is the free capacity of nodes already requested and not yet ready (of
    the models `coming_models`, if given: an instance counts only on a node whose group
    its selector allows); `room` is how many more nodes max_nodes allows. Only groups that
    an instance's selector allows are asked for it. `memo`, the same caller's previous
    first fit, only saves work: the answer is the same without it.
    """
    if room <= 0 or not pending:
        return None
    still = _not_on_coming(pending, coming_free, coming_models, kind, memo)
    if not still:
        return None
    if kind == "dedicated":
        model = still[0].model
        group = [p for p in still if p.model == model][:room]
        return ScaleOut(model or "", len(group), tuple(p.name for p in group),
                        f"{len(group)} pending instance(s) need a {model} node each: "
                        + ", ".join(p.name for p in group))
    options = []
    for rank, model in enumerate(models):
        count, placed, waste = _pack(still, model, room)
        if count:
            price = model.price_per_hour * count
            options.append((model, count, placed, waste, price, rank))
    if not options:
        return None
    # Every expander first prefers the option that places the most pending instances.
    keys = {
        "least-waste": lambda o: (-len(o[2]), o[3], o[5]),
        "price": lambda o: (-len(o[2]), o[4], o[3], o[5]),
        "priority": lambda o: (-len(o[2]), -o[0].priority, o[5]),
    }
    model, count, placed, waste, _, _ = min(options, key=keys[expander])
    return ScaleOut(model.name, count, tuple(sorted(placed)),
                    f"{len(placed)} pending instance(s) fit on {count} new {model.name} "
                    f"node(s) (expander {expander}, waste {waste:.2f}): "
                    + ", ".join(sorted(placed)))


def plan_scale_in(nodes: list[NodeUse], now: datetime, threshold: float, unneeded_s: int,
                  min_nodes: int, budget: int) -> ScaleIn:
    """Cordon under-used nodes and terminate empty ones, once unneeded long enough.

    Cordoned nodes are disruptions in flight: with them, at most `budget` nodes are being
    taken away at once; a cordoned node that has emptied is terminated without new budget.
    Held nodes (cordoned by an operator or at start-up) count towards min_nodes only.
    """
    live = len(nodes)
    cordon: list[tuple[str, str]] = []
    terminate: list[tuple[str, str]] = []
    allowance = budget - sum(1 for n in nodes if n.state == "cordoned")
    for node in sorted(nodes, key=lambda n: (n.state != "cordoned", n.utilisation, n.node_id)):
        if node.state == "held":
            continue  # counts as live, but is not the autoscaler's to cordon or terminate
        since = node.unneeded_since
        if since is None or now - since < timedelta(seconds=unneeded_s):
            continue
        if live - len(terminate) - len(cordon) <= min_nodes:
            break
        why = f"under {threshold:.2f} utilisation since {since.isoformat()}"
        if node.instances == 0 and (node.state == "cordoned" or allowance > 0):
            allowance -= node.state != "cordoned"
            terminate.append((node.node_id, f"empty and {why}"))
        elif node.instances and node.state == "ready" and allowance > 0:
            allowance -= 1
            cordon.append((node.node_id, f"utilisation {node.utilisation:.2f}, {why}; cordoned "
                                         "to empty as its instances end"))
    return ScaleIn(tuple(cordon), tuple(terminate))
