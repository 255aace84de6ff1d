"""Start timeouts (issue 14): how long an instance may wait on its node for a report.

`scheduled` waits for the node to say the sandbox is starting, `starting` for it to say the
instance runs. Past its pool's limit the instance fails with `start_timeout` at the deadline
itself (so billing stops there, not at the tick that noticed). Pure: a function of the
instance's state and its pool's config.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

START_TIMEOUT = "start_timeout"
# state -> (pool config key, default seconds); pools configured before issue 14 lack the keys.
LIMITS: dict[str, tuple[str, int]] = {
    "scheduled": ("scheduled_timeout_seconds", 300),
    "starting": ("starting_timeout_seconds", 600),
}


def deadline(state: str, since: datetime, config: dict[str, Any]) -> datetime | None:
    """When an instance in `state` since `since` times out; None if the state never does."""
    limit = LIMITS.get(state)
    if limit is None:
        return None
    key, default = limit
    return since + timedelta(seconds=config.get(key, default))


def why(state: str, config: dict[str, Any]) -> str:
    key, default = LIMITS[state]
    nxt = "starting" if state == "scheduled" else "running"
    return (f"{START_TIMEOUT}: no report of {nxt} within {config.get(key, default)} s "
            f"of {state}")
