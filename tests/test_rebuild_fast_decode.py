"""Issue 12 item 7: the rebuild decodes stored events itself (projections/decode.py), and
must give exactly the mapper's events, and fall back to the mapper when it cannot."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest
from eventsourcing.persistence import MapperDeserialisationError, StoredEvent

from adapters.bootstrap import Engine
from projections.decode import decoder
from tests.helpers import simulate


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and vars(a) == vars(b)


def test_every_stored_event_decodes_as_the_mapper_decodes_it(engine: Engine) -> None:
    simulate(engine, 20, seed=4, hours=10)
    engine.update_projections()
    mapper = engine.app.mapper
    decode = decoder(mapper)
    assert decode != mapper.to_domain_event  # the fast path, not the mapper
    stored = engine.app.recorder.select_notifications(start=1, limit=10**6)
    assert len(stored) > 100
    for n in stored:
        assert _same(decode(n), mapper.to_domain_event(n)), n.topic


def test_nested_typed_values_and_bad_bytes_go_to_the_mapper(engine: Engine) -> None:
    simulate(engine, 2, seed=1, hours=1)
    mapper = engine.app.mapper
    decode = decoder(mapper)
    n = engine.app.recorder.select_notifications(start=1, limit=1)[0]
    state = orjson.loads(n.state)
    state["nested"] = {"at": {"_type_": "datetime_iso", "_data_": "2026-01-01T00:00:00+00:00"},
                       "amounts": [{"_type_": "decimal_str", "_data_": "1.50"}]}
    nested = StoredEvent(n.originator_id, n.originator_version, n.topic,
                         orjson.dumps(state))
    event = decode(nested)
    assert _same(event, mapper.to_domain_event(nested))
    assert isinstance(event.nested["at"], datetime)
    assert event.nested["amounts"] == [Decimal("1.50")]
    broken = StoredEvent(n.originator_id, n.originator_version, n.topic, b"{not json")
    with pytest.raises(MapperDeserialisationError):
        decode(broken)
