"""`cis simulate --what-if` (issue 16, item 1): a log recorded by `cis apply` on SQLite,
re-run under the same policy, gives its decisions back event for event; under another policy
they part, and the report shows both runs side by side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from adapters.cli import main
from tests.helpers import simulated_lines

INSTANCES = 200
HOURS = 8


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A simulated day's commands, in the order they were decided, written by `cis apply`
    one batch each (as they came) into a SQLite store."""
    sent = simulated_lines(INSTANCES, seed=11, hours=HOURS, tick_every_s=900)
    folder = tmp_path_factory.mktemp("what-if")
    (folder / "commands.jsonl").write_bytes(b"\n".join(sent) + b"\n")
    url = f"sqlite:///{folder / 'recorded.db'}"
    with pytest.raises(SystemExit) as done:
        main(["apply", "--store", url, "--role", "any", "--batch", "1",
              str(folder / "commands.jsonl")])
    assert done.value.code == 0
    return url


def what_if(capsys: pytest.CaptureFixture[str], out: Path, *args: str) -> dict[str, Any]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(["simulate", "--out", str(out), "--json", "--what-if", *args])
    assert done.value.code in (0, None)
    return json.loads(capsys.readouterr().out)


def _figures(report: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    recorded, replayed = ({k: v for k, v in s.items() if k not in ("scenario", "description")}
                          for s in report["scenarios"])
    return recorded, replayed


@pytest.mark.parametrize("same", [[], ["--placement-policy", "best_fit"]])
def test_the_same_policy_gives_the_recorded_decisions(recorded: str, same: list[str],
                                                      tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    report = what_if(capsys, tmp_path, recorded, *same)
    decisions = report["decisions"]
    assert decisions["agree"], decisions["first_difference"]
    assert decisions["events_differing"] == 0 and decisions["not_replayable_batches"] == 0
    assert decisions["batches"] > INSTANCES and decisions["events"] > decisions["commands"]
    assert report["commands_changed"] == {}  # best_fit is what the day was recorded under
    recorded_figures, replayed_figures = _figures(report)
    assert recorded_figures == replayed_figures
    assert recorded_figures["launches"] > 0 and recorded_figures["scale_out"] > 0
    assert recorded_figures["revenue_usd"] not in (None, "0")
    assert recorded_figures["infra_commands"] is None  # no simulated infrastructure here


def test_another_placement_policy_parts_and_is_reported_beside(
        recorded: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = what_if(capsys, tmp_path, recorded, "--placement-policy", "worst_fit")
    assert report["commands_changed"] == {"ConfigurePool": 2}
    decisions = report["decisions"]
    assert not decisions["agree"] and decisions["events_differing"] > 2
    assert [s["scenario"] for s in report["scenarios"]] == ["recorded", "what-if"]
    assert report["scenarios"][1]["description"] == "placement policy worst_fit"
    text = (tmp_path / "report.md").read_text()
    assert "| | recorded | what-if |" in text
    assert "placement policy worst_fit" in text and "differ" in text
    assert "Not available from a log" in text
    assert {p.name for p in tmp_path.glob("*.png")} == {"nodes.png", "utilisation.png",
                                                        "pending.png"}


def test_a_price_book_changes_the_revenue_not_the_placements(
        recorded: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    book = tmp_path / "book.json"
    book.write_text(json.dumps({"rate_per_vcpu_second": "0.000022488",
                                "rate_per_gib_second": "0.00000247"}))
    report = what_if(capsys, tmp_path / "out", recorded, "--price-book", str(book))
    assert report["commands_changed"] == {"PublishPriceBook": 1}
    recorded_figures, replayed_figures = _figures(report)
    assert float(replayed_figures["revenue_usd"]) > 1.9 * float(recorded_figures["revenue_usd"])
    # Prices never move a placement: the instances' and nodes' figures are the same.
    assert {k: v for k, v in replayed_figures.items() if k not in ("revenue_usd", "margin")} \
        == {k: v for k, v in recorded_figures.items() if k not in ("revenue_usd", "margin")}


def test_a_bad_price_book_names_every_problem(recorded: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    book = tmp_path / "book.json"
    book.write_bytes(orjson.dumps({"rate_per_vcpu_second": "cheap", "cell": "az-9",
                                   "minor_unit": 9}))
    with pytest.raises(SystemExit) as done:
        main(["simulate", "--out", str(tmp_path), "--what-if", recorded,
              "--price-book", str(book)])
    message = str(done.value.code)
    assert "'cell' is not a price-book term" in message
    assert "rate_per_vcpu_second" in message and "minor_unit" in message
