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
    # margin, yet keeps one producer from moving every account's "now" by months.
    max_skew_seconds: int = DAY_S
    # How far one Tick may move its cell's clock. A ticker normally ticks every minute; a
    # month and a day lets one tick after an outage close the month it missed. Further needs
    # an operator's `catch_up: true`.
    max_tick_step_seconds: int = 32 * DAY_S
    # How many billing periods one Tick may finalise (the one just ended and one missed).
    max_periods_per_tick: int = 2
