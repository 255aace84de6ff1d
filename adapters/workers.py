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
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from threading import Event
from typing import Any

log = logging.getLogger("cis.workers")


def keep_following(step: Callable[[], int], reset: Callable[[], None],
                   stop: Event, interval_s: float,
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


def _child(target: str, args: tuple[Any, ...], orders: Connection, log_level: str,
           name: str) -> None:
    from adapters.bootstrap import tune_gc
    from adapters.cli_kafka import setup_logging

    setup_logging(log_level)
    tune_gc()
    # Asked to stop over a pipe (or by SIGTERM/SIGINT: Ctrl-C reaches the whole process
    # group), not by a shared multiprocessing.Event: one whose waiter was killed can block
    # the parent's set() forever. The pipe also ends when the parent dies.
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())

    def listen() -> None:
        try:
            orders.recv()  # "stop", or EOFError once the parent is gone
        except (EOFError, OSError):
            pass
        stop.set()

    threading.Thread(target=listen, name=f"{name}-orders", daemon=True).start()
    module, function = target.split(":")
    began = time.monotonic()
    logging.getLogger(f"cis.{name}").info(f"{name} started", extra={"fields": {
        "pid": os.getpid()}})
    done = getattr(importlib.import_module(module), function)(*args, stop)
    logging.getLogger(f"cis.{name}").info(f"{name} stopped", extra={"fields": {
        "done": done, "seconds": round(time.monotonic() - began, 1)}})


class WorkerProcess:
    """`target(*args, stop)` ("module:function") in a child process, started again when it
    dies (`revive`): it resumes from its stored position, so nothing is lost or doubled."""

    REVIVE_AFTER_S = 5.0  # a worker that keeps dying is started at most this often

    def __init__(self, name: str, target: str, args: tuple[Any, ...],
                 log_level: str = "info") -> None:
        self._ctx = multiprocessing.get_context("spawn")  # no inherited sockets or threads
        self._stopping = False
        self.name = name
        self._target, self._args, self._log_level = target, args, log_level
        self._new_process()
        self.started_at = 0.0
        self.revivals = 0

    def _new_process(self) -> None:
        self._orders, theirs = self._ctx.Pipe()
        self.process = self._ctx.Process(
            target=_child, args=(self._target, self._args, theirs, self._log_level, self.name),
            name=f"cis-{self.name}", daemon=True)

    def start(self) -> None:
        self.started_at = time.monotonic()
        self.process.start()

    def revive(self) -> bool:
        """Start the worker again if it died without being asked to stop."""
        if self._stopping or self.process.is_alive() or self.process.exitcode is None:
            return False
        if time.monotonic() - self.started_at < self.REVIVE_AFTER_S:
            return False
        log.error(f"{self.name} died; starting it again", extra={"fields": {
            "exit_code": self.process.exitcode, "revivals": self.revivals + 1}})
        self._new_process()
        self.revivals += 1
        self.start()
        return True

    def ask_to_stop(self) -> None:
        self._stopping = True
        try:
            self._orders.send("stop")  # the child finishes a last round, then exits
        except OSError:
            pass  # it is gone already

    def stop(self, timeout_s: float = 60.0) -> int | None:
        """Ask for a last round and wait for it; returns the exit code."""
        self.ask_to_stop()
        self.process.join(timeout_s)
        if self.process.is_alive():
            log.warning(f"{self.name} did not stop in time; terminating",
                        extra={"fields": {"timeout_s": timeout_s}})
            self.process.kill()
            self.process.join(5)
        return self.process.exitcode
