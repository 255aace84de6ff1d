"""Start timeouts (issue 14): how long an instance may wait on its node for a report.

`scheduled` waits for the node to say the sandbox is starting, `starting` for it to say the
instance runs. Past its pool's limit the instance fails with `start_timeout` at the deadline
itself (so billing stops there, not at the tick that noticed). Pure: a function of the
instance's state and its pool's config.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Protocol

START_TIMEOUT = "start_timeout"


class Limits(Protocol):
    """A pool's start limits (PoolConfig; pools configured before issue 14 get defaults)."""

    scheduled_timeout_seconds: int
    starting_timeout_seconds: int


# state -> the pool config's limit for it
LIMITS: dict[str, str] = {
    "scheduled": "scheduled_timeout_seconds",
    "starting": "starting_timeout_seconds",
}


def deadline(state: str, since: datetime, config: Limits) -> datetime | None:
    """When an instance in `state` since `since` times out; None if the state never does."""
    key = LIMITS.get(state)
    if key is None:
        return None
    return since + timedelta(seconds=getattr(config, key))


def why(state: str, config: Limits) -> str:
    nxt = "starting" if state == "scheduled" else "running"
    return (f"{START_TIMEOUT}: no report of {nxt} within {getattr(config, LIMITS[state])} s "
            f"of {state}")
