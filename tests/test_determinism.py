"""Decisions are a function of (state, command) alone: the same commands in the same order
give byte-equal outcomes and events whether the writer ran once or restarted between
commands, and no command's spelling leaks into another's answer."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from adapters.bootstrap import Engine, connect
from simulations.workloads import simulate
from tests import builders as b
from tests.helpers import accepted, one


def _domain_events(engine: Engine) -> list[tuple[str, int, str, bytes]]:
    """Every stored event but the command log's (one per batch: batching is not a decision)."""
    rows = engine.app.recorder.select_notifications(start=1, limit=10**9)
    return [(str(n.originator_id), n.originator_version, n.topic, n.state) for n in rows
            if "CellLog" not in n.topic]


def _recording(engine: Engine) -> list[str]:
    """Wrap `engine.apply` to keep every raw command the harness sends, in order."""
    seen: list[str] = []
    apply = engine.apply

    def record(items: Sequence[Any], *args: Any, **kwargs: Any) -> Any:
        seen.extend(items)
        return apply(items, *args, **kwargs)

    engine.apply = record  # type: ignore[method-assign]
    return seen


def test_a_restart_after_every_command_decides_the_same(store_url: str) -> None:
    with connect("memory://") as first:
        commands = _recording(first)
        simulate(first, 16, seed=3, hours=8, tick_every_s=600)
        expected_events = _domain_events(first)
    assert len(commands) > 50 and expected_events
    with connect("memory://") as once:
        in_one_run = [o.to_json() for o in once.apply(commands)]
    with connect(store_url) as restarted:
        one_by_one = []
        for command in commands:
            restarted.processor.forget()  # what a restarted writer knows: only the store
            one_by_one += [o.to_json() for o in restarted.apply([command])]
        assert one_by_one == in_one_run
        assert _domain_events(restarted) == expected_events


def test_a_tick_expires_waiting_instances_in_the_same_order_after_a_restart(
        store_url: str) -> None:
    # Ticks touch every pool's waiting list in name order; after a restart the lists are
    # rebuilt in the order instances named their pools. The expiry order must not care.
    commands = [json.dumps(c) for c in (
        b.price_book(), b.networks(), b.pool("alpha", max_nodes=0, pending_timeout_seconds=60),
        b.pool("beta", max_nodes=0, pending_timeout_seconds=60), b.tick(1),
        b.create("late", 2, pool="beta"), b.create("early", 3, pool="alpha"))]
    expire = json.dumps(b.tick(100))
    with connect("memory://") as once:
        once.apply(commands)
        expected = once.apply([expire])[0]
    with connect(store_url) as restarted:
        restarted.apply(commands)
        restarted.processor.forget()
        got = restarted.apply([expire])[0]
    assert "expired 2" in (expected.note or "")
    assert got.events == expected.events


def test_a_rejection_names_the_commands_own_spelling(engine: Engine) -> None:
    accepted(engine, b.price_book(), b.networks(), b.pool())
    first = one(engine, b.create("a", vcpu="49.0"))
    second = one(engine, b.create("b", vcpu="49"))
    assert first.status == second.status == "rejected"
    with connect("memory://") as fresh:
        accepted(fresh, b.price_book(), b.networks(), b.pool())
        alone = one(fresh, json.loads(json.dumps(b.create("b", vcpu="49"))))
    # The same command alone in a fresh writer gets the same reasons, word for word.
    assert [r.problem for r in second.reasons] == [r.problem for r in alone.reasons]
