"""Log consumers (projections, the outbox) in child processes that stop with their parent.

`cis serve` runs each on its own core. A worker is a module-level `follow(…, stop)` that
keeps going until `stop` is set, then does a last round and returns; everything it stores
commits with its position, so being cut short is safe.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from multiprocessing.synchronize import Event as EventType
from threading import Event
from typing import Any

log = logging.getLogger("cis.workers")


def keep_following(step: Callable[[], int], reset: Callable[[], None],
                   stop: Event | EventType, interval_s: float,
                   outages: tuple[type[BaseException], ...], logger: logging.Logger,
                   max_backoff_s: float = 10.0) -> int:
    """`step()` (the work it did; 0 = caught up) until `stop` is set, then once more.
    An outage is logged, `reset()` drops what the failed step held, and the step is retried
    with back-off. Returns the work done."""
    total, delay = 0, interval_s
    while True:
        stopping = stop.is_set()
        try:
            done = step()
        except outages as exc:
            logger.warning("store or broker unavailable; retrying", extra={"fields": {
                "retry_in_s": round(delay, 2), "error": repr(exc)[:300]}})
            reset()
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


def _child(target: str, args: tuple[Any, ...], stop: EventType, parent: int,
           log_level: str, name: str) -> None:
    from adapters.bootstrap import tune_gc
    from adapters.cli_kafka import setup_logging

    setup_logging(log_level)
    tune_gc()

    def orphaned() -> None:  # the parent died without asking us to stop
        while not stop.wait(1.0):
            if os.getppid() != parent:
                stop.set()

    threading.Thread(target=orphaned, name=f"{name}-parent-watch", daemon=True).start()
    module, function = target.split(":")
    began = time.monotonic()
    done = getattr(importlib.import_module(module), function)(*args, stop)
    logging.getLogger(f"cis.{name}").info(f"{name} stopped", extra={"fields": {
        "done": done, "seconds": round(time.monotonic() - began, 1)}})


class WorkerProcess:
    """`target(*args, stop)` ("module:function") in a child process."""

    def __init__(self, name: str, target: str, args: tuple[Any, ...],
                 log_level: str = "info") -> None:
        ctx = multiprocessing.get_context("spawn")  # no inherited sockets or threads
        self._stop = ctx.Event()
        self.name = name
        self.process = ctx.Process(
            target=_child, args=(target, args, self._stop, os.getpid(), log_level, name),
            name=f"cis-{name}", daemon=True)

    def start(self) -> None:
        self.process.start()

    def ask_to_stop(self) -> None:
        self._stop.set()

    def stop(self, timeout_s: float = 60.0) -> int | None:
        """Ask for a last round and wait for it; returns the exit code."""
        self._stop.set()
        self.process.join(timeout_s)
        if self.process.is_alive():
            log.warning(f"{self.name} did not stop in time; terminating",
                        extra={"fields": {"timeout_s": timeout_s}})
            self.process.terminate()
            self.process.join(5)
        return self.process.exitcode
