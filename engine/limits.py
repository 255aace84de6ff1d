"""The engine's limits on what a well-formed command may do to a cell's clock.

A cell's clock is the time of its newest *accepted* command: only accepted commands move it,
so a rejected or forged time never shifts the default `as_of` of usage and invoices. These
limits bound how far one accepted command may move it.
"""

from __future__ import annotations

from dataclasses import dataclass

DAY_S = 86_400


@dataclass(frozen=True, slots=True)
class EngineLimits:
    # How far a command (other than a Tick) may run ahead of its cell's clock. A day absorbs
    # any honest producer's clock error and queueing delay (seconds to minutes) with a wide
    # margin, yet keeps one producer from moving every account's "now" by months. An agent's
    # report may also run at most this far ahead of the newest time an operator vouched for
    # (a Tick, an operator's command): a stream of reports cannot walk the clock further.
    max_skew_seconds: int = DAY_S
    # How far a tenant's request may claim to run ahead. A tenant's time never moves the
    # clock, but an instance's timeline starts at its create's time: a create dated ahead of
    # what the infrastructure reports runs unbilled until then. With a ticker, production
    # wants the ticker's interval plus queueing (e.g. 300 s: CIS_MAX_TENANT_SKEW_SECONDS), or
    # a gateway that stamps issued_at itself; a day keeps tick-less replays working.
    max_tenant_skew_seconds: int = DAY_S
    # How far one Tick may move its cell's clock. A ticker normally ticks every minute; a
    # month and a day lets one tick after an outage close the month it missed. Further needs
    # an operator's `catch_up: true`.
    max_tick_step_seconds: int = 32 * DAY_S
    # How many billing periods one Tick may finalise (the one just ended and one missed).
    max_periods_per_tick: int = 2
    # Batch placement: a poll batch's creates are placed together, up to this many per pool
    # at a time (a reorder window, engine/batch_plan.py). 1 places them one by one.
    placement_window: int = 1
    # How long a command id is remembered (Kafka's producer-idempotence window is a week): a
    # repeat within it answers its recorded outcome; a command older than it, by the cell's
    # clock, is refused as `command_id_expired`, never decided again.
    command_id_retention_seconds: int = 7 * DAY_S
