"""`cis tokens`: create, list and revoke the query API's bearer tokens."""

from __future__ import annotations

import argparse
import json
import re
from datetime import UTC, datetime, timedelta

from adapters import tokens
from adapters.bootstrap import connect
from adapters.cli_args import account_name, store_arg, timestamp

UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1),
         "w": timedelta(weeks=1)}


def expiry(text: str) -> datetime:
    """`30d`, `12h`, `90m`, `2w` from now, or an ISO time."""
    found = re.fullmatch(r"([1-9][0-9]{0,5})([mhdw])", text)
    if found:
        return datetime.now(UTC) + int(found[1]) * UNITS[found[2]]
    when = timestamp(text)
    if when <= datetime.now(UTC):
        raise argparse.ArgumentTypeError(f"{text} is in the past")
    return when


def cmd_create(args: argparse.Namespace) -> int:
    with connect(args.store) as engine:
        row, secret = tokens.create(engine.view, None if args.operator else args.account,
                                    args.expires)
    print(json.dumps({**row, "token": secret}))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    with connect(args.store) as engine:
        for row in tokens.listing(engine.view):
            print(json.dumps(row))
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    with connect(args.store) as engine:
        row = tokens.revoke(engine.view, args.id)
    if row is None:
        print(f"cis tokens revoke: no token {args.id}")
        return 1
    print(json.dumps(row))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    tok = sub.add_parser(
        "tokens", help="bearer tokens of the query API (create, list, revoke)",
        description="Tokens for `cis api`: each reads one account's data, or every "
        "account's (--operator). The store keeps only a SHA-256 of the secret: `create` "
        "prints the token once, and it cannot be shown again.")
    actions = tok.add_subparsers(dest="tokens_command", required=True, metavar="ACTION")

    create = actions.add_parser("create", help="create a token and print it (once)")
    store_arg(create)
    scope = create.add_mutually_exclusive_group(required=True)
    scope.add_argument("--account", type=account_name, help="the account it may read")
    scope.add_argument("--operator", action="store_true", help="may read every account")
    create.add_argument("--expires", type=expiry, metavar="DURATION|TIME",
                        help="30d, 12h, 90m, 2w from now, or an ISO time (default: never)")
    create.set_defaults(func=cmd_create)

    listing = actions.add_parser("list", help="every token: id, scope, times (no secrets)")
    store_arg(listing)
    listing.set_defaults(func=cmd_list)

    revoke = actions.add_parser("revoke", help="revoke a token by id (effective at once)")
    store_arg(revoke)
    revoke.add_argument("id", help="the token's id (the part after `cis.`)")
    revoke.set_defaults(func=cmd_revoke)
