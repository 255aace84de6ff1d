"""Issue 11, hostile input at the parse boundary: every line gets exactly one outcome, which
names the line's command_id whenever it can be read, and a rejection changes nothing."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from adapters.bootstrap import Engine
from adapters.infra_commands import commands_in
from schemas.commands import CreateInstance
from schemas.export import export
from schemas.infra import RunPod
from schemas.limits import (
    BROKER_MAX_MESSAGE_BYTES,
    MAX_ARG_CHARS,
    MAX_ARGS,
    MAX_CONTAINERS,
    MAX_DEPTH,
    MAX_ENV_VARS,
    MAX_LINE_BYTES,
    MAX_MILLICORES,
    MAX_OUTCOME_BYTES,
    MAX_OUTCOME_EVENTS,
    MAX_OUTCOME_REASONS,
    MAX_PORTS,
)
from schemas.outcomes import NotACommand, Outcome, Reason, parse_command
from tests import builders as b
from tests.helpers import accepted, cell_with_ready_node, domain_snapshot, event_count


@pytest.fixture
def ready(engine: Engine) -> Engine:
    cell_with_ready_node(engine)
    return engine


def _line(command: dict[str, Any]) -> str:
    # ensure_ascii keeps a lone surrogate as the escape "\ud800": what a producer sends.
    return json.dumps(command, ensure_ascii=True)


def _rejected(engine: Engine, line: str | bytes, command_id: str | None) -> Outcome:
    """Exactly one outcome, rejected, naming `command_id`, and no domain event recorded."""
    before, events = domain_snapshot(engine), event_count(engine)
    outcomes = engine.apply([line])
    assert len(outcomes) == 1
    (outcome,) = outcomes
    assert outcome.status == "rejected" and outcome.reasons, outcome
    assert outcome.command_id == command_id, outcome
    assert domain_snapshot(engine) == before
    assert event_count(engine) == events  # a parse rejection records nothing at all
    json.loads(outcome.to_json())  # and the answer itself can always be sent
    if command_id is None:
        assert any(r.field == "command_id" for r in outcome.reasons), outcome
    return outcome


def _codes(outcome: Outcome) -> set[str | None]:
    return {r.code for r in outcome.reasons}


def _fields(outcome: Outcome) -> set[str]:
    return {r.field for r in outcome.reasons}


# --- issue 11, item 1: nesting ------------------------------------------------------------


def test_a_line_nested_ten_thousand_deep_is_answered(ready: Engine) -> None:
    outcome = _rejected(ready, "[" * 10_000 + "]" * 10_000, None)
    assert "too_deep" in _codes(outcome)


def test_a_deep_line_still_names_its_command_id(ready: Engine) -> None:
    command = b.tick(5)
    line = _line(command)[:-1] + ', "x": ' + "[" * 10_000 + "]" * 10_000 + "}"
    assert "too_deep" in _codes(_rejected(ready, line, command["command_id"]))
    # Up to the limit, depth is only the schema's business.
    line = _line(command)[:-1] + ', "x": ' + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "}"
    outcome = _rejected(ready, line, command["command_id"])
    assert "too_deep" not in _codes(outcome) and "x" in _fields(outcome)


# --- item 2: lone surrogates --------------------------------------------------------------


def test_a_lone_surrogate_in_the_command_id(ready: Engine) -> None:
    command = b.tick(5)
    command["command_id"] = "tick-\ud800"
    outcome = _rejected(ready, _line(command), None)
    assert "lone_surrogate" in _codes(outcome)


@pytest.mark.parametrize("path", [("cell",), ("containers", 0, "image"),
                                  ("containers", 0, "env", "A"), ("network", "vpc")])
def test_a_lone_surrogate_anywhere_names_its_field(ready: Engine, path: tuple[Any, ...]) -> None:
    command = b.create("x")
    command["containers"][0]["env"] = {"A": "a"}
    _set(command, path, "x\udc00y")
    outcome = _rejected(ready, _line(command), command["command_id"])
    assert "lone_surrogate" in _codes(outcome)
    assert ".".join(map(str, path)) in _fields(outcome)
    # A surrogate pair is text (and escaped, ASCII); cloud ids (network) are plain ASCII ids,
    # images ASCII references (finding 06).
    ascii_only = {("network", "vpc"): "vpc-2", ("containers", 0, "image"): "nginx:1.27"}
    _set(command, path, ascii_only.get(path, "x\ud83d\ude00y"))
    command["cell"] = b.CELL
    assert ready.apply([_line(command)])[0].status == "accepted"


# --- item 3: integers that do not fit a column ----------------------------------------------


@pytest.mark.parametrize("value", [2 ** 64, 2 ** 63, MAX_MILLICORES + 1])
def test_cpu_overhead_is_bounded(engine: Engine, value: int) -> None:
    accepted(engine, b.price_book())
    command = b.pool(cpu_overhead_millicores={"runc": value, "kata": 100})
    outcome = _rejected(engine, _line(command), command["command_id"])
    assert _fields(outcome) == {"cpu_overhead_millicores.runc"}
    # The largest allowed is stored and read back.
    accepted(engine, b.pool(cpu_overhead_millicores={"runc": MAX_MILLICORES}))
    engine.processor.forget()  # read back from the store
    pool = engine.processor.world.pool(b.CELL, "general")
    assert pool is not None and pool.config.cpu_overhead_millicores["runc"] == MAX_MILLICORES


# --- item 11: control characters ------------------------------------------------------------


@pytest.mark.parametrize("path", [("command_id",), ("containers", 0, "image"),
                                  ("containers", 0, "command", 0), ("containers", 0, "env", "A"),
                                  ("network", "subnet"), ("network", "security_groups", 0),
                                  ("node_selector", "zone")])
@pytest.mark.parametrize("char", ["\x00", "\x1b", "\x7f", "\x85"])
def test_no_text_field_takes_a_control_character(ready: Engine, path: tuple[Any, ...],
                                                 char: str) -> None:
    command = b.create("x", node_selector={"zone": "a"})
    command["containers"][0].update(command=["run"], env={"A": "a"})
    command["network"]["security_groups"] = ["sg"]
    _set(command, path, f"a{char}b")
    readable = None if path == ("command_id",) else command["command_id"]
    outcome = _rejected(ready, _line(command), readable)
    assert ".".join(map(str, path)) in _fields(outcome)


def test_a_control_character_in_a_report_reason(ready: Engine) -> None:
    command = b.report("ReportNodeLost", 3, node_id="general-00001", reason="gone\x00")
    assert _fields(_rejected(ready, _line(command), command["command_id"])) == {"reason"}


# --- item 12: integers past 2^63 keep the command_id -------------------------------------------


@pytest.mark.parametrize("digits", [4301, 20_000])
def test_a_huge_integer_is_a_reason_not_a_lost_line(ready: Engine, digits: int) -> None:
    command = b.report("ReportContainerExited", 3, account="acme", instance_id="x",
                       node_id="general-00001", container="c0", exit_code=0)
    line = _line(command).replace('"exit_code": 0', '"exit_code": ' + "9" * digits)
    outcome = _rejected(ready, line, command["command_id"])
    assert "exit_code" in _fields(outcome)
    assert "not_json" not in _codes(outcome)


# --- item 15: no coercion --------------------------------------------------------------------


@pytest.mark.parametrize(("field", "value"), [
    ("now", "1700000000"), ("now", 1700000000), ("schema_version", True),
    ("catch_up", "true"), ("catch_up", 1),
])
def test_tick_types_are_not_coerced(ready: Engine, field: str, value: Any) -> None:
    command = {**b.tick(5), field: value}
    assert field in _fields(_rejected(ready, _line(command), command["command_id"]))


@pytest.mark.parametrize(("field", "value"), [
    ("min_nodes", "1"), ("min_nodes", True), ("min_nodes", 1.0), ("start_cordoned", "false"),
    ("scale_down_utilisation_threshold", "0.5"), ("scale_down_utilisation_threshold", True),
])
def test_pool_types_are_not_coerced(engine: Engine, field: str, value: Any) -> None:
    command = b.pool(**{field: value})
    assert field in _fields(_rejected(engine, _line(command), command["command_id"]))


@pytest.mark.parametrize(("bad", "good"), [("\u0663", "0.5"), (" 0.5", "5E-1"), ("0.5 ", 0.5),
                                          ("1_0", "0.500"), ("0" * 100 + "1", "0.5")])
def test_decimals_are_numbers_or_plain_decimal_strings(ready: Engine, bad: str,
                                                       good: Any) -> None:
    command = b.create("x")
    command["containers"][0]["vcpu"] = bad
    assert "containers.0.vcpu" in _fields(_rejected(ready, _line(command),
                                                    command["command_id"]))
    # What producers send today is still taken: JSON numbers and decimal strings.
    command["containers"][0]["vcpu"] = good
    accepted(ready, command)


# --- limits on lines, lists and strings --------------------------------------------------------


def test_a_line_over_the_limit_is_answered_with_its_command_id(ready: Engine) -> None:
    command = b.create("x")
    command["containers"][0]["env"] = {"PAD": "x" * MAX_LINE_BYTES}
    outcome = _rejected(ready, _line(command), command["command_id"])
    assert _codes(outcome) == {"line_too_long"}


def test_a_huge_line_that_is_not_json(ready: Engine) -> None:
    outcome = _rejected(ready, b"\x00" * (4 * MAX_LINE_BYTES), None)
    assert "line_too_long" in _codes(outcome)


def test_non_json_names_its_command_id_when_it_can(ready: Engine) -> None:
    line = '{"command_id": "half-1", "type": "Tick", "cell": '
    outcome = _rejected(ready, line, "half-1")
    assert _codes(outcome) == {"not_json"}
    with pytest.raises(NotACommand):  # still not a command: a Kafka intake dead-letters it
        parse_command(line)


def test_parse_command_raises_nothing_else() -> None:
    for raw in [b"", b"\xff", b"null", b"[]", b'"x"', b"1e999", b"{}", b'{"command_id": 5}',
                b'{"command_id": "a\\u0000"}', "\ud800", b"{" * 100_000, b'"\\' * 1000]:
        try:
            outcome = parse_command(raw)
        except NotACommand as exc:
            outcome = exc.outcome
        assert isinstance(outcome, Outcome) and outcome.status == "rejected"
        assert outcome.command_id is None


# --- item 13: outcomes stay small ----------------------------------------------------------------


def test_an_outcome_of_hundreds_of_events_is_summarised(engine: Engine) -> None:
    accepted(engine, b.price_book())
    before = event_count(engine)
    line = json.dumps(b.pool(min_nodes=200, max_nodes=400))
    (outcome,) = engine.apply([line])
    assert len(outcome.events) == MAX_OUTCOME_EVENTS
    assert outcome.events_total is not None and outcome.events_total > MAX_OUTCOME_EVENTS
    assert event_count(engine) - before >= outcome.events_total  # (+ the cell log's entry)
    data = json.loads(outcome.to_json())
    assert data["events_total"] == outcome.events_total
    assert engine.apply([line]) == [outcome]  # the recorded outcome: summarised the same


def test_many_reasons_are_capped_with_a_summary(ready: Engine) -> None:
    command = b.create("x")
    command["containers"] = [{"name": f"C{k}", "image": "", "vcpu": "x", "memory_gib": "y"}
                             for k in range(MAX_CONTAINERS)]
    outcome = _rejected(ready, _line(command), command["command_id"])
    assert len(outcome.reasons) <= MAX_OUTCOME_REASONS + 1
    *shown, summary = outcome.reasons
    assert summary.code == "reasons_truncated"
    more = re.fullmatch(r"and (\d+) more reasons", summary.problem)
    assert more is not None and len(shown) + int(more[1]) == 4 * MAX_CONTAINERS  # all counted


def test_echoed_input_is_truncated(ready: Engine) -> None:
    command = {**b.tick(5), "type": "T" * 100_000}
    outcome = _rejected(ready, _line(command), command["command_id"])
    assert len(outcome.to_json()) < 2_000


def test_the_largest_possible_outcome_fits_its_limit() -> None:
    wide = "\U0001F600\"\\\x00\ud800" * 5_000  # 4 bytes of JSON per character at most
    outcome = Outcome(command_id="c" * 128, status="rejected", events=[wide] * 10_000,
                      reasons=[Reason(field=wide, problem=wide, code=wide)] * 10_000,
                      note=wide)
    assert len(outcome.to_json().encode()) <= MAX_OUTCOME_BYTES
    assert Outcome.model_validate_json(outcome.to_json()) == outcome  # stable once summarised


# --- what the engine sends stays under the broker's limit ---------------------------------------


def _max_create() -> dict[str, Any]:
    """A CreateInstance at every list limit, padded to just under MAX_LINE_BYTES."""
    command = b.create("x", vcpu="0.05", memory_gib="0.1", containers=MAX_CONTAINERS)
    for container in command["containers"]:
        container.update(command=[""] * MAX_ARGS, env={f"V{k}": "" for k in range(MAX_ENV_VARS)},
                         ports=list(range(1, MAX_PORTS + 1)))
    # Fill args with text whose JSON is as long in the manifest as in the line.
    room = MAX_LINE_BYTES - len(_line(command).encode()) - 64
    per_arg = min(MAX_ARG_CHARS, room // (MAX_CONTAINERS * MAX_ARGS) // 4)
    for container in command["containers"]:
        container["command"] = ["\U0001F600" * per_arg] * MAX_ARGS
    room = MAX_LINE_BYTES - len(json.dumps(command, ensure_ascii=False).encode()) - 16
    command["containers"][0]["command"][0] += "\"" * (room // 2)
    return command


def test_the_largest_create_yields_a_run_pod_well_under_the_broker_limit(ready: Engine) -> None:
    command = _max_create()
    line = json.dumps(command, ensure_ascii=False).encode()
    assert MAX_LINE_BYTES - 64 <= len(line) <= MAX_LINE_BYTES
    assert isinstance(parse_command(line), CreateInstance)
    assert ready.apply([line])[0].status == "accepted"
    (run,) = [c for c in commands_in(ready.app) if isinstance(c, RunPod)]
    size = len(run.model_dump_json().encode())
    assert size <= BROKER_MAX_MESSAGE_BYTES // 2, size
    # A little more would have been refused at intake, with the reason.
    command = {**command, "instance_id": "y", "command_id": "create-too-big"}
    command["containers"][1]["command"][0] += "a" * 1024
    outcome = _rejected(ready, json.dumps(command, ensure_ascii=False).encode(), "create-too-big")
    assert _codes(outcome) == {"line_too_long"}


def test_the_json_schema_names_every_limit(tmp_path: Path) -> None:
    export(tmp_path)
    schema = json.loads((tmp_path / "Command.schema.json").read_text())
    limits = schema["x-limits"]
    assert limits["MAX_LINE_BYTES"] == MAX_LINE_BYTES and limits["MAX_DEPTH"] == MAX_DEPTH
    container = schema["$defs"]["Container"]["properties"]
    assert container["env"]["x-limit"] == "MAX_ENV_VARS"
    assert container["env"]["maxProperties"] == MAX_ENV_VARS
    pool = json.loads((tmp_path / "ConfigurePool.schema.json").read_text())
    overhead = pool["properties"]["cpu_overhead_millicores"]["additionalProperties"]
    assert overhead["maximum"] == MAX_MILLICORES and overhead["x-limit"] == "MAX_MILLICORES"
    outcome = json.loads((tmp_path / "Outcome.schema.json").read_text())
    assert outcome["properties"]["events"]["maxItems"] == MAX_OUTCOME_EVENTS


def _set(document: Any, path: tuple[Any, ...], value: Any) -> None:
    for step in path[:-1]:
        document = document[step]
    document[path[-1]] = value
