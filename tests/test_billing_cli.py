"""`cis invoices`: text, JSON, CSV and --explain on an embedded store."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from adapters.bootstrap import connect
from adapters.cli import main
from tests import builders as b
from tests.test_billing_engine import APRIL
from tests.test_billing_rebuild import _history


@pytest.fixture
def store(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'cis.db'}"
    with connect(url) as engine:
        _history(engine)
    return url


def cis(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    with pytest.raises(SystemExit) as done:
        main(list(args))
    assert done.value.code == 0
    return capsys.readouterr().out


def test_json_lists_finalised_and_open_invoices(store: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = json.loads(cis(capsys, "invoices", "--store", store, "--account", "acme", "--json"))
    assert out["as_of"] == b.at(APRIL + 3600).replace("+00:00", "Z")  # the newest event
    assert [(i["period"], i["status"]) for i in out["invoices"]] == [
        ("2026-02", "finalised"), ("2026-03", "finalised")]


def test_csv_has_a_row_per_line_adjustment_and_total(store: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    rows = list(csv.DictReader(io.StringIO(cis(capsys, "invoices", "--store", store,
                                                "--account", "acme", "--period", "2026-03",
                                                "--csv"))))
    assert [r["kind"] for r in rows] == ["adjustment", "total"]
    assert rows[0]["corrects"].startswith("instance/a#")


def test_text_and_explain(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    text = cis(capsys, "invoices", "--store", store, "--account", "acme", "--period", "2026-02")
    assert "hash verified" in text and "total" in text
    explained = json.loads(cis(capsys, "invoices", "--store", store, "--account", "acme",
                               "--period", "2026-02", "--explain", "a@1"))
    (line,) = explained
    (interval,) = line["intervals"]  # as billed at the close: still open, billed to its end
    assert interval["opened_by"] == "instance/a#3" and interval["closed_by"] is None
    assert line["adjustments"][0]["corrects"] == ["instance/a#5"]
    (adjustment,) = json.loads(cis(capsys, "invoices", "--store", store, "--account", "acme",
                                   "--period", "2026-03", "--explain", "1"))
    (interval,) = adjustment["recomputed"]["intervals"]  # the late report closed it
    assert interval["closed_by"] == "instance/a#5"


def test_bad_period_is_refused(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["invoices", "--store", store, "--account", "acme", "--period", "2026-13"])
    assert done.value.code == 2


@pytest.mark.parametrize("period", ["2026-02", "2026-03"])
def test_exports_name_each_lines_provenance(store: str, period: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """`--format csv|json`: one row per line, adjustment and total; each line's and
    adjustment's provenance reference expands, through --explain, into the events behind it."""
    args = ("invoices", "--store", store, "--account", "acme", "--period", period)
    as_csv = list(csv.DictReader(io.StringIO(cis(capsys, *args, "--format", "csv"))))
    as_json = json.loads(cis(capsys, *args, "--format", "json"))
    assert [r["kind"] for r in as_csv] == [r["kind"] for r in as_json]
    assert as_csv[-1]["kind"] == "total"
    billed = [r for r in as_json if r["kind"] != "total"]
    assert billed and all(r["provenance"] for r in billed)
    for row in billed:
        explained = json.loads(cis(capsys, *args, "--explain", row["provenance"]))
        assert explained and all(e["kind"] in ("line", "adjustment") for e in explained)
        assert all(f'"instance_id": "{row["instance_id"]}"' in json.dumps(e) for e in explained)


def test_a_finalised_invoice_shows_the_chain_head_it_pins(
        store: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The head recorded at finalisation is shown, and it is where the cell's chain stood."""
    out = json.loads(cis(capsys, "invoices", "--store", store, "--account", "acme", "--json"))
    heads = [i["chain_head"] for i in out["invoices"] if i["status"] == "finalised"]
    assert heads and all(len(h) == 64 and int(h, 16) >= 0 for h in heads)
    assert cis(capsys, "audit", "verify", "--store", store).startswith("intact")
    text = cis(capsys, "invoices", "--store", store, "--account", "acme", "--period", "2026-02")
    assert f"log chain head at finalisation {heads[0]}" in text
