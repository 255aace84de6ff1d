"""Events encoded by orjson are byte for byte what the library's JSON transcoder writes."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from eventsourcing.application import Application
from eventsourcing.persistence import JSONTranscoder

from adapters.bootstrap import connect
from engine.transcoder import OrjsonTranscoder
from simulations import workloads
from simulations.harness import Harness


def _library_transcoder() -> JSONTranscoder:
    transcoder = JSONTranscoder()
    Application.register_transcodings(None, transcoder)  # type: ignore[arg-type]
    return transcoder


def test_every_event_of_a_simulated_month_encodes_like_the_library() -> None:
    library = _library_transcoder()
    start = workloads.DAY_START
    with connect("memory://") as engine:
        assert isinstance(engine.app.mapper.transcoder, OrjsonTranscoder)
        creates, plans = workloads.tenants(60, seed=3)
        harness = Harness(engine, plans=plans)
        for command in workloads.setup():
            harness.submit(start, command)
        month_end = start.replace(day=1, month=start.month + 1)
        for at, command in [*creates, *workloads.ticks(start, 24, every_s=600),
                            *workloads.ticks(month_end, 3, every_s=3600)]:
            harness.submit(at, command)
        harness.run(until=month_end + timedelta(hours=3))
        stored = engine.app.recorder.select_notifications(start=1, limit=1_000_000)
    topics = {n.topic.rsplit(".", 1)[-1] for n in stored}
    assert {"Requested", "Scheduled", "InvoiceFinalized"} <= topics, topics
    for notification in stored:
        assert library.encode(library.decode(notification.state)) == notification.state


def test_types_the_library_transcodes_are_written_its_way() -> None:
    ours, library = OrjsonTranscoder(), _library_transcoder()
    Application.register_transcodings(None, ours)  # type: ignore[arg-type]
    value = {"at": workloads.DAY_START, "price": Decimal("0.000011244"), "text": "naïve ✓",
             "nested": [{"n": 1, "f": 0.25, "none": None, "flag": True}], "tuple": (1, 2)}
    assert ours.encode(value) == library.encode(value)
    assert ours.decode(ours.encode(value)) == library.decode(library.encode(value))


def test_every_event_of_a_simulated_day_decodes_like_the_library() -> None:
    library = _library_transcoder()
    with connect("memory://") as engine:
        workloads.simulate(engine, 20, seed=4, hours=6, tick_every_s=600)
        ours = engine.app.mapper.transcoder
        stored = engine.app.recorder.select_notifications(start=1, limit=10**6)
        assert stored
        for n in stored:
            assert ours.decode(n.state) == library.decode(n.state)
