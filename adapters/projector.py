"""The projection worker: another consumer of the event log, beside the writer.

Row projections (instances, usage, invoices) and their position commit together, so the
worker can stop or die at any moment and resume where its rows end. `cis serve` runs it as
a child process (its own core: projecting costs about as much as deciding), and
`cis project` runs it alone, e.g. on another machine against the same PostgreSQL.
"""

from __future__ import annotations

import logging
from threading import Event

from adapters.bootstrap import Engine, connect
from adapters.stores import STORE_DOWN
from adapters.workers import WorkerProcess, keep_following

log = logging.getLogger("cis.projector")


def follow(store: str, interval_s: float, stop: Event) -> int:
    """Keep the projections current until `stop` is set (then catch up once more and
    return). Returns the number of events projected."""
    engine: Engine | None = None

    def step() -> int:
        nonlocal engine
        if engine is None:
            engine = connect(store)
        return engine.update_projections()

    def reset() -> None:
        pass  # the views commit rows with their position: nothing half-done to drop

    try:
        return keep_following(step, reset, stop, interval_s, STORE_DOWN, log)
    finally:
        if engine is not None:
            engine.close()


def projector_process(store: str, interval_s: float = 0.5, log_level: str = "info"
                      ) -> WorkerProcess:
    return WorkerProcess("projector", "adapters.projector:follow", (store, interval_s), log_level)
