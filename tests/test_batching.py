"""A batch is cut at its size or at MAX_BATCH_BYTES of lines, whichever comes first, so a
tenant's maximal lines never make one cell-log event (which keeps every decided command) huge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapters.batching import batches, cut
from adapters.bootstrap import connect
from adapters.cli import main
from schemas.limits import MAX_BATCH_BYTES, MAX_LINE_BYTES
from tests.test_hostile_input import _max_create


def test_batches_end_at_their_size_or_their_bytes() -> None:
    assert [len(b) for b in batches([b"x"] * 7, 3)] == [3, 3, 1]
    heavy = [b"y" * 40] * 5
    assert [len(b) for b in batches(heavy, 100, max_bytes=100)] == [3, 2]
    assert [len(b) for b in batches([b"z" * 500, b"a"], 10, max_bytes=100)] == [1, 1]
    items = list(range(10))
    assert [list(s) for s in cut(items, 4, lambda _: 1)] == [items[:4], items[4:8], items[8:]]


def test_apply_cuts_a_batch_of_maximal_lines_by_bytes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    command = _max_create()
    lines = []
    count = MAX_BATCH_BYTES // MAX_LINE_BYTES + 8  # more than one batch's bytes
    for k in range(count):
        command.update(command_id=f"big-{k}", instance_id=f"big-{k}")
        lines.append(json.dumps(command, ensure_ascii=False))
    source = tmp_path / "big.jsonl"
    source.write_text("\n".join(lines) + "\n")
    store = f"sqlite:///{tmp_path / 'cis.db'}"
    with pytest.raises(SystemExit) as done:
        main(["apply", "--store", store, "--role", "any", "--batch", "1000", str(source)])
    assert done.value.code == 0
    assert len(capsys.readouterr().out.splitlines()) == count  # every line answered
    with connect(store) as engine:
        logs = [e for _, e in engine.app.read()
                if type(e).__qualname__ == "CellLog.CommandsHandled"]
    assert len(logs) >= 2  # one --batch 1000, cut by its bytes
    assert sum(len(e.outcomes) for e in logs) == count
