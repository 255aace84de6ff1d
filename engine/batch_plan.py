"""Batch placement in the engine: plan a poll batch's creates together, then hand each create
its planned node as a hint when its handler places it.

Commands are still decided one by one, in order, each with its own outcome; only the choice
of node changes. Before the batch runs, the creates that would be placed in a shared
best-fit pool (no node selector) are grouped per pool, cut into windows of up to K in command
order, and given to `policies.batch.plan_window` on the pool's index as it stands before
the batch (later windows of a pool see the earlier windows' plans). While a create is handled,
its pool carries the hint; `PoolPlacement.choose` takes it if the node is still eligible and
still has room for the very same demand, and otherwise decides as always (a command earlier in
the batch may have changed things: a stop, a cordon, a rejected create's unused plan).

The tradeoff: with K > 1 a create's node depends on the later creates of its batch, so the
decision is a function of the batch, not of the command alone. Batches are the recorded unit
(one transaction, one cell-log entry), a retried batch is decided again from the same state,
and replay applies the recorded `Scheduled` events, so the log stays the truth. Re-polling
the same commands in *other* batch boundaries (after a crash before commit) may place them
differently; both results are valid placements and only the committed one exists.

The demand is derived here as the create handler derives it; if the two ever disagree, the
hint's demand does not match and the create is simply placed one by one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from engine.policies.batch import plan_window
from engine.policies.demand import DIMENSIONS
from engine.world import World
from schemas.commands import CommandBase, CreateInstance

log = logging.getLogger(__name__)

Hint = tuple[tuple[str, str], int, tuple[int, ...]]  # (cell, pool), node index, demand


def _demand(world: World, cmd: CreateInstance) -> tuple[int, ...] | None:
    """The create's demand as its handler will compute it, if it is a batch candidate."""
    from engine import handlers  # late: handlers import the world this module is used with

    pool = world.pool(cmd.cell, cmd.pool)
    if pool is None or pool.config.kind != "shared" or cmd.node_selector:
        return None
    if pool.config.placement_policy != "best_fit":
        return None  # the window policy is best-fit-decreasing
    version = handlers.in_force(world.price_book(cmd.cell), cmd.issued_at)
    if version is None:
        return None
    _, _, demand = handlers.size(pool, cmd, version)
    if demand is None:
        return None
    return tuple(demand[d] for d in DIMENSIONS)


def plan_batch(world: World, commands: Sequence[tuple[int, CommandBase]], window: int
               ) -> dict[int, Hint]:
    """Planned nodes for the batch's creates, by position in the batch (K = `window`)."""
    if window <= 1:
        return {}
    by_pool: dict[tuple[str, str], list[tuple[int, tuple[int, ...]]]] = {}
    seen: set[tuple[str, str, str]] = set()
    for position, cmd in commands:
        if not isinstance(cmd, CreateInstance):
            continue
        once = (cmd.cell, cmd.principal, cmd.command_id)
        if once in seen:
            # A repeat within the batch is answered, never placed, and never recorded: a
            # plan for it would move its neighbours' nodes in a way the log cannot replay.
            continue
        seen.add(once)
        try:
            demand = _demand(world, cmd)
        except Exception:  # never let planning break a batch: that create goes one by one
            log.exception("batch placement: no demand for command %d", position)
            demand = None
        if demand is not None:
            by_pool.setdefault((cmd.cell, cmd.pool), []).append((position, demand))
    hints: dict[int, Hint] = {}
    for key, creates in by_pool.items():
        placement = world.placements.get(key)
        if placement is None or len(creates) < 2:
            continue
        index = placement.index
        planned: list[tuple[int, list[int]]] = []
        try:
            for lo in range(0, len(creates), window):
                part = creates[lo : lo + window]
                plan = plan_window(index, [list(d) for _, d in part])
                for (position, demand), node in zip(part, plan.nodes, strict=True):
                    if node is None:
                        continue
                    hints[position] = (key, node, demand)
                    index.allocate(node, demand)  # the next window sees this one's plan
                    planned.append((node, list(demand)))
        finally:
            for node, demand in reversed(planned):
                index.release(node, demand)
    return hints


def arm(world: World, hint: Hint | None) -> Any:
    """Give the hint to its pool for the next placement (None: nothing to arm)."""
    if hint is None:
        return None
    placement = world.placements.get(hint[0])
    if placement is not None:
        placement.hint = (hint[1], hint[2])
    return placement


def disarm(placement: Any) -> None:
    if placement is not None:
        placement.hint = None
