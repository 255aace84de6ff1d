"""The ticker: periodic decisions enter the command stream as `Tick{now}` (docs/design.md §2.2).

This is the one place that reads the wall clock. Each tick is an ordinary command on the
commands topic, keyed by its cell, so the engine decides it like any other and a replay of
the log decides it identically. The command id names the cell and the second, so two
tickers (or a restart) firing in the same second yield one effect.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from apscheduler.schedulers.background import BackgroundScheduler

from adapters.kafka_io import KafkaIOError, Publisher

log = logging.getLogger("cis.ticker")

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def tick_command(cell: str, now: datetime) -> dict[str, str]:
    now = now.astimezone(UTC).replace(microsecond=0)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    return {"type": "Tick", "command_id": f"tick:{cell}:{stamp}", "cell": cell,
            "now": now.isoformat()}


class Ticker:
    """Submits a Tick for every owned cell every `interval_s`, from a background thread."""

    def __init__(self, kafka: str, topic: str, cells: Callable[[], Iterable[str]],
                 interval_s: float, clock: Clock = utc_now) -> None:
        self.kafka = kafka
        self.topic = topic
        self.cells = cells
        self.interval_s = interval_s
        self.clock = clock
        self.sent = 0
        self._publisher: Publisher | None = None
        # One job, never overlapping; a tick missed while the broker was down is not
        # worth catching up on: the next one carries a later `now` anyway.
        self._scheduler = BackgroundScheduler(
            timezone=UTC, job_defaults={"coalesce": True, "max_instances": 1,
                                        "misfire_grace_time": max(1, int(interval_s))})

    def start(self) -> None:
        self._scheduler.add_job(self.tick_once, "interval", seconds=self.interval_s,
                                id="tick")
        self._scheduler.start()
        log.info("ticker started", extra={"fields": {"interval_s": self.interval_s}})

    def tick_once(self) -> int:
        """Submit one Tick per owned cell now; returns how many were acknowledged."""
        cells = sorted(self.cells())
        if not cells:
            return 0
        now = self.clock()
        try:
            if self._publisher is None:
                self._publisher = Publisher(self.kafka, client_id="cis-ticker")
            for cell in cells:
                self._publisher.send_command(self.topic, cell, tick_command(cell, now))
            self._publisher.flush(timeout_s=max(self.interval_s, 5.0))
        except KafkaIOError as exc:
            log.warning("tick not submitted", extra={"fields": {
                "error": repr(exc)[:300], "cells": len(cells)}})
            return 0
        self.sent += len(cells)
        log.debug("ticked", extra={"fields": {"cells": len(cells), "now": now.isoformat()}})
        return len(cells)

    def shutdown(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=True)
        if self._publisher is not None:
            self._publisher.close()
