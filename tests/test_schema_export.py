"""The exported JSON Schemas (`cis schema export`) accept what the engine takes and sends:
a producer in another language that validates against them is never rejected for shape."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema

from adapters.bootstrap import connect
from adapters.infra_commands import commands_in
from schemas.commands import COMMAND_TYPES
from schemas.export import export
from schemas.infra import INFRA_COMMAND_TYPES
from tests.helpers import simulate


def _validator(directory: Path, name: str) -> jsonschema.protocols.Validator:
    schema = json.loads((directory / f"{name}.schema.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def test_a_file_per_command_and_per_infrastructure_command(tmp_path: Path) -> None:
    written = {p.name.removesuffix(".schema.json") for p in export(tmp_path)}
    assert written == {*COMMAND_TYPES, *INFRA_COMMAND_TYPES, "Command", "InfraCommand",
                       "Outcome"}


def test_every_command_and_outcome_of_a_simulated_day_is_valid(tmp_path: Path) -> None:
    export(tmp_path)
    commands, outcomes = _validator(tmp_path, "Command"), _validator(tmp_path, "Outcome")
    infra = _validator(tmp_path, "InfraCommand")
    applied: list[bytes] = []
    with connect("memory://") as engine:
        apply = engine.apply

        def recording(items, tracking=None):  # type: ignore[no-untyped-def]
            applied.extend(i if isinstance(i, bytes) else i.encode() for i in items)
            return apply(items, tracking)

        engine.apply = recording  # type: ignore[method-assign]
        simulate(engine, 30, seed=9, hours=24, tick_every_s=900)
        sent = commands_in(engine.app)
        recorded = [o for state in engine.processor.world.parts.values()
                    for o in state.outcomes.values()]
    kinds = {json.loads(raw)["type"] for raw in applied}
    assert {"CreateInstance", "ReportNodeReady", "ReportInstanceRunning", "Tick",
            "ConfigurePool", "PublishPriceBook"} <= kinds
    for raw in applied:
        commands.validate(json.loads(raw))
    for outcome in recorded:
        outcomes.validate(outcome)
    assert {c.type for c in sent} == set(INFRA_COMMAND_TYPES)
    for command in sent:
        infra.validate(json.loads(command.model_dump_json()))


def test_the_schemas_refuse_what_the_engine_refuses(tmp_path: Path) -> None:
    export(tmp_path)
    commands = _validator(tmp_path, "Command")
    bad = {"type": "CreateInstance", "command_id": "x", "cell": "Not A Cell",
           "issued_at": "2026-01-01T00:00:00Z", "account": "acme", "instance_id": "web-1",
           "pool": "general", "containers": [], "network": {"vpc": "v", "subnet": "s"}}
    problems = {tuple(e.absolute_path) for e in commands.iter_errors(bad)}
    assert ("cell",) in problems or () in problems  # the union reports at its root
    assert not commands.is_valid(bad)


def test_the_schemas_refuse_hostile_values_as_the_parser_does(tmp_path: Path) -> None:
    """Strict types, printable text and named bounds are in the schema, not only the code."""
    export(tmp_path)
    commands = _validator(tmp_path, "Command")
    tick = {"type": "Tick", "command_id": "t-1", "cell": "az-1", "now": "2026-01-01T00:00:00Z"}
    pool = {"type": "ConfigurePool", "command_id": "p-1", "cell": "az-1",
            "issued_at": "2026-01-01T00:00:00Z", "pool": "general",
            "node_models": [{"name": "1C2G", "millicores": 1000, "memory_mib": 2048}],
            "spec_catalogue": [{"vcpu": "0.5", "memory_gib": "1"}]}
    assert commands.is_valid(tick) and commands.is_valid(pool)
    for bad in [{**tick, "now": "1700000000"}, {**tick, "now": 1700000000},
                {**tick, "schema_version": True}, {**tick, "command_id": "t\x00"},
                {**tick, "command_id": "x" * 129},
                {**pool, "cpu_overhead_millicores": {"runc": 2 ** 63}},
                {**pool, "spec_catalogue": [{"vcpu": "\u0663", "memory_gib": "1"}]},
                {**pool, "labels": {"tier": "a\x1bb"}}]:
        assert not commands.is_valid(bad), bad
    for name in ("Command", "Outcome", "CreateInstance"):
        limits = json.loads((tmp_path / f"{name}.schema.json").read_text())["x-limits"]
        assert {"MAX_LINE_BYTES", "MAX_DEPTH", "MAX_OUTCOME_BYTES"} <= set(limits)
