"""A rebuild decodes only the kinds of event some projection reads (the cell logs' outcomes
and the instances' report sequence numbers are most of a busy log, and no read model shows
them), yet every projection's position still reaches the end of the log."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.bootstrap import Engine
from engine.domain.cell_log import CellLog
from engine.domain.instance import Instance
from projections import runner
from projections.runner import position
from tests.helpers import simulate


def test_a_rebuild_skips_unread_kinds_and_every_position_reaches_the_end(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    simulate(engine, 20, seed=4, hours=10)
    engine.update_projections()
    before = {t.name: engine.view.select(t) for p in engine.projections for t in p.tables}
    decoded: list[Any] = []
    decode = engine.app.mapper.to_domain_event

    def counting(stored: Any) -> Any:
        decoded.append(event := decode(stored))
        return event

    monkeypatch.setattr(engine.app.mapper, "to_domain_event", counting)
    monkeypatch.setattr(runner, "PAGE", 50)
    engine.rebuild_projections()
    assert decoded and not any(isinstance(e, CellLog.CommandsHandled | Instance.Sequenced)
                               for e in decoded)
    end = engine.app.recorder.max_notification_id()
    assert all(position(engine.view, p) == end for p in engine.projections)
    assert {t.name: engine.view.select(t) for p in engine.projections
            for t in p.tables} == before
