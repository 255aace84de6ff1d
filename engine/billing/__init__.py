"""Billing (docs/design.md §3.2–§3.5), as small pure steps, one rule per module, in the
order money flows:

- periods:    calendar months in UTC; epoch microseconds from datetimes
- money:      exact Decimal arithmetic and the one rounding of money
- price_book: effective-dated versions, the rates in force, when a period freezes
- meter:      the fold: transitions -> billed intervals -> whole seconds (the one rounding
              of time)
- usage:      an instance's spec and intervals as a value; its lines in one call
- rate:       billed seconds -> invoice lines
- adjust:     lines as billed vs as recomputed -> adjustment lines
- invoice:    lines and adjustments -> an invoice with its content hash (ordered steps)
- accrue:     open periods at query time: lines up to `as_of`, pending adjustments
- explain:    which intervals hold a line's seconds
- cell_meter, observer, finalise: the writer's meter (a World observer) and the Tick
              decider that closes periods
- settled:    deleted instances' usage, packed, until their periods are finalised

The writer, the usage and invoice projections, `cis invoices` (with `--explain`) and the
API all call these; nothing else cuts seconds or rounds money.
"""

from engine.billing.finalise import finalise_periods
from engine.billing.observer import BillingMeter
from engine.billing.periods import EPOCH, US_PER_S, micros

__all__ = ["EPOCH", "US_PER_S", "BillingMeter", "finalise_periods", "micros"]
