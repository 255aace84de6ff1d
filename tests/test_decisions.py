"""Handlers are `decide(draft, command) -> Decision` (engine/decision.py): a refusal is a
value carrying every reason, and a handler's bug is data the processor acts on (that command
rejected, the rest of the batch decided again), never an exception across it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from adapters.bootstrap import Engine, connect
from engine import handlers
from engine.decision import Accepted, Draft, Refused
from schemas import commands as c
from schemas.outcomes import parse_command
from tests import builders as b
from tests.helpers import accepted, run
from tests.test_determinism import _domain_events


def _command(raw: dict[str, Any]) -> Any:
    return parse_command(json.dumps(raw))


def test_a_refusal_is_a_value_with_every_reason(engine: Engine) -> None:
    accepted(engine, b.price_book(), b.networks(), b.pool())
    world = engine.processor.world
    draft = Draft(world)
    decision = handlers.HANDLERS[c.StopInstance](draft, _command(b.tenant("StopInstance", "x",
                                                                         1)))
    assert isinstance(decision, Refused) and decision.reasons[0]["field"] == "instance_id"
    assert draft.events == []
    create = _command(b.create("big", vcpu="32", memory_gib="128"))
    refused = handlers.HANDLERS[c.CreateInstance](Draft(world), create)
    assert isinstance(refused, Refused)
    assert {r["field"] for r in refused.reasons} == {"containers"}
    assert len(refused.reasons) >= 2  # both dimensions, not only the first


def test_an_accepted_decision_carries_its_events(engine: Engine) -> None:
    accepted(engine, b.price_book(), b.networks(), b.pool())
    draft = Draft(engine.processor.world)
    decision = handlers.HANDLERS[c.CreateInstance](draft, _command(b.create("a")))
    assert isinstance(decision, Accepted)
    assert decision.events and len(decision.events) == len(decision.event_ids)
    assert decision.event_ids[0] == "instance/a#1"


@pytest.mark.parametrize("how", ["raises", "refuses after recording"])
def test_a_handlers_bug_rejects_its_command_and_the_batch_goes_on(
        store_url: str, how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    create = handlers.HANDLERS[c.CreateInstance]

    def buggy(draft: Draft, cmd: c.CreateInstance) -> Any:
        if cmd.instance_id != "boom":
            return create(draft, cmd)
        if how == "raises":
            raise ZeroDivisionError("a bug")
        create(draft, cmd)  # records events, then refuses: a bug too
        return Refused(({"field": "$", "problem": "changed its mind"},))

    setup = [b.price_book(), b.networks(), b.pool()]
    batch = [b.create("a", 2), b.create("boom", 3), b.create("c", 4)]
    with connect("memory://") as clean:
        accepted(clean, *setup, batch[0], batch[2])
        expected = _domain_events(clean)
    monkeypatch.setitem(handlers.HANDLERS, c.CreateInstance, buggy)
    with connect(store_url) as engine:
        accepted(engine, *setup)
        a, boom, c_ = run(engine, *batch)
        assert (a.status, c_.status) == ("accepted", "accepted")
        assert boom.status == "rejected" and "internal error" in boom.reasons[0].problem
        assert _domain_events(engine) == expected
