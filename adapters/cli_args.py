"""Argument types and options the CLI modules share: bad values are refused by argparse
(exit 2, one line saying why) before anything connects or runs."""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Callable
from datetime import datetime

from adapters.stores import DEFAULT_STORE
from schemas.limits import TIME_MAX, TIME_MIN

STORE_HELP = ("event store URL: memory://, sqlite:///path/to/file.db or "
              "postgresql://user@host:5432/db[?schema=name] (default: $CIS_STORE or "
              f"{DEFAULT_STORE})")


def store_arg(parser: argparse.ArgumentParser, help: str = STORE_HELP) -> None:
    parser.add_argument("--store", default=os.environ.get("CIS_STORE", DEFAULT_STORE),
                        help=help)


def log_level_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])


def number_in(kind: Callable[[str], float], low: float, high: float = math.inf,
              low_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number of `kind` from `low` (excluded if `low_open`) to
    `high`. NaN and infinities are refused: no option means them."""
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if (isinstance(value, float) and not math.isfinite(value)) or not (
                (low < value if low_open else low <= value) and value <= high):
            above = "greater than" if low_open else "at least"
            upto = f" and at most {high:g}" if math.isfinite(high) else ""
            raise argparse.ArgumentTypeError(f"must be {above} {low:g}{upto}, got {text}")
        return value
    return parse


positive_int = number_in(int, 0, low_open=True)
positive_float = number_in(float, 0, low_open=True)
non_negative_float = number_in(float, 0)


def timestamp(text: str) -> datetime:
    """An aware ISO time inside the supported window [TIME_MIN, TIME_MAX)."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO time: {text!r} (e.g. 2026-01-31T23:00:00Z)") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError("give a timezone, e.g. 2026-01-31T23:00:00Z")
    if not TIME_MIN <= value < TIME_MAX:
        raise argparse.ArgumentTypeError(
            f"{text} is outside the supported window [{TIME_MIN:%Y-%m-%d}, {TIME_MAX:%Y-%m-%d})")
    return value


ACCOUNT = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def account_name(text: str) -> str:
    """An account name as commands spell it; never empty (empty would mean every account)."""
    if not ACCOUNT.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"not an account name: {text!r} (lowercase letters, digits and -, 1-63)")
    return text


def partitions(text: str) -> list[int] | None:
    """`all` (None) or a list of partition numbers like `0,1,3`."""
    if text == "all":
        return None
    try:
        return sorted({int(p) for p in text.split(",") if p.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError("give 'all' or a list like 0,1,3") from None
