"""What a container exit means under a restart policy, and the back-off before a restart."""

from __future__ import annotations

from typing import Literal

ExitDecision = Literal["restart", "complete", "succeed", "fail"]

BACKOFF_INITIAL_SECONDS = 10  # kubelet's CrashLoopBackOff: 10 s doubling, capped at 5 min
BACKOFF_CAP_SECONDS = 300


def decide_exit(
    policy: str, exit_code: int, container: str, names: list[str], completed: dict[str, int],
    init: frozenset[str] = frozenset(),
) -> ExitDecision:
    """Always restarts; OnFailure restarts failures; Never lets a container stay down.

    A container that stays down completes; when the last one completes, the instance
    succeeds if every exit code was 0 and fails otherwise. Init containers (`init`) are as
    Kubernetes runs them: one that exits 0 is done whatever the policy; one that fails is
    run again unless the policy is Never, which fails the instance. Only the main containers
    decide when the instance is done (an init container may never be reported).
    """
    if container in init:
        if exit_code == 0:
            return "complete"
        return "fail" if policy == "Never" else "restart"
    if policy == "Always" or (policy == "OnFailure" and exit_code != 0):
        return "restart"
    done = {**completed, container: exit_code}
    main = [name for name in names if name not in init]
    if not set(main) <= set(done):
        return "complete"
    return "succeed" if all(done[name] == 0 for name in main) else "fail"


BACKOFF_RESET_SECONDS = 600  # a container that ran this long starts its back-off afresh


def backoff_seconds(restarts_so_far: int) -> int:
    return min(BACKOFF_INITIAL_SECONDS * 2 ** min(restarts_so_far, 16), BACKOFF_CAP_SECONDS)


def next_backoff(streak: int, ran_seconds: float | None) -> tuple[int, int]:
    """The back-off before this restart and the streak after it.

    `streak` counts crashes since the last reset; `ran_seconds` is how long the container
    had been running when it exited (None: it never reached running since the last
    restart). Like the kubelet: 10 s doubling to 5 min, reset after 10 min running.
    """
    if ran_seconds is not None and ran_seconds >= BACKOFF_RESET_SECONDS:
        streak = 0
    return backoff_seconds(streak), streak + 1


def budget_exhausted(restarts_in_window: int, budget: dict[str, int]) -> bool:
    """Another restart would exceed the budget (`restarts` per `window_seconds`)."""
    return restarts_in_window >= budget["restarts"]
