"""`cis submit`: validate JSON-lines commands, produce the valid ones keyed by cell to the
topic of the sender's role, and optionally wait for their outcomes (matched by
`command_id`, duplicates ignored)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from adapters.kafka_io import CommandSource, Publisher
from schemas.commands import ROLE_TOPICS, CommandBase, Role
from schemas.outcomes import NotACommand, Outcome, Reason, parse_command


@dataclass
class Invalid:
    line: int
    outcome: Outcome

    def to_json(self) -> str:
        return json.dumps({"line": self.line, **self.outcome.model_dump(
            mode="json", exclude_none=True)})


@dataclass
class Submitted:
    sent: list[str] = field(default_factory=list)  # command ids, in input order
    invalid: list[Invalid] = field(default_factory=list)
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    principals: dict[str, str] = field(default_factory=dict)  # command id -> who sent it

    @property
    def missing(self) -> list[str]:
        return [c for c in self.sent if c not in self.outcomes]


def validate(lines: Iterable[bytes], role: Role | None = None
             ) -> tuple[list[tuple[CommandBase, bytes]], list[Invalid]]:
    """Split raw lines into commands (with their original bytes) and invalid lines (given
    a `role`, a command of another role's type is invalid: its topic would reject it)."""
    valid: list[tuple[CommandBase, bytes]] = []
    invalid: list[Invalid] = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            parsed = parse_command(raw)
        except NotACommand as exc:
            invalid.append(Invalid(number, exc.outcome))
            continue
        if isinstance(parsed, Outcome):
            invalid.append(Invalid(number, parsed))
        elif role is not None and parsed.role != role:
            invalid.append(Invalid(number, Outcome.rejected(parsed.command_id, [Reason(
                field="type", code="wrong_topic",
                problem=f"{parsed.type} is sent by the {parsed.role} role, "  # type: ignore
                        f"not {role}")])))
        else:
            valid.append((parsed, raw.rstrip(b"\r\n")))
    return valid, invalid


def submit(kafka: str, lines: Iterable[bytes], role: Role, topic: str | None = None,
           wait_s: float | None = None, outcomes_topic: str = "cis.outcomes") -> Submitted:
    """Produce the valid lines of `role` to `topic` (default: the role's); with `wait_s`,
    collect their outcomes for up to that long."""
    topic = topic or ROLE_TOPICS[role]
    commands, invalid = validate(lines, role)
    result = Submitted(invalid=invalid)
    # Note where the outcomes topic ends before producing, so no outcome can be missed.
    watcher = _watch(kafka, outcomes_topic) if wait_s is not None else None
    try:
        with Publisher(kafka, client_id="cis-submit") as publisher:
            for command, raw in commands:
                publisher.send_command(topic, command.cell, raw)
                result.sent.append(command.command_id)
                result.principals[command.command_id] = command.principal
            publisher.flush()
        if watcher is not None and wait_s is not None:
            _collect(watcher, result, time.monotonic() + wait_s)
    finally:
        if watcher is not None:
            watcher.close()
    return result


def _watch(kafka: str, topic: str) -> CommandSource:
    source = CommandSource(kafka, topic, client_id="cis-submit-wait")
    # tansu may under-report the end before the first fetch: reading a little early only
    # means skipping outcomes that are not ours.
    source.seek_all(source.end_offsets())
    return source


def _collect(source: CommandSource, result: Submitted, deadline: float) -> None:
    wanted = set(result.sent)
    while wanted - result.outcomes.keys() and time.monotonic() < deadline:
        for records in source.poll_batch(max_records=1000, timeout_ms=500).values():
            for record in records:
                key = record.key.decode("utf-8", "replace") if record.key else None
                if key in wanted and key not in result.outcomes and not record.unreadable:
                    outcome = Outcome.model_validate_json(record.value)
                    # Ids are per principal: another tenant's outcome under the same id is
                    # not ours.
                    if outcome.principal in (None, result.principals.get(key)):
                        result.outcomes[key] = outcome
