"""`cis audit`: prove the log was not touched (verify) and re-derive every answer from it
(replay). See docs/design.md §8."""

from __future__ import annotations

import argparse

from adapters import audit_chain, audit_replay


def register(sub: argparse._SubParsersAction) -> None:
    audit = sub.add_parser(
        "audit", help="verify the event log's hash chain; replay it and compare",
        description="Audit tools. `verify` recomputes each cell's hash chain over the stored "
        "events and names the first changed, deleted, inserted or reordered one. `replay` "
        "rebuilds every projection and re-runs every recorded decision from the log, and "
        "compares them with what is live. Both exit 0 when all agree, 1 naming what differs.")
    actions = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    # Each action lives in its own module.
    audit_chain.register(actions)
    audit_replay.register(actions)
