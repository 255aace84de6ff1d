"""The hash chain (docs/design.md §2.11): every stored event is linked into its cell's chain
in the transaction that stores it, the same on every store; `cis audit verify` recomputes it
and names each changed, deleted, inserted or moved event; a finalised invoice carries its
cell's head; heads survive restarts from snapshots and write conflicts. Tampering is done
with SQL on the store's own tables, as an intruder would."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import psycopg
import pytest

from adapters import queries
from adapters.audit_chain import HEADS_FORMAT, heads_document, verify_store
from adapters.bootstrap import Engine, connect
from adapters.cli import main
from engine import chain
from engine.billing import finalise
from engine.domain.invoice import Invoice, finalized_fields
from simulations.workloads import simulate
from tests import builders as b
from tests.helpers import one
from tests.test_billing_engine import cell, running

SHARED = ["sqlite", "postgres"]  # stores an intruder can reach from outside the process
TARGET = 40  # the notification an intruder picks


def _day(engine: Engine) -> None:
    simulate(engine, 16, seed=5, hours=8, tick_every_s=600)


def _heads(engine: Engine) -> dict[str, str]:
    result = verify_store(engine.app)
    assert result.intact, result.findings
    return {c: h["head"] for c, h in heads_document(result)["cells"].items()}


@contextmanager
def _sql(url: str) -> Iterator[Callable[..., list[Any]]]:
    """Run SQL on the store's tables as they are named there ({events}: the events table,
    {id}: its notification id column; %s marks parameters), in one committed transaction."""
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        conn = sqlite3.connect(parsed.path)

        def run_sqlite(statement: str, *params: Any) -> list[Any]:
            sql = statement.format(id="rowid", events="stored_events").replace("%s", "?")
            return conn.execute(sql, params).fetchall()
        try:
            yield run_sqlite
            conn.commit()
        finally:
            conn.close()
        return
    schema = parse_qs(parsed.query)["schema"][0]
    with psycopg.connect(url.split("?")[0]) as pg:
        pg.execute(f'SET search_path TO "{schema}"')

        def run_pg(statement: str, *params: Any) -> list[Any]:
            sql = statement.format(id="notification_id", events="cis_events")
            cursor = pg.execute(sql.encode(), params)
            return cursor.fetchall() if cursor.description else []
        yield run_pg


def _verify(url: str, *extra: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    with pytest.raises(SystemExit) as exit_:
        main(["audit", "verify", "--store", url, "--json", *extra])
    return int(exit_.value.code or 0), json.loads(capsys.readouterr().out)


def _row(run: Callable[..., list[Any]], nid: int) -> tuple[Any, ...]:
    (row,) = run("SELECT originator_id, originator_version, topic, state FROM {events} "
                 "WHERE {id} = %s", nid)
    return tuple(row)


# --- each kind of tamper, on each store an intruder can reach --------------------------

def _update_a_byte(run: Callable[..., list[Any]]) -> tuple[int, str]:
    state = bytearray(_row(run, TARGET)[3])
    state[len(state) // 2] ^= 0x01
    run("UPDATE {events} SET state = %s WHERE {id} = %s", bytes(state), TARGET)
    return TARGET, chain.CHANGED


def _delete_an_event(run: Callable[..., list[Any]]) -> tuple[int, str]:
    run("DELETE FROM {events} WHERE {id} = %s", TARGET)
    return TARGET, chain.DELETED


def _delete_an_event_and_its_link(run: Callable[..., list[Any]]) -> tuple[int, str]:
    run("DELETE FROM {events} WHERE {id} = %s", TARGET)
    run("DELETE FROM cis_event_chain WHERE notification_id = %s", TARGET)
    return TARGET + 1, chain.CHANGED  # the next event of the (one) cell no longer chains


def _insert_a_forged_event(run: Callable[..., list[Any]]) -> tuple[int, str]:
    oid, version, topic, state = _row(run, TARGET)
    run("INSERT INTO {events} (originator_id, originator_version, topic, state) "
        "VALUES (%s, %s, %s, %s)", oid, version + 1000, topic, state)
    (new,) = run("SELECT max({id}) FROM {events}")
    return int(new[0]), chain.UNCHAINED


def _swap_two_events(run: Callable[..., list[Any]]) -> tuple[int, str]:
    first, second = _row(run, TARGET), _row(run, TARGET + 7)
    for nid, (_, _, topic, state) in ((TARGET, second), (TARGET + 7, first)):
        run("UPDATE {events} SET topic = %s, state = %s WHERE {id} = %s", topic, state,
            nid)
    return TARGET, chain.CHANGED


TAMPERS = {"update": _update_a_byte, "delete": _delete_an_event,
           "delete with link": _delete_an_event_and_its_link,
           "insert": _insert_a_forged_event, "swap": _swap_two_events}


@pytest.mark.parametrize("store_url", SHARED, indirect=True)
@pytest.mark.parametrize("tamper", sorted(TAMPERS))
def test_verify_names_the_first_tampered_event(store_url: str, tamper: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    with connect(store_url) as engine:
        _day(engine)
    assert _verify(store_url, capsys=capsys)[0] == 0
    with _sql(store_url) as run:
        where, problem = TAMPERS[tamper](run)
    code, found = _verify(store_url, capsys=capsys)
    assert code == 1 and not found["intact"]
    first = found["first"][0]
    assert (first["notification_id"], first["cell"], first["problem"]) == (
        where, "az-1", problem)


@pytest.mark.parametrize("store_url", SHARED, indirect=True)
def test_a_chain_rewritten_whole_passes_but_not_the_heads_published_before(
        store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """What the chain does not prove: an intruder who recomputes every link after the
    event they changed leaves a chain that verifies. Heads published earlier catch it."""
    heads = tmp_path / "heads.json"
    with connect(store_url) as engine:
        _day(engine)
    assert _verify(store_url, "--export-heads", str(heads), capsys=capsys)[0] == 0
    published = json.loads(heads.read_text())["cells"]["az-1"]
    with _sql(store_url) as run:
        _update_a_byte(run)
        _rewrite_chain_from(run, TARGET)
    assert _verify(store_url, capsys=capsys)[0] == 0  # rewritten whole: it chains
    code, found = _verify(store_url, "--heads", str(heads), capsys=capsys)
    assert code == 1
    assert found["first"][0]["notification_id"] == published["notification_id"]


def _rewrite_chain_from(run: Callable[..., list[Any]], start: int) -> None:
    """What an intruder who knows the scheme does: recompute every link from `start` on
    (one cell in these logs)."""
    links = run("SELECT notification_id, hash FROM cis_event_chain ORDER BY notification_id")
    prev = bytes(links[start - 2][1])
    for nid, _ in links[start - 1:]:
        prev = chain.link(prev, _Stored(*_row(run, nid)))
        run("UPDATE cis_event_chain SET hash = %s WHERE notification_id = %s", prev, nid)


def _tamper_before_the_invoice(store_url: str) -> None:
    """Flip a byte of an event well before the invoice, then rewrite the chain whole."""
    with _sql(store_url) as run:
        state = bytearray(_row(run, 3)[3])
        state[len(state) // 2] ^= 0x01
        run("UPDATE {events} SET state = %s WHERE {id} = %s", bytes(state), 3)
        _rewrite_chain_from(run, 3)


@pytest.mark.parametrize("store_url", SHARED, indirect=True)
def test_an_older_invoice_still_holds_the_history_it_came_from(
        store_url: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An invoice an older engine finalised records the head before its batch: a chain
    rewritten from before it no longer stands where the invoice says it stood."""
    with connect(store_url) as engine:
        def older_fields(cell_: str, invoice: Any) -> dict[str, Any]:  # as engines before §2.11
            head = engine.processor.loaded_world.parts[cell_].chain_head
            return {**finalized_fields(cell_, invoice), "chain_head": head.hex()}
        monkeypatch.setattr(finalise, "finalized_fields", older_fields)
        cell(engine)
        running(engine, "x", -100)
        one(engine, b.tick(3600))  # February finalised
        (invoice,) = [n for n, e in engine.app.read()
                      if isinstance(e, Invoice.InvoiceFinalized) and e.chain_head]
    assert _verify(store_url, capsys=capsys)[0] == 0
    _tamper_before_the_invoice(store_url)
    code, found = _verify(store_url, capsys=capsys)
    assert code == 1
    assert [(f["notification_id"], f["problem"].split(" as ")[0]) for f in found["first"]] \
        == [(invoice, "records its cell's chain head")]


