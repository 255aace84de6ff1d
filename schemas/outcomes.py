"""Outcomes: what the engine answers for every command, accepted or rejected."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from schemas import lines
from schemas.commands import COMMAND_TYPES, SCHEMA_VERSION, Command, command_adapter
from schemas.limits import (
    MAX_COMMAND_ID_CHARS,
    MAX_DEPTH,
    MAX_EVENT_ID_CHARS,
    MAX_LINE_BYTES,
    MAX_NOTE_CHARS,
    MAX_OUTCOME_EVENTS,
    MAX_OUTCOME_REASONS,
    MAX_REASON_CODE_CHARS,
    MAX_REASON_FIELD_CHARS,
    MAX_REASON_PROBLEM_CHARS,
)


def clip(text: str, limit: int) -> str:
    """Text safe to echo: control characters and lone surrogates shown as U+FFFD, and at
    most `limit` characters (an ellipsis says where it was cut)."""
    if not (text.isascii() and text.isprintable()):  # else none of BAD_TEXT: skip the regex
        text = lines.BAD_TEXT.sub("\ufffd", text)
    return text if len(text) <= limit else text[:limit - 1] + "\u2026"


class Reason(BaseModel):
    """One thing wrong with a command: where, and what."""

    model_config = ConfigDict(frozen=True)
    field: str = Field(max_length=MAX_REASON_FIELD_CHARS)
    problem: str = Field(max_length=MAX_REASON_PROBLEM_CHARS)
    # A stable machine-readable name for the kind of problem (e.g. `command_id_reused`).
    code: str | None = Field(None, max_length=MAX_REASON_CODE_CHARS)

    @field_validator("field", "problem", "code", mode="before")
    @classmethod
    def _clipped(cls, value: Any, info: Any) -> Any:
        # A reason may echo the input: never more than its limit, never unprintable.
        limit = {"field": MAX_REASON_FIELD_CHARS, "problem": MAX_REASON_PROBLEM_CHARS,
                 "code": MAX_REASON_CODE_CHARS}[info.field_name]
        return clip(value, limit) if isinstance(value, str) else value


class Outcome(BaseModel):
    model_config = ConfigDict(frozen=True)
    schema_version: Literal[1] = SCHEMA_VERSION
    command_id: Annotated[str | None, Field(max_length=MAX_COMMAND_ID_CHARS)] = None
    # Who sent it (`account:A`, `node:N`, `operator`): ids are unique per principal, so two
    # tenants' outcomes under one command_id are told apart by this (None: unreadable line).
    principal: Annotated[str | None, Field(max_length=MAX_COMMAND_ID_CHARS)] = None
    status: Literal["accepted", "rejected"]
    # The first MAX_OUTCOME_EVENTS event ids; `events_total` counts them all when there were
    # more (an outcome stays under MAX_OUTCOME_BYTES, so under any broker's message limit).
    events: list[str] = Field(default_factory=list, max_length=MAX_OUTCOME_EVENTS,
                              json_schema_extra={"x-limit": "MAX_OUTCOME_EVENTS"})
    events_total: int | None = None
    # The first MAX_OUTCOME_REASONS reasons, then one (code `reasons_truncated`) that says
    # how many more there were.
    reasons: list[Reason] = Field(default_factory=list, max_length=MAX_OUTCOME_REASONS + 1,
                                  json_schema_extra={"x-limit": "MAX_OUTCOME_REASONS"})
    note: str | None = Field(None, max_length=MAX_NOTE_CHARS,
                             json_schema_extra={"x-limit": "MAX_NOTE_CHARS"})

    @model_validator(mode="before")
    @classmethod
    def _summarised(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        events = data.get("events")
        if events is not None:
            if len(events) > MAX_OUTCOME_EVENTS:
                data["events_total"] = data.get("events_total") or len(events)
            data["events"] = [clip(e, MAX_EVENT_ID_CHARS) if isinstance(e, str) else e
                              for e in events[:MAX_OUTCOME_EVENTS]]
        reasons = data.get("reasons")
        if reasons is not None and len(reasons) > MAX_OUTCOME_REASONS + 1:
            data["reasons"] = [*reasons[:MAX_OUTCOME_REASONS],
                               more_reasons(len(reasons) - MAX_OUTCOME_REASONS)]
        if isinstance(data.get("note"), str):
            data["note"] = clip(data["note"], MAX_NOTE_CHARS)
        return data

    @classmethod
    def rejected(cls, command_id: str | None, reasons: list[Reason],
                 principal: str | None = None) -> Outcome:
        return cls(command_id=command_id, principal=principal, status="rejected",
                   reasons=reasons)

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=True)


class NotACommand(Exception):
    """Bytes that are not a command at all (not UTF-8, not JSON): they belong in the DLQ."""

    def __init__(self, outcome: Outcome):
        super().__init__(outcome.reasons[0].problem)
        self.outcome = outcome


# pydantic's message for a ValueError raised as "code: problem" (see schemas.commands).
_CODED = re.compile(r"^Value error, ([a-z0-9_]+): (.*)$", re.DOTALL)


def more_reasons(count: int) -> Reason:
    return Reason(field="$", problem=f"and {count} more reasons", code="reasons_truncated")


# Room the parser leaves for its own reasons (command_id, lone surrogate, long number).
_PARSER_REASONS = 3


def reasons_from(error: ValidationError, room: int = MAX_OUTCOME_REASONS) -> list[Reason]:
    """The first `room` reasons of a validation error, then one that counts the rest (a line
    of thousands of bad fields must not cost thousands of reasons)."""
    count = error.error_count()
    errors = error.errors(include_url=False, include_input=False, include_context=False)
    shown = errors if count <= room + 1 else errors[:room]
    reasons = []
    for e in shown:
        loc = list(e["loc"])
        if loc and loc[0] in COMMAND_TYPES:  # the union's tag adds nothing for the producer
            loc = loc[1:]
        coded = _CODED.match(e["msg"])
        code, problem = coded.groups() if coded else (e["type"], e["msg"].removeprefix(
            "Value error, "))
        reasons.append(Reason(field=".".join(str(p) for p in loc) or "$", problem=problem,
                              code=code))
    if len(shown) < count:
        reasons.append(more_reasons(count - len(shown)))
    return reasons


def parse_command(raw: bytes | str) -> Command | Outcome:
    """Validate raw bytes into a command, or answer a rejected outcome with every reason.

    Never raises anything but NotACommand, for input that is not JSON at all (the caller
    decides whether that also goes to a dead-letter queue). The line's size and depth are
    checked before any parse, and its `command_id` is read apart from the rest, so that
    every outcome names it when it can be read at all.
    """
    data = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")
    error = None
    if len(data) <= MAX_LINE_BYTES and not lines.too_deep(data):
        try:
            # Strict: no coercion (no "5" for 5, no true for 1); the common case in one
            # pass, in Rust.
            command = command_adapter.validate_json(data, strict=True)
        except ValidationError as exc:
            error = exc
        else:
            duplicate = lines.duplicate_key(data)
            if duplicate is None:
                return command
            return Outcome.rejected(command.command_id, [Reason(
                field=duplicate, code="duplicate_key", problem=(
                    "this key appears twice in one object; JSON readers disagree on which "
                    "one counts, so a command must name each field once"))])
    command_id, unreadable = _command_id(data, parsable=error is not None)
    if len(data) > MAX_LINE_BYTES:
        reasons = [Reason(field="$", code="line_too_long", problem=(
            f"the line has {len(data)} bytes; at most {MAX_LINE_BYTES} (MAX_LINE_BYTES)"))]
    elif error is None:
        reasons = [Reason(field="$", code="too_deep", problem=(
            f"arrays and objects nest deeper than {MAX_DEPTH} (MAX_DEPTH)"))]
    else:
        reasons = _why(data, error, command_id)
    if unreadable is not None and not any(r.field == "command_id" for r in reasons):
        reasons.insert(0, unreadable)
    return Outcome.rejected(command_id, reasons)


def _command_id(data: bytes, parsable: bool) -> tuple[str | None, Reason | None]:
    """The line's `command_id` if it can be read (from its first MAX_LINE_BYTES bytes,
    whatever else is wrong), else a reason why not."""
    value: object = None
    document: object = None
    if parsable:  # size and depth checked, so a parse is safe (and exact)
        try:
            document = pydantic_core.from_json(data)
        except ValueError:
            parsable = False
    if parsable:
        value = document.get("command_id") if isinstance(document, dict) else None
    else:  # not JSON to pydantic, too long or too deep: scan for it
        token = lines.member(data[:MAX_LINE_BYTES], "command_id")
        value = lines.text(token) if token is not None else None
    if value is None:
        return None, Reason(field="command_id", code="missing",
                            problem="no command_id could be read from the line")
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_COMMAND_ID_CHARS \
            or lines.BAD_TEXT.search(value):
        return None, Reason(field="command_id", code="command_id_unreadable", problem=(
            f"must be a string of 1 to {MAX_COMMAND_ID_CHARS} printable characters"))
    return value, None


def _why(data: bytes, error: ValidationError, command_id: str | None) -> list[Reason]:
    """Every reason a line within the limits is not a command; NotACommand if it is not
    JSON at all."""
    if not _not_json(error):
        return reasons_from(error, MAX_OUTCOME_REASONS - _PARSER_REASONS)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NotACommand(Outcome.rejected(command_id, [
            Reason(field="$", problem=f"not UTF-8: {exc}", code="not_utf8")])) from None
    # JSON that pydantic's parser refuses but the grammar allows (a lone surrogate escape,
    # a number of thousands of digits): replace those values and validate the rest.
    clean, problems = lines.sanitise(data) if lines.SANITISABLE.search(data) else (data, [])
    if problems:
        try:
            command_adapter.validate_json(clean, strict=True)
        except ValidationError as exc:
            if not _not_json(exc):
                return [*(_SANITISED[p] for p in problems),
                        *reasons_from(exc, MAX_OUTCOME_REASONS - _PARSER_REASONS)]
        else:
            return [_SANITISED[p] for p in problems]
    problem = next(e["msg"] for e in error.errors(include_url=False, include_input=False)
                   if e["type"] == "json_invalid")
    raise NotACommand(Outcome.rejected(command_id, [
        Reason(field="$", problem=f"not JSON: {problem}", code="not_json")]))


_SANITISED = {
    "lone surrogate": Reason(field="$", code="lone_surrogate", problem=(
        "a string holds a lone UTF-16 surrogate escape (e.g. \\ud800): not Unicode text; "
        "the reasons below name its field")),
    "long number": Reason(field="$", code="number_too_long", problem=(
        f"a number has more than {lines.MAX_NUMBER_CHARS} characters; the reasons below "
        "name its field")),
}


def _not_json(error: ValidationError) -> bool:
    return any(e["type"] == "json_invalid" for e in error.errors(include_url=False,
                                                                  include_input=False))
