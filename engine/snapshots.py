"""Snapshots of a cell's state (docs/design.md §7.3): a start-up reads the newest one and
the tail of the log after it, instead of the whole history.

A snapshot is the pickled `CellState` at a log position, compressed, with its SHA-256 and a
format. The format names this module's version and a fingerprint of the code that decides
(engine/ and schemas/) and of the libraries whose objects it holds: state written by other
code is never read as ours. A snapshot that is missing, unreadable, corrupt or of another
format is ignored with a warning and the cell is rebuilt from the log -- never wrong state.

Unpickling runs only the classes of an allow-list (our engine's, the standard library's
values, numpy's arrays): a forged snapshot row cannot make the writer import and call
anything else. (Whoever can write our tables can already forge the log itself; what stops
that is issue 13's hash chain, not this.)
"""

from __future__ import annotations

import copyreg
import gc
import hashlib
import importlib.metadata
import io
import logging
import pickle
import sys
import zlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

from engine.world import CellState

log = logging.getLogger(__name__)

VERSION = 1
ROOT = Path(__file__).resolve().parent.parent
# What a snapshot may name: classes of these modules (engine and schema classes, the
# library's aggregate bases, standard values), and numpy's array reconstructors. Only
# classes, so no function (eval, a topic resolver) can be reached and called.
ALLOWED_MODULES = ("builtins", "collections", "datetime", "decimal", "uuid",
                   "eventsourcing.domain", "numpy")
ALLOWED_PREFIXES = ("engine.", "schemas.")
ALLOWED_CALLABLES = {("numpy.core.multiarray", "_reconstruct"),
                     ("numpy._core.multiarray", "_reconstruct"),
                     ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
                     ("copyreg", "_reconstructor"), ("engine.snapshots", "frozen_mapping"),
                     ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}


@dataclass(frozen=True)
class Snapshot:
    cell: str
    position: int  # the notification id of the newest event folded in
    format: str
    digest: str  # SHA-256 of payload
    payload: bytes


class SnapshotStore(Protocol):
    """Where snapshots live: beside the log, one (newest) per cell."""

    def load(self, cell: str) -> Snapshot | None: ...

    def save(self, snapshot: Snapshot) -> None: ...

    def cells(self) -> list[str]: ...


@cache
def snapshot_format() -> str:
    """VERSION plus a fingerprint of the deciding code and the libraries pickled with it."""
    digest = hashlib.sha256()
    for folder in ("engine", "schemas"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            digest.update(str(path.relative_to(ROOT)).encode())
            digest.update(path.read_bytes())
    for library in ("eventsourcing", "numpy"):
        digest.update(f"{library}={importlib.metadata.version(library)}".encode())
    digest.update(sys.version.encode())
    return f"{VERSION}:{digest.hexdigest()[:16]}"


def freeze(state: CellState, position: int) -> Snapshot:
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    # Frozen mappings (rating's price versions) travel as their dicts.
    pickler.dispatch_table = {**copyreg.dispatch_table,
                              MappingProxyType: lambda m: (frozen_mapping, (dict(m),))}
    pickler.dump(state)
    payload = zlib.compress(buffer.getvalue(), 1)
    return Snapshot(state.cell, position, snapshot_format(),
                    hashlib.sha256(payload).hexdigest(), payload)


def frozen_mapping(values: dict[Any, Any]) -> MappingProxyType[Any, Any]:
    return MappingProxyType(values)


def thaw(snapshot: Snapshot, keep_seconds: int) -> CellState | None:
    """The cell's state, or None (with a warning saying why) if this snapshot cannot be
    trusted to be it."""
    why = _unusable(snapshot)
    if why is None:
        collecting = gc.isenabled()
        gc.disable()  # a snapshot is a heap of young objects: no cycle to find while loading
        try:
            state = _Unpickler(io.BytesIO(zlib.decompress(snapshot.payload))).load()
        except Exception as exc:  # any damage at all: rebuild from the log instead
            why = f"unreadable ({type(exc).__name__}: {exc})"
        else:
            if isinstance(state, CellState) and state.cell == snapshot.cell:
                state.keep_seconds = keep_seconds  # configuration, not state
                return state
            why = "holds something other than this cell's state"
        finally:
            if collecting:
                gc.enable()
    log.warning("snapshot of cell %r at position %d not used: %s; rebuilding from the log",
                snapshot.cell, snapshot.position, why)
    return None


def _unusable(snapshot: Snapshot) -> str | None:
    if snapshot.format != snapshot_format():
        return f"format {snapshot.format!r}, this code reads {snapshot_format()!r}"
    if hashlib.sha256(snapshot.payload).hexdigest() != snapshot.digest:
        return "its bytes do not match its digest"
    return None


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED_CALLABLES:
            return super().find_class(module, name)
        if module in ALLOWED_MODULES or module.startswith(ALLOWED_PREFIXES):
            found = super().find_class(module, name)
            if isinstance(found, type):
                return found
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a snapshot")


class MemorySnapshots:
    """Snapshots for the memory store (private to the process, like its log)."""

    def __init__(self) -> None:
        self.rows: dict[str, Snapshot] = {}

    def load(self, cell: str) -> Snapshot | None:
        return self.rows.get(cell)

    def save(self, snapshot: Snapshot) -> None:
        self.rows[snapshot.cell] = snapshot

    def cells(self) -> list[str]:
        return sorted(self.rows)
