"""Files an operator hands the CLI (a trace, a heads file, a price book) and numbers on its
command line: garbage gets one clear answer, never a traceback."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from adapters.bootstrap import connect
from adapters.cli import main
from adapters.cli_args import number_in, positive_float
from simulations.workload_sources import MAX_ROW_CHARS, read_csv
from tests.test_billing_rebuild import _history


def test_numbers_refuse_nan_and_infinity() -> None:
    for text in ("nan", "inf", "-inf", "0", "-1"):
        with pytest.raises(argparse.ArgumentTypeError):
            positive_float(text)
    with pytest.raises(argparse.ArgumentTypeError):
        number_in(float, 0, 1)("1.5")
    assert number_in(int, 0, low_open=True)("9" * 500) == int("9" * 500)


def test_a_trace_of_garbage_names_its_rows_and_stops_nothing(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_bytes(b"0,60,250,512\n" + b"\xff\xfe,1,2,3\n" + b"9" * (MAX_ROW_CHARS + 1)
                      + b"\n" + b"10,,500,1024\n")
    workload = read_csv(trace)
    assert len(workload.launches) == 2
    assert [s.line for s in workload.skipped] == [2, 3]


def test_a_trace_with_no_usable_row_still_runs(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_bytes(b"a" * (MAX_ROW_CHARS + 5) + b"\n")
    with pytest.raises(SystemExit) as done:
        main(["simulate", "--trace", str(trace), "--hours", "0.1", "--out",
              str(tmp_path / "out")])
    assert done.value.code in (0, None)
    assert "skipped" in capsys.readouterr().err


def test_a_deeply_nested_heads_file_is_refused_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = f"sqlite:///{tmp_path / 'cis.db'}"
    with connect(store) as engine:
        _history(engine)
    heads = tmp_path / "heads.json"
    heads.write_text("[" * 100_000)
    with pytest.raises(SystemExit) as done:
        main(["audit", "verify", "--store", store, "--heads", str(heads)])
    said = f"{done.value.code} {capsys.readouterr().err}"  # sys.exit("cis …: …") or stderr
    assert done.value.code not in (0, None) and "not a heads file" in said


@pytest.mark.parametrize("demand", ["99999999999999999999999", "100000000"])
def test_a_pack_file_asking_for_too_many_items_is_refused_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], demand: str) -> None:
    """A demand is a count: a 30-byte file must not ask for 10**23 items (a traceback) or
    10**8 (gigabytes)."""
    instance = tmp_path / "big.vbp"
    instance.write_text(f"2\n10 10\n1\n5 5 {demand}\n")
    with pytest.raises(SystemExit) as done:
        main(["pack", str(instance), "--json"])
    said = f"{done.value.code} {capsys.readouterr().err}"
    assert done.value.code not in (0, None) and "MAX_PACK_ITEMS" in said
