"""The simulated infrastructure kept in a file, so it outlives the driver process.

A real cloud or API server keeps its VMs and Pods when the driver talking to it is killed;
an in-memory simulation would lose them, and a crash test of `cis driver … --provider
simulated` would prove nothing. `PersistedWorld` wraps a `SimulatedInfrastructure` and writes
its nodes and Pods to a JSON file (atomically: temporary file, fsync, rename) after every
call that changes them, before the call returns; on start it loads them. What the watch had
already shown is forgotten on load: the restarted driver lists every fact again, as a
Kubernetes client lists before it watches, and the repeated reports carry the same
command_ids (the engine answers a repeat with its recorded outcome).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, fields, is_dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from adapters.drivers.simulated import SimulatedInfrastructure, _Node, _Pod
from adapters.ports import NodeStatus, PodObservation
from schemas.infra import DeletePod, ProvisionNode, RunPod, TerminateNode

VERSION = 1


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


def _node(row: dict[str, Any]) -> _Node:
    times = ("ready_at", "lost_at", "terminated_at")
    return _Node(**{k: _time(v) if k in times else v for k, v in row.items()})


def _fact(row: dict[str, Any]) -> PodObservation:
    return PodObservation(**{**row, "at": datetime.fromisoformat(row["at"])})


def _pod(row: dict[str, Any]) -> _Pod:
    return _Pod(command=RunPod.model_validate(row["command"]),
                containers=list(row["containers"]), restarts_on=frozenset(row["restarts_on"]),
                start_s=float(row["start_s"]), facts=[_fact(f) for f in row["facts"]],
                deleted_at=_time(row["deleted_at"]))


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return _plain(asdict(value))
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, frozenset | set):
        return sorted(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def dump(infra: SimulatedInfrastructure) -> dict[str, Any]:
    return {
        "version": VERSION,
        "nodes": {k: _plain(asdict(n)) for k, n in infra.nodes.items()},
        "pods": {k: {**{f.name: _plain(getattr(p, f.name)) for f in fields(p)
                        if f.name not in ("command", "emitted")},
                     "command": json.loads(p.command.model_dump_json())}
                 for k, p in infra.pods.items()},
    }


def restore(infra: SimulatedInfrastructure, state: dict[str, Any]) -> None:
    if state.get("version") != VERSION:
        raise ValueError(f"a simulated world of version {state.get('version')!r}, not "
                         f"{VERSION}")
    infra.nodes = {k: _node(v) for k, v in state["nodes"].items()}
    infra.pods = {k: _pod(v) for k, v in state["pods"].items()}  # emitted = 0: listed again


class PersistedWorld:
    """A `SimulatedInfrastructure` (both ports) whose nodes and Pods live in `path`."""

    def __init__(self, infra: SimulatedInfrastructure, path: Path) -> None:
        self.infra = infra
        self.path = path
        if path.exists():
            restore(infra, json.loads(path.read_text()))

    def _save(self) -> None:
        temporary = self.path.with_name(self.path.name + ".tmp")
        with open(temporary, "w") as out:
            json.dump(dump(self.infra), out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, self.path)

    # --- CloudDriver ----------------------------------------------------------------

    def provision(self, command: ProvisionNode) -> str:
        provider_id = self.infra.provision(command)
        self._save()
        return provider_id

    def terminate(self, command: TerminateNode) -> None:
        self.infra.terminate(command)
        self._save()

    def describe(self, node_group: str) -> Sequence[NodeStatus]:
        return self.infra.describe(node_group)

    # --- PodDriver ------------------------------------------------------------------

    def run(self, command: RunPod) -> None:
        self.infra.run(command)
        self._save()

    def delete(self, command: DeletePod) -> None:
        self.infra.delete(command)
        self._save()

    def watch(self, timeout_s: float) -> Sequence[PodObservation]:
        return self.infra.watch(timeout_s)
