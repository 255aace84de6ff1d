"""Our aggregates' own create and trigger_event (engine/domain/base.py) make the very events
and state the library's generic ones make; aggregate ids are uuid5, computed faster."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import uuid5

import pytest
from eventsourcing.domain import Aggregate
from hypothesis import given
from hypothesis import strategies as st

from engine.domain.account import Account
from engine.domain.base import Recorded, _Creation
from engine.domain.cell_log import CellLog
from engine.domain.ids import NAMESPACE, aggregate_id
from engine.domain.instance import Instance
from engine.domain.node import Node
from engine.domain.pool import Pool
from engine.domain.price_book import PriceBook

AT = datetime(2026, 1, 15, tzinfo=UTC)
LATER = datetime(2026, 1, 15, 0, 5, tzinfo=UTC)
CREATES: list[tuple[type[Recorded], dict[str, Any]]] = [
    (Instance, dict(cell="az-1", name="web-1", account="acme", pool="kata",
                    containers=[{"name": "main", "image": "nginx", "vcpu": "0.5"}],
                    restart_policy="Always", runtime="kata", network={"vpc": "v"},
                    node_selector={"tier": "a"}, requested_vcpu=Decimal("0.50"),
                    requested_memory_gib=Decimal("1"), billed_vcpu=Decimal("0.5"),
                    billed_memory_gib=Decimal("1"), demand={"millicores": 750})),
    (Node, dict(cell="az-1", node_id="kata-00001", pool="kata", model="16C64G",
                capacity={"millicores": 16000}, labels={"tier": "a"}, reason="min_nodes")),
    (Pool, dict(cell="az-1", pool="kata", config={
        "kind": "shared", "node_models": [{"name": "16C64G", "millicores": 16000,
                                           "memory_mib": 65536}],
        "spec_catalogue": [{"vcpu": "1", "memory_gib": "2"}]})),
    (PriceBook, dict(cell="az-1")),
    (CellLog, dict(cell="az-1")),
    (Account, dict(cell="az-1", account="acme")),
]


def _library_create(cls: type[Recorded], **kwargs: Any) -> Recorded:
    return cls._create(_Creation.of(cls).created, timestamp=AT, **kwargs)


def _state(aggregate: Any) -> tuple[dict[str, Any], list[tuple[type, dict[str, Any]]]]:
    events = [(type(e), dict(vars(e))) for e in aggregate.collect_events()]
    return dict(vars(aggregate)), events


def test_create_makes_what_the_library_makes() -> None:
    for cls, kwargs in CREATES:
        assert _state(cls.create(AT, **kwargs)) == _state(_library_create(cls, **kwargs)), cls


def test_trigger_event_makes_what_the_library_makes() -> None:
    ours = Instance.create(AT, **CREATES[0][1])
    theirs = _library_create(Instance, **CREATES[0][1])
    for instance in (ours, theirs):
        instance.collect_events()
    ours.schedule("kata-00001", "best_fit", 0.25, LATER, attachment={"eni_index": 1})
    ours.sequenced(3, LATER)
    for event_class, kwargs in ((Instance.Scheduled, dict(
            node_id="kata-00001", policy="best_fit", score=0.25, attachment={"eni_index": 1})),
            (Instance.Sequenced, dict(sequence=3))):
        Aggregate.trigger_event(theirs, event_class, timestamp=LATER, **kwargs)
    assert _state(ours) == _state(theirs)


@given(st.text(max_size=30), st.lists(st.text(max_size=30), max_size=3))
def test_aggregate_ids_are_uuid5(kind: str, parts: list[str]) -> None:
    try:
        expected = uuid5(NAMESPACE, ":".join((kind, *parts)))
    except UnicodeEncodeError:  # a lone surrogate: neither encodes it
        with pytest.raises(UnicodeEncodeError):
            aggregate_id(kind, *parts)
        return
    assert aggregate_id(kind, *parts) == expected
