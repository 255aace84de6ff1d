"""The command log of a cell: every handled command's outcome, one event per batch.

It makes commands idempotent (a repeated `command_id` answers its recorded outcome), and it
fences writers: two processes that both believe they own a cell collide on this aggregate's
version, so one batch fails whole instead of double-booking a node.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from engine.domain.base import Recorded
from engine.domain.ids import aggregate_id


class CellLog(Recorded):
    @staticmethod
    def create_id(cell: str) -> UUID:
        return aggregate_id("cell-log", cell)

    class Opened(Aggregate.Created):
        cell: str

    def __init__(self, cell: str) -> None:
        self.cell = cell

    class CommandsHandled(Aggregate.Event):
        outcomes: list[dict[str, Any]]

        def apply(self, log: CellLog) -> None:
            pass  # outcomes are indexed by the world, not kept on the aggregate

    def record(self, outcomes: list[dict[str, Any]], at: datetime) -> None:
        self.trigger_event(self.CommandsHandled, outcomes=outcomes, timestamp=at)
