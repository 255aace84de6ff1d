"""`--known-at K` on the query subcommands: answer from the log as it was recorded up to K
(adapters/queries.py `known_at`), beside `--as-of T` (what was true at T, as known now)."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from adapters import queries
from adapters.cli_args import timestamp

HELP = ("answer exactly as the engine would have at this ISO time, or at this log position "
        "(a notification id): from the events recorded up to it only (each cell's log up to "
        "its last batch stamped at or before it); the default --as-of is then the newest "
        "clock of the account's cells known then. A late report moves no clock, so only a "
        "position tells the answer just before it from the one just after")


def time_or_position(text: str) -> datetime | int:
    if text.isascii() and text.isdigit():
        if not 1 <= int(text) <= 10**18:  # any store's 64-bit integer holds it
            raise argparse.ArgumentTypeError("a log position is 1 to 10**18")
        return int(text)
    return timestamp(text)


def add_known_at(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--known-at", type=time_or_position, metavar="TIME|POSITION",
                        help=HELP)


def reader(engine: Any, args: argparse.Namespace, account: str | None) -> Any:
    """What the query reads: the live projections, or a fold of the log up to --known-at."""
    if args.known_at is None:
        return engine
    return queries.known_at(engine, args.known_at, account)
