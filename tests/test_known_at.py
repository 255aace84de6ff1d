"""Two times kept apart (docs/design.md §1.3): `--as-of T` is what was true at T as known
now; `--known-at K` is exactly the answer the engine gave at K, from the events recorded up
to K only. And the default `as_of` is the newest clock of the account's cells: neither the
batch size nor the cell that spoke last moves it."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from adapters import queries
from adapters.bootstrap import Engine, connect
from adapters.cli import main
from tests import builders as b
from tests.helpers import accepted, one
from tests.test_billing_engine import APRIL, BIG_NODE, DAY, RATES, cell, running


def cis(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    with pytest.raises(SystemExit) as done:
        main(list(args))
    assert done.value.code == 0
    return capsys.readouterr().out


def _in(cell_name: str, command: dict[str, Any]) -> dict[str, Any]:
    return {**command, "cell": cell_name}


def _two_cells() -> list[dict[str, Any]]:
    """acme runs an instance in az-1 from T0; az-2's clock is a month behind. The file ends
    with az-1, so one big batch stamps az-2 last, and one-by-one stamps az-1 last."""
    az1 = [b.price_book(-DAY, **RATES), b.networks(t=-DAY),
           b.pool(t=-DAY, min_nodes=1, kind="shared", node_models=[BIG_NODE]),
           b.report("ReportNodeReady", -DAY + 1, node_id="general-00001"), b.tick(-3600),
           b.create("a", 0), b.report("ReportInstanceRunning", 0, instance_id="a"),
           b.tick(3 * DAY)]
    setup_az2 = [_in("az-2", c) for c in (
        b.price_book(-40 * DAY, **RATES), b.networks(t=-40 * DAY),
        b.pool(t=-40 * DAY, min_nodes=1, kind="shared", node_models=[BIG_NODE]),
        b.report("ReportNodeReady", -40 * DAY + 1, node_id="general-00001"),
        b.tick(-39 * DAY))]
    return [az1[0], *setup_az2, *az1[1:]]


def _apply(tmp_path: Path, capsys: pytest.CaptureFixture[str], batch: int) -> str:
    commands = tmp_path / "commands.jsonl"
    commands.write_text("\n".join(b.lines(*_two_cells())) + "\n")
    url = f"sqlite:///{tmp_path / f'batch{batch}.db'}"
    outcomes = [json.loads(x) for x in cis(capsys, "apply", "--store", url, "--batch",
                                            str(batch), "--role", "any", str(commands))
                .splitlines()]
    assert all(o["status"] == "accepted" for o in outcomes), outcomes
    return url


def test_default_as_of_does_not_depend_on_batch_size(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]
                                                     ) -> None:
    answers = []
    for batch in (1, 1000):
        url = _apply(tmp_path, capsys, batch)
        answers.append([cis(capsys, kind, "--store", url, "--account", "acme", "--json")
                        for kind in ("usage", "invoices")])
    assert answers[0] == answers[1]
    usage = json.loads(answers[0][0])
    # az-1's clock (the newest of acme's cells), not az-2's a month behind.
    assert usage["as_of"] == b.at(3 * DAY)
    assert Decimal(usage["totals"]["USD"]) == Decimal("0.006") * 3 * DAY


def test_another_cell_behind_does_not_empty_an_account(engine: Engine) -> None:
    commands = _two_cells()
    accepted(engine, *commands[:-1])
    # The last batch names both cells, az-2 first: the log's newest event is az-2's stamp.
    accepted(engine, _in("az-2", b.tick(-39 * DAY + 60)), commands[-1])
    engine.update_projections()
    usage = queries.usage(engine, "acme")
    assert usage["as_of"] == b.at(3 * DAY) and usage["totals"] == {"USD": "1555.20"}
    assert queries.invoices(engine, "acme")["invoices"][0]["total"] == "1555.20"
    # An account with nothing has no default: other tenants' cells must not tell it when
    # they were last active.
    assert queries.usage(engine, "nobody")["as_of"] is None


# --- --known-at --------------------------------------------------------------------------


def _answers(engine: Engine) -> dict[str, Any]:
    engine.update_projections()
    return {"invoices": queries.invoices(engine, "acme"), "usage": queries.usage(engine, "acme"),
            "instances": queries.instances(engine, "acme")}


def _known(engine: Engine, at: datetime | int) -> dict[str, Any]:
    known = queries.known_at(engine, at, "acme")
    return {"invoices": queries.invoices(known, "acme"), "usage": queries.usage(known, "acme"),
            "instances": queries.instances(known, "acme")}


def test_known_at_gives_each_answer_as_it_was_given(engine: Engine) -> None:
    """Before and after a finalisation, and before and after a late report and the
    adjustment that corrects it: each answer comes back byte for byte."""
    cell(engine, book={"min_seconds": 60})
    running(engine, "a", -300.25)
    running(engine, "c", -5)
    given: list[tuple[int, datetime, dict[str, Any]]] = []

    def keep() -> None:
        answers = _answers(engine)
        position = engine.app.recorder.max_notification_id()
        given.append((position, queries.default_as_of(engine, "acme"), answers))

    keep()  # February open
    one(engine, b.tick(3600))  # February finalised: a still running
    keep()
    one(engine, b.tick(7200))
    keep()  # just before the late report
    one(engine, b.report("ReportInstanceTerminated", -10.75, instance_id="a", reason="late"))
    keep()  # the same clock: the adjustment is pending
    one(engine, b.tick(APRIL + 3600))  # March finalised with the adjustment
    keep()
    assert not given[0][2]["invoices"]["invoices"][0]["status"] == "finalised"
    assert given[3][2] != given[2][2] and given[3][1] == given[2][1]
    (march,) = [i for i in given[4][2]["invoices"]["invoices"] if i["period"] == "2026-03"]
    assert march["status"] == "finalised" and march["adjustments"]
    for position, _, answers in given:
        assert json.dumps(_known(engine, position)) == json.dumps(answers)
    # By time: a time names the end of it, so the answers of batches with a clock of their
    # own come back (the late report shares the tick's clock: only a position tells).
    for i in (0, 1, 3, 4):
        assert json.dumps(_known(engine, given[i][1])) == json.dumps(given[i][2])
    # As of a time, as known now: the late report is known, the later finalisation too.
    now = queries.invoices(engine, "acme", as_of=given[1][1])
    assert [i["period"] for i in now["invoices"]] == ["2026-02", "2026-03"]
    assert now != given[1][2]["invoices"]


def test_known_at_before_anything_is_empty(engine: Engine) -> None:
    cell(engine)
    running(engine, "a", 10)
    engine.update_projections()
    known = queries.known_at(engine, b.T0 - timedelta(days=30), "acme")
    assert queries.instances(known, "acme") == []
    assert queries.invoices(known, "acme") == {"account": "acme", "as_of": None,
                                               "invoices": []}


def test_an_account_without_cells_folds_nothing(engine: Engine) -> None:
    """A tenant with no instance must not make a known-at query read every cell's log."""
    cell(engine)
    running(engine, "a", 10)
    engine.update_projections()
    known = queries.known_at(engine, b.at(3 * DAY), "nobody")
    assert known.events == 0 and known.clocks == {}
    assert queries.instances(known, "nobody") == []
    assert queries.known_at(engine, b.at(3 * DAY), "acme").events > 0


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_cli_known_at_reprints_what_was_printed(store_url: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    with connect(store_url) as engine:
        cell(engine, book={"min_seconds": 60})
        running(engine, "a", -300.25)
        one(engine, b.tick(3600))
    printed, position = {}, None
    for kind in ("instances", "usage", "invoices"):
        printed[kind] = cis(capsys, kind, "--store", store_url, "--account", "acme", "--json")
    with connect(store_url) as engine:
        position = engine.app.recorder.max_notification_id()
        one(engine, b.report("ReportInstanceTerminated", -10.75, instance_id="a",
                             reason="late"))
        one(engine, b.tick(APRIL + 3600))
    assert cis(capsys, "invoices", "--store", store_url, "--account", "acme",
               "--json") != printed["invoices"]
    for kind in ("instances", "usage", "invoices"):
        assert cis(capsys, kind, "--store", store_url, "--account", "acme", "--json",
                   "--known-at", str(position)) == printed[kind]
    text = cis(capsys, "invoices", "--store", store_url, "--account", "acme",
               "--known-at", b.at(3599))
    # Then the clock was the report that a runs: nothing billed yet, nothing finalised.
    assert text == "account acme, as of 2026-02-28T23:54:59.750000Z\n"
    # The late report moved no clock: at the tick's time it is known too (a position tells
    # the two apart).
    text = cis(capsys, "invoices", "--store", store_url, "--account", "acme",
               "--known-at", b.at(3600))
    assert "finalised" in text and "corrects (pending)" in text

