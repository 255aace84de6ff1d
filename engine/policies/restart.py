"""What a container exit means under a restart policy, and the back-off before a restart."""

from __future__ import annotations

from typing import Literal

ExitDecision = Literal["restart", "complete", "succeed", "fail"]

BACKOFF_INITIAL_SECONDS = 10  # kubelet's CrashLoopBackOff: 10 s doubling, capped at 5 min
BACKOFF_CAP_SECONDS = 300


def decide_exit(
    policy: str, exit_code: int, container: str, names: list[str], completed: dict[str, int]
) -> ExitDecision:
    """Always restarts; OnFailure restarts failures; Never lets a container stay down.

    A container that stays down completes; when the last one completes, the instance
    succeeds if every exit code was 0 and fails otherwise.
    """
    if policy == "Always" or (policy == "OnFailure" and exit_code != 0):
        return "restart"
    done = {**completed, container: exit_code}
    if set(done) < set(names):
        return "complete"
    return "succeed" if all(code == 0 for code in done.values()) else "fail"


def backoff_seconds(restarts_so_far: int) -> int:
    return min(BACKOFF_INITIAL_SECONDS * 2 ** min(restarts_so_far, 16), BACKOFF_CAP_SECONDS)
