"""The event-sourced application: a process recorder (events + tracking) and reads of its log."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any, Protocol

from eventsourcing.application import Application
from eventsourcing.persistence import ProcessRecorder, Tracking, Transcoder

from engine import chain
from engine.transcoder import OrjsonTranscoder

READ_PAGE = 5000


class ChainedRecorder(Protocol):
    """A recorder that stores each event's chain link with it (adapters/chain_recorders.py,
    adapters/pg_recorder.py)."""

    def chain_heads(self, cells: Collection[str], after: int = 0) -> dict[str, bytes]: ...
    def chain_end(self) -> int: ...
    def select_chained(self, after: int, stop: int) -> list[chain.Row]: ...
    def link_of(self, originator_id: Any, version: int) -> bytes | None: ...


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

    @property
    def chained_recorder(self) -> ChainedRecorder:
        return self.recorder  # type: ignore[return-value]

    def record(self, events: list[Any], tracking: Tracking | None,
               cells: Sequence[str] | None = None, heads: Mapping[str, bytes] | None = None
               ) -> tuple[Sequence[int], dict[str, bytes]]:
        """Store events, each one's chain link (the cell of each in `cells`, after the cells'
        `heads`) and the position they came from in one transaction; answers the
        notification id each event was stored at, and the cells' new heads. Without
        `cells`, no links (benches only)."""
        # Encoded here, not in `events.put`: the links hash the very bytes that are stored.
        stored = [self.mapper.to_stored_event(e) for e in events]
        links, new_heads = ([], {}) if cells is None else chain.extend(heads or {}, cells,
                                                                       stored)
        ids = self.recorder.insert_events(stored, tracking=tracking,
                                          chain=list(zip(cells or (), links, strict=True)))
        if len(ids or ()) != len(stored):
            raise RuntimeError("the store numbered a different count of events than given")
        return ids or [], new_heads

    def chain_heads(self, cells: Collection[str], after: int = 0) -> dict[str, bytes]:
        """Each of these cells' newest stored link after notification `after`."""
        return self.chained_recorder.chain_heads(cells, after)

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
