"""A cell's price book: effective-dated versions that are never rewritten."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from engine.domain.base import Recorded
from engine.domain.ids import aggregate_id

if TYPE_CHECKING:
    from engine.billing.price_book import PriceVersion


class PriceBook(Recorded):
    """Its events store each version's terms as the command's JSON (rates as strings);
    its state holds them as typed values with Decimal rates."""

    @staticmethod
    def create_id(cell: str) -> UUID:
        return aggregate_id("price-book", cell)

    class Opened(Aggregate.Created):
        cell: str

    def __init__(self, cell: str) -> None:
        self.cell = cell
        self.versions: tuple[PriceVersion, ...] = ()  # in publishing order

    class VersionPublished(Aggregate.Event):
        """`terms` holds Decimal rates as strings, `effective_from` as epoch seconds."""

        number: int
        terms: dict[str, Any]

        def apply(self, book: PriceBook) -> None:
            # Late: the billing package's meter observes this aggregate's events.
            from engine.billing.price_book import price_version

            book.versions = (*book.versions, price_version({"number": self.number,
                                                            **self.terms}))

    def publish(self, terms: dict[str, Any], at: datetime) -> int:
        number = len(self.versions) + 1
        self.trigger_event(self.VersionPublished, number=number, terms=terms, timestamp=at)
        return number
