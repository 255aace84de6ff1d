"""A cell's price book: effective-dated versions that are never rewritten."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from engine.domain.base import Recorded
from engine.domain.ids import aggregate_id


class PriceBook(Recorded):
    @staticmethod
    def create_id(cell: str) -> UUID:
        return aggregate_id("price-book", cell)

    class Opened(Aggregate.Created):
        cell: str

    def __init__(self, cell: str) -> None:
        self.cell = cell
        self.versions: list[dict[str, Any]] = []

    class VersionPublished(Aggregate.Event):
        """`terms` holds Decimal rates as strings, `effective_from` as epoch seconds."""

        number: int
        terms: dict[str, Any]

        def apply(self, book: PriceBook) -> None:
            book.versions = [*book.versions, {"number": self.number, **self.terms}]

    def publish(self, terms: dict[str, Any], at: datetime) -> int:
        number = len(self.versions) + 1
        self.trigger_event(self.VersionPublished, number=number, terms=terms, timestamp=at)
        return number
