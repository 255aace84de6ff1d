"""Reading a raw input line before trusting it: its nesting depth, its top-level fields and
its oddities, with linear scans and no recursion (a hostile line may be 10,000 deep).

Only the parser of schemas.outcomes uses this; every scan is a regular expression without
backtracking plus one loop over the tokens it finds. Imports nothing of ours but the limits.
"""

from __future__ import annotations

import json
import re

import orjson

from schemas.limits import MAX_DEPTH

# A JSON string (possessive, so an unterminated one runs to the end instead of
# backtracking), one structural character, or a run of anything else (numbers, literals,
# garbage). Whitespace between tokens is skipped.
_TOKEN = re.compile(rb'"(?:[^"\\]++|\\.)*+"?|[\[\]{}:,]|[^\s"\[\]{}:,]++', re.DOTALL)
_BRACKETS = re.compile(rb'"(?:[^"\\]++|\\.)*+"?|[\[\]{}]', re.DOTALL)
_OPEN, _CLOSE = b"[{", b"]}"
# A JSON number too long for any field: Python and pydantic refuse ints past 4,300 digits
# as "not JSON"; we answer such a line with a reason instead.
MAX_NUMBER_CHARS = 64
_NUMBER = re.compile(rb"-?[0-9][0-9.eE+-]*")
# Inside a string: a surrogate pair (fine), a lone surrogate escape, or any other escape
# (consumed whole, so that an escaped backslash before "ud800" is not taken for one).
_ESCAPE = re.compile(rb"\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}"
                     rb"|(\\u[dD][89a-fA-F][0-9a-fA-F]{2})|\\.", re.DOTALL)
# What no text field may hold: control characters (C0, DEL, C1) and lone surrogates.
BAD_TEXT = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# A placeholder every string field of the schema refuses (no text field takes a control
# character), so a value we had to replace still gets its own reason at its own path.
_REFUSED = b'"\\u0000"'


def too_deep(data: bytes) -> bool:
    """Whether arrays and objects nest deeper than MAX_DEPTH (brackets in strings aside)."""
    if data.count(b"[") + data.count(b"{") <= MAX_DEPTH:  # the common case, in C
        return False
    depth = 0
    for token in _BRACKETS.findall(data):
        if token in _OPEN:
            depth += 1
            if depth > MAX_DEPTH:
                return True
        elif token in _CLOSE:
            depth -= 1
    return False


def member(data: bytes, name: str) -> bytes | None:
    """The raw value token of the first member `name` of a top-level object (a string keeps
    its quotes; an object or array is given as `{` or `[`), or None. Tolerates a truncated
    or otherwise broken line: whatever could be read before the damage."""
    if name.encode() not in data and b"\\u" not in data:  # in C: most lines are done here
        return None
    tokens = _TOKEN.finditer(data)
    first = next(tokens, None)
    if first is None or first.group() != b"{":
        return None
    depth, key, value_of = 1, None, None
    for match in tokens:
        token = match.group()
        if token in _OPEN:
            if depth == 1 and value_of == name:
                return token
            key = value_of = None
            depth += 1
        elif token in _CLOSE:
            depth -= 1
            if depth == 0:
                return None
        elif depth != 1:
            continue
        elif token == b":":
            value_of, key = (text(key) if key is not None else None), None
        elif token == b",":
            key = value_of = None
        elif value_of is not None:
            if value_of == name:
                return token
            value_of = None
        else:
            key = token
    return None


def text(token: bytes) -> str | None:
    """The string a raw JSON string token stands for, or None if it is not one."""
    if len(token) < 2 or not token.startswith(b'"'):
        return None
    try:
        value = json.loads(token.decode("utf-8"))
    except ValueError:  # includes UnicodeDecodeError
        return None
    return value if isinstance(value, str) else None


# What sanitise may fix, found in C before the token loop runs (most broken lines have none).
SANITISABLE = re.compile(rb"\\u[dD][89a-fA-F]|[0-9.eE+-]{%d}" % (MAX_NUMBER_CHARS + 1))


def sanitise(data: bytes) -> tuple[bytes, list[str]]:
    """The line with every lone surrogate escape and every over-long number replaced by a
    value each field refuses, and what was replaced: so that the rest of a line the JSON
    parser gives up on still gets every reason. The line itself must be UTF-8."""
    problems: set[str] = set()

    def escape(match: re.Match[bytes]) -> bytes:
        if match.group(1) is None:
            return match.group()
        problems.add("lone surrogate")
        return b"\\u0000"

    parts: list[bytes] = []
    for match in _TOKEN.finditer(data):
        token = match.group()
        if token.startswith(b'"') and b"\\u" in token:
            token = _ESCAPE.sub(escape, token)
        elif len(token) > MAX_NUMBER_CHARS and _NUMBER.fullmatch(token):
            token = _REFUSED
            problems.add("long number")
        parts.append(token)
    return b" ".join(parts), sorted(problems)


def _no_duplicates(pairs: list[tuple[str, object]]) -> None:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise _Duplicate(key)
        seen.add(key)


class _Duplicate(ValueError):
    pass


# A quote then a colon: every key's end, and (rarely) an escaped quote inside a string.
_KEY_END = re.compile(rb'"\s*:')


def duplicate_key(data: bytes) -> str | None:
    """A key that appears twice in one object of the line, or None (depth already bounded).

    JSON parsers disagree on a duplicate (first wins, last wins, refused): a gateway that
    reads the first `account` and an engine that reads the last would act for another tenant.
    Cheap first: key ends counted in the text and in the line as a last-wins parser keeps it,
    written back without whitespace; string contents count the same in both, so a difference
    is a key lost to a duplicate. Only then (or when an escape could spell a key twice) is
    the line read again, exactly, to name the key.
    """
    if b"\\u" not in data:
        try:
            kept = orjson.dumps(orjson.loads(data)).count(b'":')
        except orjson.JSONDecodeError:  # pydantic took it, orjson does not: read it exactly
            kept = -1
        if kept == len(_KEY_END.findall(data)):
            return None
    try:
        json.loads(data, object_pairs_hook=_no_duplicates)
    except _Duplicate as found:
        return str(found)
    except ValueError:  # not JSON to Python's parser (pydantic took it): nothing to say
        return None
    return None