@pytest.mark.parametrize("store_url", SHARED, indirect=True)
def test_an_invoice_pins_the_history_it_came_from(
        store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The head an invoice shows (its finalisation event's link), held by the customer,
    catches a chain rewritten from before it."""
    with connect(store_url) as engine:
        cell(engine)
        running(engine, "x", -100)
        one(engine, b.tick(3600))  # February finalised
        (invoice,) = [n for n, e in engine.app.read()
                      if isinstance(e, Invoice.InvoiceFinalized)]
        engine.update_projections()
        (shown,) = [i["chain_head"] for i in queries.invoices(engine, b.ACCOUNT)["invoices"]
                    if i["status"] == "finalised"]
    pinned = tmp_path / "heads.json"
    pinned.write_text(json.dumps({"format": HEADS_FORMAT, "cells": {b.CELL: {
        "notification_id": invoice, "head": shown}}}))
    assert _verify(store_url, "--heads", str(pinned), capsys=capsys)[0] == 0
    _tamper_before_the_invoice(store_url)
    assert _verify(store_url, capsys=capsys)[0] == 0  # rewritten whole: it chains
    code, found = _verify(store_url, "--heads", str(pinned), capsys=capsys)
    assert code == 1
    assert found["first"][0]["notification_id"] == invoice


class _Stored:
    def __init__(self, originator_id: Any, originator_version: int, topic: str,
                 state: bytes):
        self.originator_id, self.originator_version = originator_id, originator_version
        self.topic, self.state = topic, bytes(state)


# --- the chain as written, on every store -----------------------------------------------

def test_an_intact_log_verifies(store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with connect(store_url) as engine:
        _day(engine)
        result = verify_store(engine.app)
        assert result.intact and result.events > 100
        # The writer's heads are the ones verify recomputes.
        assert {c: s.chain_head.hex() for c, s in engine.processor.loaded_world.parts.items()
                if s.chain_head} == _heads(engine)
    if store_url != "memory://":  # a memory store ends with its process
        assert _verify(store_url, capsys=capsys) == (0, {
            "intact": True, "events": result.events, "cells": 1, "findings": 0, "first": []})


def test_every_store_chains_as_memory_does(store_url: str) -> None:
    """The same commands give the same heads on every store (`cis audit replay` re-runs
    commands on a memory store and compares)."""
    with connect("memory://") as memory:
        _day(memory)
        expected = _heads(memory)
    with connect(store_url) as engine:
        _day(engine)
        assert _heads(engine) == expected


def test_a_finalised_invoice_pins_its_own_link(store_url: str) -> None:
    """The event records no head (the chain counts batches, §2.11); the invoice shows the
    stored link of its finalisation event, which covers it and all before it in its cell."""
    with connect(store_url) as engine:
        cell(engine)
        running(engine, "x", -100)
        one(engine, b.tick(3600))  # February finalised
        finalised = [(n, e) for n, e in engine.app.read()
                     if isinstance(e, Invoice.InvoiceFinalized)]
        assert finalised and all(e.chain_head is None for _, e in finalised)
        recorder = engine.app.chained_recorder
        links = {nid: hashed for nid, _, hashed in recorder.select_links(1)}  # type: ignore[attr-defined]
        assert [recorder.link_of(e.originator_id, 1) for _, e in finalised] \
            == [links[n] for n, _ in finalised]
        assert recorder.link_of(finalised[0][1].originator_id, 2) is None
        engine.update_projections()
        shown = [i["chain_head"] for i in queries.invoices(engine, b.ACCOUNT)["invoices"]
                 if i["status"] == "finalised"]
        assert shown == [links[n].hex() for n, _ in finalised]
        _heads(engine)  # and the chain is intact


def _cell_lines(cell: str = b.CELL) -> list[str]:
    """A price book, a dedicated pool and a ready node in `cell`; then two creates. As
    lines: command ids are fixed once, so every run below decides the same commands."""
    commands = [b.price_book(), b.networks(), b.pool(min_nodes=1),
                b.report("ReportNodeReady", 0.5, node_id="general-00001"),
                b.create("x", 2), b.create("y", 3)]
    return [b.json.dumps({**c, "cell": cell}) for c in commands]


def _one_by_one(engine: Engine, lines: list[str]) -> None:
    for line in lines:
        assert engine.apply([line])[0].status == "accepted"


def test_the_chain_survives_restarts_from_snapshots(store_url: str) -> None:
    with connect("memory://") as once:
        commands: list[str] = []
        apply = once.apply
        once.apply = lambda items, *a, **k: (commands.extend(items), apply(items, *a, **k))[1]  # type: ignore[method-assign]
        _day(once)
    with connect("memory://") as never_stopped:  # the same batches (each command alone)
        for command in commands:
            never_stopped.apply([command])
        expected = _heads(never_stopped)
    with connect(store_url) as restarted:
        for i, command in enumerate(commands):
            if i % 5 == 0:
                restarted.processor.save_snapshots()  # a snapshot, then a short tail
            restarted.processor.forget()
            restarted.apply([command])
        assert _heads(restarted) == expected


@pytest.mark.parametrize("store_url", SHARED, indirect=True)
def test_a_write_conflict_does_not_fork_the_chain(store_url: str) -> None:
    *setup, create_x, create_y = _cell_lines()
    with connect(store_url) as first, connect(store_url) as second:
        _one_by_one(first, setup)
        second.processor.warm()  # loaded now: stale once `first` writes again
        _one_by_one(first, [create_x])
        _one_by_one(second, [create_y])  # conflicts, reloads (and its head), decides again
        assert second.processor.loaded_world.parts[b.CELL].chain_head == bytes.fromhex(
            _heads(second)[b.CELL])
        heads = _heads(second)
    with connect("memory://") as alone:  # the same commands, one writer
        _one_by_one(alone, [*setup, create_x, create_y])
        assert _heads(alone) == heads


def test_verify_checks_one_cell_and_exports_heads(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'cis.db'}"
    with connect(url) as engine:
        engine.apply(_cell_lines("az-1") + _cell_lines("az-2"))
        expected = _heads(engine)
    assert sorted(expected) == ["az-1", "az-2"]
    heads = tmp_path / "heads.json"
    code, found = _verify(url, "--cell", "az-2", "--export-heads", str(heads), capsys=capsys)
    assert code == 0 and found["cells"] == 1
    exported = json.loads(heads.read_text())["cells"]
    assert {c: h["head"] for c, h in exported.items()} == {"az-2": expected["az-2"]}


# --- a careless operator ----------------------------------------------------------------

def test_a_cell_the_log_never_mentions_is_not_intact(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """`--cell az-3` (a typo) must not answer "intact: 0 events"; the cells that exist still
    verify beside it."""
    url = f"sqlite:///{tmp_path / 'cis.db'}"
    with connect(url) as engine:
        engine.apply(_cell_lines("az-1"))
        assert [f.cell for f in verify_store(engine.app, {"az-1", "az-3"}).findings] == ["az-3"]
    code, found = _verify(url, "--cell", "az-3", capsys=capsys)
    assert code == 1 and found["first"][0]["cell"] == "az-3"
    assert "no event of cell 'az-3'" in found["first"][0]["problem"]
    assert _verify(url, "--cell", "az-1", capsys=capsys)[0] == 0


@pytest.mark.parametrize("action", ["verify", "replay"])
def test_an_audit_of_a_missing_sqlite_file_creates_nothing(
        action: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A mistyped path names the missing file, exits non-zero, and leaves no empty store
    behind (it used to create one, then call it intact)."""
    path = tmp_path / "typo" / "cis.db"
    with pytest.raises(SystemExit) as exit_:
        main(["audit", action, "--store", f"sqlite:///{path}"])
    assert "no such database file" in str(exit_.value.code)
    assert not path.parent.exists()
    with pytest.raises(SystemExit) as exit_:  # always empty: nothing to call intact
        main(["audit", action, "--store", "memory://"])
    assert "nothing to read" in str(exit_.value.code)
