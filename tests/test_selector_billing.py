"""A dedicated pool bills the VM a node selector forces (hostile-probe finding 02): the
billed spec is the cheapest covering spec that takes the selected model without a selector,
so a `{"model": "4C8G"}` create is billed like a spec that needs a 4C8G node, the quota
counts that, a selector naming the round-up's own model bills as before, and a model no
catalogue spec takes is refused with `selector_model_unbillable` (docs/design.md §3.3)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from adapters.bootstrap import Engine
from engine.domain.instance import Instance
from engine.domain.node import Node
from tests import builders as b
from tests.helpers import accepted, instance, one

# runc adds 15 MiB to each spec: 0.5/1 takes a 1C2G node, 1/2 a 2C4G, 2/4 a 4C8G.


def _bought(engine: Engine) -> list[str]:
    return sorted(a.model for a in engine.processor.world.aggregates.values()
                  if isinstance(a, Node))


def _billed(engine: Engine, name: str) -> tuple[Decimal, Decimal]:
    found = instance(engine, name)
    return (found.billed_vcpu, found.billed_memory_gib)


def _created(engine: Engine, name: str) -> Any:
    (event,) = [e for _, e in engine.app.read()
                if isinstance(e, Instance.Requested) and e.name == name]
    return event


def test_a_selected_larger_model_is_billed_as_a_spec_that_takes_it(engine: Engine) -> None:
    accepted(engine, b.price_book(), b.networks(), b.pool())
    (outcome,) = accepted(engine, b.create("big", node_selector={"model": "4C8G"}))
    assert _bought(engine) == ["4C8G"]
    assert _billed(engine, "big") == (Decimal("2"), Decimal("4"))
    event = _created(engine, "big")  # both specs on the event, and in the note
    assert (event.requested_vcpu, event.requested_memory_gib) == (Decimal("0.5"), Decimal(1))
    assert (event.billed_vcpu, event.billed_memory_gib) == (Decimal("2"), Decimal("4"))
    assert outcome.note is not None
    assert "billed as 2 vCPU / 4 GiB (asked 0.5 vCPU / 1 GiB" in outcome.note
    assert "4C8G" in outcome.note


def test_a_selector_naming_the_round_ups_model_bills_as_before(engine: Engine) -> None:
    accepted(engine, b.price_book(), b.networks(), b.pool(labels={"tier": "gold"}))
    (outcome,) = accepted(engine, b.create("a", node_selector={"model": "1C2G"}),
                          b.create("b", node_selector={"tier": "gold"}),
                          b.create("c", vcpu="1", memory_gib="2",
                                   node_selector={"model": "2C4G"}))[:1]
    assert _billed(engine, "a") == _billed(engine, "b") == (Decimal("0.5"), Decimal(1))
    assert _billed(engine, "c") == (Decimal(1), Decimal(2))
    assert outcome.note is None or "billed as" not in outcome.note


def test_the_quota_counts_the_raised_billed_vcpu(engine: Engine) -> None:
    quota = {"type": "SetAccountQuota", "command_id": b.cid("quota"), "cell": b.CELL,
             "issued_at": b.at(0), "account": b.ACCOUNT, "vcpu": "3"}
    accepted(engine, b.price_book(), b.networks(), b.pool(), quota)
    accepted(engine, b.create("a", node_selector={"model": "4C8G"}))  # 2 of 3 vCPU
    refused = one(engine, b.create("b", 2, node_selector={"model": "4C8G"}))
    assert [r.code for r in refused.reasons] == ["quota_exceeded"]
    accepted(engine, b.create("c", 3))  # 0.5 more fits


def test_a_model_no_catalogue_spec_takes_is_refused(engine: Engine) -> None:
    small = [{"vcpu": "0.5", "memory_gib": "1"}, {"vcpu": "1", "memory_gib": "2"}]
    accepted(engine, b.price_book(), b.networks(), b.pool(spec_catalogue=small))
    refused = one(engine, b.create("big", node_selector={"model": "4C8G"}))
    assert refused.status == "rejected"
    (why,) = refused.reasons
    assert (why.field, why.code) == ("node_selector", "selector_model_unbillable")
    assert "4C8G" in why.problem and "1 vCPU / 2 GiB" in why.problem
    assert _bought(engine) == []
    # The same selector in a shared pool only restricts nodes: billed as asked.
    accepted(engine, b.pool("kata", kind="shared", spec_catalogue=small, t=2))
    accepted(engine, b.create("s", 3, pool="kata", node_selector={"model": "4C8G"}))
    assert _billed(engine, "s") == (Decimal("0.5"), Decimal(1))
