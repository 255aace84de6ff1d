"""Outcomes: what the engine answers for every command, accepted or rejected."""

from __future__ import annotations

import json
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas.commands import COMMAND_TYPES, SCHEMA_VERSION, Command, command_adapter


class Reason(BaseModel):
    """One thing wrong with a command: where, and what."""

    model_config = ConfigDict(frozen=True)
    field: str
    problem: str


class Outcome(BaseModel):
    model_config = ConfigDict(frozen=True)
    schema_version: Literal[1] = SCHEMA_VERSION
    command_id: Annotated[str | None, Field(max_length=128)] = None
    status: Literal["accepted", "rejected"]
    events: list[str] = Field(default_factory=list)
    reasons: list[Reason] = Field(default_factory=list)
    note: str | None = None

    @classmethod
    def rejected(cls, command_id: str | None, reasons: list[Reason]) -> Outcome:
        return cls(command_id=command_id, status="rejected", reasons=reasons)

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=True)


class NotACommand(Exception):
    """Bytes that are not a command at all (not UTF-8, not JSON): they belong in the DLQ."""

    def __init__(self, outcome: Outcome):
        super().__init__(outcome.reasons[0].problem)
        self.outcome = outcome


def reasons_from(error: ValidationError) -> list[Reason]:
    reasons = []
    for e in error.errors(include_url=False):
        loc = list(e["loc"])
        if loc and loc[0] in COMMAND_TYPES:  # the union's tag adds nothing for the producer
            loc = loc[1:]
        reasons.append(Reason(field=".".join(str(p) for p in loc) or "$", problem=e["msg"]))
    return reasons


def parse_command(raw: bytes | str) -> Command | Outcome:
    """Validate raw bytes into a command, or answer a rejected outcome with every reason.

    Raises NotACommand for input that is not JSON at all; the caller decides whether that
    also goes to a dead-letter queue.
    """
    try:
        return command_adapter.validate_json(raw)  # the common case in one pass, in Rust
    except ValidationError:
        pass  # find out why below, in the producer's terms
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as exc:
        reasons = [Reason(field="$", problem=f"not UTF-8: {exc}")]
        raise NotACommand(Outcome.rejected(None, reasons)) from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        reasons = [Reason(field="$", problem=f"not JSON: {exc}")]
        raise NotACommand(Outcome.rejected(None, reasons)) from exc
    command_id = data.get("command_id") if isinstance(data, dict) else None
    if not isinstance(command_id, str) or len(command_id) > 128:
        command_id = None
    try:
        return command_adapter.validate_python(data)
    except ValidationError as exc:
        return Outcome.rejected(command_id, reasons_from(exc))
