"""Bad CLI input gets one line saying why and an exit code, never a traceback."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from adapters.bootstrap import connect
from adapters.cli import _lines, main
from schemas.limits import MAX_LINE_BYTES
from schemas.outcomes import parse_command
from tests.helpers import simulate


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as done:
        main(list(argv))
    code = done.value.code
    err = capsys.readouterr().err
    if isinstance(code, str):  # sys.exit("message"): printed by the interpreter, exit 1
        return 1, code
    return code or 0, err


def one_line(text: str) -> str:
    assert "Traceback" not in text
    return text.strip().splitlines()[-1]


@pytest.mark.parametrize("argv, says", [
    (["usage", "--account", "acme", "--as-of", "2250-01-01T00:00:00Z"], "supported window"),
    (["invoices", "--account", "acme", "--as-of", "1999-01-01T00:00:00Z"], "supported window"),
    (["usage", "--account", "acme", "--as-of", "yesterday"], "not an ISO time"),
    (["invoices", "--account", "acme", "--explain", "²"], "not a line"),
    (["invoices", "--account", "acme", "--explain", "1²"], "not a line"),
    (["instances", "--account", ""], "not an account name"),
    (["usage", "--account", ""], "not an account name"),
    (["invoices", "--account", ""], "not an account name"),
])
def test_bad_arguments_are_refused_before_anything_runs(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], says: str) -> None:
    code, err = run(capsys, *argv, "--store", f"sqlite:///{tmp_path}/cis.db")
    assert code == 2 and says in one_line(err)
    assert not (tmp_path / "cis.db").exists()


@pytest.mark.parametrize("store, says", [
    ("sqlite:///{tmp}", "unable to open database file"),  # a directory
    ("sqlite:///{tmp}/file/cis.db", "cannot create"),  # under a file
    ("postgresql://postgres@127.0.0.1:1/cis", "cannot use the store"),  # nothing listens
    ("postgresql://postgres:hunter2@127.0.0.1:5432/no_such_db_here", "does not exist"),
    ("postgresql://postgres@127.0.0.1:5432/postgres?schema=x;DROP TABLE y", "?schema="),
    ('postgresql://postgres@127.0.0.1:5432/postgres?schema=a"b', "?schema="),
])
def test_a_store_that_cannot_be_opened_is_one_line(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, store: str, says: str) -> None:
    (tmp_path / "file").write_text("not a directory")
    code, err = run(capsys, "instances", "--store", store.format(tmp=tmp_path))
    line = one_line(err)
    assert code == 1 and line.startswith("cis: ") and says in line
    assert "hunter2" not in line


def test_a_query_past_its_cost_bound_is_one_line(capsys: pytest.CaptureFixture[str],
                                                 tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/cis.db"
    with connect(store) as engine:
        simulate(engine, 30, seed=5, hours=10)  # globex has instances still running
    for command in ("usage", "invoices"):
        code, err = run(capsys, command, "--account", "globex", "--as-of",
                        "2099-01-01T00:00:00Z", "--store", store)
        assert code == 1 and "QUERY_MAX_PERIODS" in one_line(err)
    code, _ = run(capsys, "invoices", "--account", "globex", "--store", store)
    assert code == 0


def test_cis_apply_answers_a_huge_line_without_holding_it() -> None:
    huge = b'{"command_id":"big-1","type":"Tick","pad":"' + b"x" * (8 * MAX_LINE_BYTES)
    source = io.BytesIO(huge + b'"}\n' + b'{"command_id":"next"}\n')
    first, second = list(_lines(source))  # type: ignore[arg-type]
    assert len(first) == MAX_LINE_BYTES + 1  # the head only; the rest was skipped
    outcome = parse_command(first)
    assert outcome.command_id == "big-1"  # type: ignore[union-attr]
    assert json.loads(second) == {"command_id": "next"}
