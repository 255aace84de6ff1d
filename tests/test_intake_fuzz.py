"""Property (issue 11): whatever bytes arrive, `engine.apply` answers exactly one outcome per
line, a rejection records no domain event (the cell log may still record the outcome), and
the engine keeps deciding. Bytes, arbitrary JSON and mutated valid commands."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from adapters.bootstrap import Engine, connect
from schemas.outcomes import Outcome
from tests import builders as b
from tests.helpers import accepted, cell_with_ready_node

FUZZ = settings(max_examples=250, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
STORES = pytest.mark.parametrize("store_url", ["memory", "sqlite"], indirect=True)

# Values a hostile producer likes: lone surrogates, control characters, numbers past 64 bits,
# times as numbers, other digits, and ordinary JSON of every type.
# (Integers of thousands of digits are spliced in as bytes: json.dumps refuses them.)
NASTY = st.sampled_from([
    "\ud800", "\udfff", "a\x00b", "\x1b[31m", "\x85", "1700000000", 1700000000, "\u0663",
    2 ** 63, 2 ** 64, -(2 ** 63) - 1, 10 ** 400, 1e308, -0.0, True, False, None, "", " 0.5",
    "2199-01-01T00:00:00Z", "1969-12-31T23:59:59Z", "x" * 5000,
]) | st.builds(list) | st.builds(dict)
SCALARS = (st.none() | st.booleans() | st.integers(-(2 ** 80), 2 ** 80)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40) | NASTY)
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=20)


def _valid() -> list[Callable[[], dict[str, Any]]]:
    report = {"account": "acme", "instance_id": "w", "node_id": "general-00001"}
    return [
        lambda: b.create("w"),
        lambda: b.create("v", containers=2, node_selector={"zone": "a"}),
        lambda: b.tenant("StopInstance", "w", 5),
        lambda: b.pool(),
        lambda: b.price_book(t=1),
        lambda: b.tick(7),
        lambda: b.report("ReportInstanceRunning", 6, **report),
        lambda: b.report("ReportContainerExited", 6, container="c0", exit_code=1, **report),
        lambda: b.report("ReportNodeLost", 6, node_id="general-00001"),
    ]


VALID = _valid()


def _paths(document: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(document, dict):
        for key, value in document.items():
            yield from _paths(value, (*path, key))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            yield from _paths(value, (*path, index))


@st.composite
def mutated(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """A valid command with a few fields replaced, dropped or added, then maybe cut or
    spliced at the byte level; and its command_id when the line is still whole JSON."""
    command = copy.deepcopy(draw(st.sampled_from(VALID))())  # builders share their lists
    # Builders number their ids from a global counter: draw one instead, so that an example
    # replays byte for byte.
    command["command_id"] = f"fuzz-{draw(st.integers(0, 10 ** 6))}"
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from([p for p in _paths(command) if p])
                    | st.just(("command_id",)))  # the field every answer depends on
        parent = command
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "replace", "drop", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(JSON)
        elif action == "drop" and isinstance(parent, dict):
            parent.pop(path[-1], None)
        elif action == "drop":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=12) | st.sampled_from(["type", "command_id"]))] = \
                draw(JSON)
        else:
            parent.append(draw(JSON))
        if not path[:-1] and path[-1] != "command_id" and draw(st.booleans()):
            break  # often keep a readable command_id
    line = json.dumps(command, ensure_ascii=draw(st.booleans())).encode("utf-8",
                                                                        "surrogatepass")
    command_id = command.get("command_id")
    readable = (isinstance(command_id, str) and 1 <= len(command_id) <= 128
                and not any(ord(c) < 32 or 127 <= ord(c) < 160 or 0xD800 <= ord(c) < 0xE000
                            for c in command_id))
    cut = draw(st.sampled_from(["none", "none", "truncate", "splice"]))
    if cut == "truncate":
        line = line[:draw(st.integers(0, len(line)))]
    elif cut == "splice":
        at = draw(st.integers(0, len(line)))
        junk = draw(st.binary(max_size=8) | st.sampled_from(
            [b"\\ud800", b"\\u0000", b"[" * 5000, b"9" * 5000, b'"', b"\\", b"\xff"]))
        line = line[:at] + junk + line[at:]
    return line, command_id if readable and cut == "none" else None


def _domain_events_since(engine: Engine, after: int) -> list[str]:
    notes = engine.app.recorder.select_notifications(start=after + 1, limit=10_000)
    return [n.topic for n in notes if not n.topic.startswith("engine.domain.cell_log:")]


def _position(engine: Engine) -> int:
    return engine.app.recorder.max_notification_id() or 0


@pytest.fixture
def fuzzed(store_url: str) -> Iterator[Engine]:
    with connect(store_url) as engine:
        cell_with_ready_node(engine)
        accepted(engine, b.create("w"))
        yield engine
        # Alive, and still deciding: a valid command after all the fuzz is accepted.
        accepted(engine, b.create("after-the-fuzz", t=8))


def _check(engine: Engine, lines: list[bytes] | list[str]) -> list[Outcome]:
    before = _position(engine)
    outcomes = engine.apply(lines)
    assert len(outcomes) == len(lines)
    for outcome in outcomes:
        json.loads(outcome.to_json())  # every answer can be sent
    if all(o.status == "rejected" for o in outcomes):
        assert _domain_events_since(engine, before) == []
    return outcomes


@STORES
@FUZZ
@given(lines=st.lists(st.binary(max_size=300), min_size=1, max_size=4))
@example(lines=[b"[" * 10_000, b'{"command_id": "\\ud800", "type": "Tick"}'])
@example(lines=[b'{"command_id": "big", "cell": ' + b"9" * 5000 + b"}"])
def test_arbitrary_bytes(fuzzed: Engine, lines: list[bytes]) -> None:
    _check(fuzzed, lines)


@STORES
@FUZZ
@given(documents=st.lists(JSON, min_size=1, max_size=3), ascii_only=st.booleans())
@example(documents=[{**b.tick(9), "command_id": "\ud800"}], ascii_only=True)
def test_arbitrary_json(fuzzed: Engine, documents: list[Any], ascii_only: bool) -> None:
    _check(fuzzed, [json.dumps(d, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
                    for d in documents])


@STORES
@FUZZ
@given(case=mutated())
def test_mutated_commands(fuzzed: Engine, case: tuple[bytes, str | None]) -> None:
    line, command_id = case
    (outcome,) = _check(fuzzed, [line])  # one line, so a rejection is checked on its own
    if command_id is not None:  # readable: the producer hears back, whatever else is wrong
        assert outcome.command_id == command_id, outcome
