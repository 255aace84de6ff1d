"""The event-sourced application: a process recorder (events + tracking) and reads of its log."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from eventsourcing.application import Application, ProcessingEvent, Recording
from eventsourcing.persistence import ProcessRecorder, Tracking, Transcoder

from engine.transcoder import OrjsonTranscoder

READ_PAGE = 5000


class CisApplication(Application):
    name = "cis"

    def construct_transcoder(self) -> Transcoder:
        transcoder = OrjsonTranscoder()
        self.register_transcodings(transcoder)
        return transcoder

    def construct_recorder(self) -> ProcessRecorder:
        # A process recorder stores a tracking row atomically with the events it caused.
        return self.factory.process_recorder()

    @property
    def process_recorder(self) -> ProcessRecorder:
        assert isinstance(self.recorder, ProcessRecorder)
        return self.recorder

    def record(self, events: list[Any], tracking: Tracking | None) -> list[Recording[Any]]:
        """Store events and the position they came from in one transaction; answers where
        each event was stored."""
        processing = ProcessingEvent(tracking=tracking)
        # Our events are known to be domain events: skip collect_events' per-object
        # isinstance check against a runtime Protocol (slow at thousands per batch).
        processing.events = list(events)
        return self._record(processing)

    def page(self, after: int, limit: int = READ_PAGE, topics: Sequence[str] = (),
             stop: int | None = None) -> list[tuple[int, Any]]:
        """Up to `limit` stored events after notification `after` (up to `stop`, of the
        given `topics` only if any are given), as (id, event)."""
        notifications = self.recorder.select_notifications(start=after + 1, limit=limit,
                                                           stop=stop, topics=topics)
        return [(n.id, self.mapper.to_domain_event(n)) for n in notifications]

    def read(self, after: int = 0, topics: Sequence[str] = ()) -> Iterator[tuple[int, Any]]:
        """Every stored event after notification `after` (of `topics` only, if any are
        given), in log order."""
        while page := self.page(after, topics=topics):
            yield from page
            after = page[-1][0]
