"""Round-up by the cell's own prices: the billed spec is the cheapest catalogue spec that
covers the request under the price version in force at the command's time (the runtime's
rates if the version has some); ties go to the smaller vCPU, then the smaller memory; the
outcome's note shows the choice."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from adapters.bootstrap import Engine
from engine.policies.spec_catalogue import Spec, SpecChoice, round_up
from tests import builders as b
from tests.helpers import accepted, instance

# 1 vCPU / 3 GiB is covered by both, and neither is smaller in every dimension.
CATALOGUE = [{"vcpu": "2", "memory_gib": "4"}, {"vcpu": "1", "memory_gib": "8"}]
CPU_DEAR = {"rate_per_vcpu_second": "0.001", "rate_per_gib_second": "0.00001"}
MEMORY_DEAR = {"rate_per_vcpu_second": "0.00001", "rate_per_gib_second": "0.001"}
MODELS = [{"name": "8C16G", "millicores": 8000, "memory_mib": 16384}]


def _cell(engine: Engine, **book: Any) -> None:
    accepted(engine, b.price_book(**book), b.networks(),
             b.pool(spec_catalogue=CATALOGUE, node_models=MODELS))


def _billed(engine: Engine, name: str) -> tuple[Decimal, Decimal]:
    found = instance(engine, name)
    return found.billed_vcpu, found.billed_memory_gib


def test_cpu_dear_prices_bill_the_spec_with_fewer_vcpus(engine: Engine) -> None:
    _cell(engine, **CPU_DEAR)
    (out,) = accepted(engine, b.create("x", vcpu="1", memory_gib="3"))
    assert _billed(engine, "x") == (Decimal(1), Decimal(8))
    assert "billed as 1 vCPU / 8 GiB" in (out.note or "")
    # Both specs are on the event the invoice reads.
    found = instance(engine, "x")
    assert (found.requested_vcpu, found.requested_memory_gib) == (Decimal(1), Decimal(3))


def test_memory_dear_prices_bill_the_spec_with_less_memory(engine: Engine) -> None:
    _cell(engine, **MEMORY_DEAR)
    (out,) = accepted(engine, b.create("x", vcpu="1", memory_gib="3"))
    assert _billed(engine, "x") == (Decimal(2), Decimal(4))
    assert "billed as 2 vCPU / 4 GiB" in (out.note or "")


def test_the_version_in_force_at_the_command_decides(engine: Engine) -> None:
    _cell(engine, **CPU_DEAR)
    accepted(engine, b.create("before", t=50, vcpu="1", memory_gib="3"),
             b.price_book(t=100, **MEMORY_DEAR),  # in force from t=100
             b.create("after", t=150, vcpu="1", memory_gib="3"))
    assert _billed(engine, "before") == (Decimal(1), Decimal(8))
    assert _billed(engine, "after") == (Decimal(2), Decimal(4))


def test_runtime_rates_price_their_runtime(engine: Engine) -> None:
    accepted(engine, b.price_book(**CPU_DEAR, runtime_rates={"kata": MEMORY_DEAR}), b.networks(),
             b.pool("kata", kind="shared", spec_catalogue=CATALOGUE, node_models=MODELS),
             b.pool(spec_catalogue=CATALOGUE, node_models=MODELS))
    accepted(engine, b.create("plain", vcpu="1", memory_gib="3"),
             b.create("sandboxed", pool="kata", runtime="kata", vcpu="1", memory_gib="3"))
    assert _billed(engine, "plain") == (Decimal(1), Decimal(8))
    assert _billed(engine, "sandboxed") == (Decimal(2), Decimal(4))


def test_an_exact_spec_has_no_note(engine: Engine) -> None:
    _cell(engine, **CPU_DEAR)
    (out,) = accepted(engine, b.create("x", vcpu="2", memory_gib="4"))
    assert out.note is None or "billed as" not in out.note


def test_ties_go_to_the_smaller_vcpu_then_the_smaller_memory() -> None:
    catalogue = [Spec(Decimal(2), Decimal(2)), Spec(Decimal(1), Decimal(4)),
                 Spec(Decimal(1), Decimal(6))]
    weights = (Decimal(2), Decimal(1))  # 2/2 and 1/4 both cost 6, 1/6 costs 8
    choice = round_up("1", "2", catalogue, weights)
    assert isinstance(choice, SpecChoice) and choice.billed == Spec(Decimal(1), Decimal(4))
    free = round_up("1", "2", catalogue, (Decimal(0), Decimal(0)))  # all cost nothing
    assert isinstance(free, SpecChoice) and free.billed == Spec(Decimal(1), Decimal(4))
