"""JSON Schema files for other languages: one per command the engine takes and per VM or Pod
command it sends, plus the unions and the outcome envelope, each with the named limits."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import TypeAdapter

from schemas.commands import COMMAND_TYPES, Command
from schemas.infra import INFRA_COMMAND_TYPES, InfraCommand
from schemas.limits import named_limits
from schemas.outcomes import Outcome


def export(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    documents = {name: cls.model_json_schema() for name, cls in COMMAND_TYPES.items()}
    documents["Command"] = TypeAdapter(Command).json_schema()
    documents["Outcome"] = Outcome.model_json_schema()
    documents.update({name: cls.model_json_schema() for name, cls in INFRA_COMMAND_TYPES.items()})
    documents["InfraCommand"] = TypeAdapter(InfraCommand).json_schema()
    written = []
    for name, schema in sorted(documents.items()):
        path = directory / f"{name}.schema.json"
        # `x-limits`: every named limit (schemas/limits.py), incl. those no field can carry:
        # MAX_LINE_BYTES and MAX_DEPTH; a field's `x-limit` names the one it is bound by.
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema,
                  "x-limits": named_limits()}
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written


def export_runtime_classes(directory: Path, classes: list[dict]) -> list[Path]:
    """Kubernetes RuntimeClass objects (adapters.pods.runtime_classes), one JSON file each
    (`RuntimeClass-<name>.json`, which kubectl and kubernetes-validate read as YAML): the
    classes a Pod's `runtimeClassName` names, with the overhead placement counts."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for runtime_class in classes:
        path = directory / f"RuntimeClass-{runtime_class['metadata']['name']}.json"
        path.write_text(json.dumps(runtime_class, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
