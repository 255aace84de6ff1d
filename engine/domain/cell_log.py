"""The command log of a cell: every handled command's outcome, one event per batch.

Each entry also keeps the command it was decided from (`kept_command`), so the decisions can
be re-run from the log and compared with what was recorded (`cis audit replay`). Entries
recorded before commands were kept have no `command`: those batches cannot be re-run.

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
from schemas.commands import CommandBase


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


def kept_command(command: CommandBase) -> dict[str, Any]:
    """The command as decided from (before the processor backdates anything), as kept in its
    entry: its JSON form without defaults, which `parse_command` reads back to an equal
    command. Defaults left out keep every cell-log event small."""
    return {"type": command.type, **command.model_dump(mode="json", exclude_defaults=True)}
