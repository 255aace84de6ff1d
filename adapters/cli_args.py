"""Argument types and options the CLI modules share: bad values are refused by argparse
(exit 2, one line saying why) before anything connects or runs."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from datetime import datetime

from adapters.stores import DEFAULT_STORE

STORE_HELP = ("event store URL: memory://, sqlite:///path/to/file.db or "
              "postgresql://user@host:5432/db[?schema=name] (default: $CIS_STORE or "
              f"{DEFAULT_STORE})")


def store_arg(parser: argparse.ArgumentParser, help: str = STORE_HELP) -> None:
    parser.add_argument("--store", default=os.environ.get("CIS_STORE", DEFAULT_STORE),
                        help=help)


def log_level_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])


def _bounded(kind: Callable[[str], float], above_zero: bool) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value < 0 or (above_zero and value == 0):
            raise argparse.ArgumentTypeError(
                f"must be {'greater than' if above_zero else 'at least'} 0, got {text}")
        return value
    return parse


positive_int = _bounded(int, above_zero=True)
positive_float = _bounded(float, above_zero=True)
non_negative_float = _bounded(float, above_zero=False)


def timestamp(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError("give a timezone, e.g. 2026-01-31T23:00:00Z")
    return value
