"""The projection worker: another consumer of the event log, beside the writer.

Row projections (instances, usage, invoices) and their position commit together, so the
worker can stop or die at any moment and resume where its rows end. `cis serve` runs it as
a child process (its own core: projecting costs about as much as deciding), and
`cis project` runs it alone, e.g. on another machine against the same PostgreSQL.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from multiprocessing.synchronize import Event as EventType

from adapters.bootstrap import Engine, connect, tune_gc
from adapters.stores import STORE_DOWN

log = logging.getLogger("cis.projector")


def follow(store: str, stop: EventType, interval_s: float = 0.5, max_backoff_s: float = 10.0,
           parent: int | None = None) -> int:
    """Keep the projections current until `stop` is set (then catch up once more and return)
    or until process `parent` is gone. Returns the number of events projected."""
    total, delay = 0, interval_s
    engine: Engine | None = None
    try:
        while True:
            stopping = stop.is_set() or (parent is not None and os.getppid() != parent)
            try:
                if engine is None:
                    engine = connect(store)
                done = engine.update_projections()
            except STORE_DOWN as exc:
                log.warning("store unavailable; retrying", extra={"fields": {
                    "retry_in_s": round(delay, 2), "error": repr(exc)[:300]}})
                if stopping:
                    return total
                stop.wait(delay)
                delay = min(delay * 2, max_backoff_s)
                continue
            delay = interval_s
            total += done
            if stopping:
                return total
            if done == 0:  # caught up: wait for more (a batch's worth arrives per interval)
                stop.wait(interval_s)
    finally:
        if engine is not None:
            engine.close()


def _child(store: str, stop: EventType, interval_s: float, parent: int, log_level: str) -> None:
    from adapters.cli_kafka import setup_logging

    setup_logging(log_level)
    tune_gc()
    began = time.monotonic()
    total = follow(store, stop, interval_s, parent=parent)
    log.info("projector stopped", extra={"fields": {
        "events": total, "seconds": round(time.monotonic() - began, 1)}})


class ProjectorProcess:
    """`follow` in a child process that stops with its parent."""

    def __init__(self, store: str, interval_s: float = 0.5, log_level: str = "info") -> None:
        ctx = multiprocessing.get_context("spawn")  # no inherited sockets or threads
        self._stop = ctx.Event()
        self.process = ctx.Process(
            target=_child, args=(store, self._stop, interval_s, os.getpid(), log_level),
            name="cis-projector", daemon=True)

    def start(self) -> None:
        self.process.start()

    def stop(self, timeout_s: float = 60.0) -> int | None:
        """Ask for a last catch-up and wait for it; returns the exit code."""
        self._stop.set()
        self.process.join(timeout_s)
        if self.process.is_alive():  # rows and position commit together: safe to cut short
            log.warning("projector did not stop in time; terminating",
                        extra={"fields": {"timeout_s": timeout_s}})
            self.process.terminate()
            self.process.join(5)
        return self.process.exitcode
