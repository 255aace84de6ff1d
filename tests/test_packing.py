"""Packing: hand-built cases, validity properties, and the `.vbp` reader's validation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.policies.packing import (
    OFFLINE_POLICIES,
    ONLINE_RULES,
    Packing,
    lower_bound,
    pack_offline,
    pack_online,
)
from simulations.vbp import parse_vbp, read_summary


def _valid(p: Packing, items: list[list[int]], cap: list[int]) -> None:
    assert len(p.assignment) == len(items)  # every item packed exactly once
    assert set(p.assignment) == set(range(p.bins))
    loads = np.zeros((p.bins, len(cap)), dtype=np.int64)
    for i, b in enumerate(p.assignment):
        loads[b] += items[i]
    assert (loads <= np.asarray(cap)).all()


def test_online_first_fit_keeps_file_order() -> None:
    items = [[6, 1], [5, 1], [4, 1], [5, 1]]
    p = pack_online(items, [10, 10], "first_fit")
    assert p.assignment == (0, 1, 0, 1)


def test_scarce_fit_keeps_the_roomy_bin_for_later() -> None:
    # Bins hold (6,1) and (5,5). Best fit puts (3,3) with (5,5), so the next (5,5) needs a
    # third bin; only one seen item fits the (6,1) bin, so scarce_fit uses that one: 2 bins.
    items = [[6, 1], [5, 5], [3, 3], [5, 5]]
    assert pack_online(items, [10, 10], "best_fit").assignment == (0, 1, 1, 2)
    p = pack_online(items, [10, 10], "scarce_fit")
    assert p.assignment == (0, 1, 0, 1)
    assert p.bins == 2


def test_offline_finds_perfect_pairs() -> None:
    items = [[7, 3], [3, 7], [6, 4], [4, 6], [5, 5], [5, 5]]
    p = pack_offline(items, [10, 10], time_budget=0.2)
    assert p.bins == 3 == lower_bound(np.asarray(items), np.asarray([10, 10]))
    _valid(p, items, [10, 10])


def test_lower_bound_is_max_over_dimensions() -> None:
    assert lower_bound(np.array([[5, 1], [5, 1], [5, 1]]), np.array([10, 10])) == 2


def test_empty_and_bad_inputs() -> None:
    assert pack_offline([], [3]).bins == 0
    with pytest.raises(ValueError):
        pack_online([[4]], [3])
    with pytest.raises(KeyError):
        pack_online([[1]], [3], "nope")


items_st = st.integers(1, 3).flatmap(
    lambda d: st.tuples(
        st.lists(st.integers(1, 20), min_size=d, max_size=d),
        st.lists(st.lists(st.integers(0, 20), min_size=d, max_size=d), max_size=30),
    )
)


@settings(max_examples=60, deadline=None)
@given(data=items_st, rule=st.sampled_from(ONLINE_RULES))
def test_online_packings_are_valid(data, rule) -> None:
    cap, raw = data
    items = [[min(x, c) for x, c in zip(it, cap, strict=True)] for it in raw]
    _valid(pack_online(items, cap, rule), items, cap)


@settings(max_examples=40, deadline=None)
@given(data=items_st, cut=st.integers(min_value=0, max_value=30))
def test_scarce_fit_is_online(data, cut) -> None:
    # Appending items never changes where earlier items went.
    cap, raw = data
    items = [[min(x, c) for x, c in zip(it, cap, strict=True)] for it in raw]
    full = pack_online(items, cap, "scarce_fit").assignment
    assert pack_online(items[:cut], cap, "scarce_fit").assignment == full[:cut]


@settings(max_examples=30, deadline=None)
@given(data=items_st, policy=st.sampled_from((None, *OFFLINE_POLICIES)))
def test_offline_packings_are_valid(data, policy) -> None:
    cap, raw = data
    items = [[min(x, c) for x, c in zip(it, cap, strict=True)] for it in raw]
    p = pack_offline(items, cap, policy=policy, time_budget=0.05)
    _valid(p, items, cap)
    if items:
        assert p.bins >= lower_bound(np.asarray(items), np.asarray(cap))


GOOD = "2\n10 10\n2\n3 4 1\n5 5 2\n"


def test_reader_parses_and_expands_demand() -> None:
    inst = parse_vbp(GOOD)
    assert inst.capacity == (10, 10)
    assert inst.items == ((3, 4), (5, 5), (5, 5))


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("2\n10 10\n2\n3 4 1\n", 5),          # truncated
        ("2\n10 x\n1\n3 4 1\n", 2),           # not an integer
        ("2\n10 10\n1\n3 4\n", 4),            # missing demand
        ("2\n10 10\n1\n30 4 1\n", 4),         # item larger than the bin
        ("2\n10 10\n1\n3 -4 1\n", 4),         # negative size
        ("2\n10 10\n1\n3 4 1\n9 9 1\n", 5),   # trailing data
        ("0\n\n", 1),                         # no dimensions
    ],
)
def test_reader_rejects_malformed(text: str, line: int) -> None:
    with pytest.raises(ValueError, match=rf":{line}:"):
        parse_vbp(text, name="f.vbp")


def test_reader_can_clamp_published_negative_sizes() -> None:
    assert parse_vbp("1\n10\n1\n-1 1\n", clamp_negative=True).items == ((0,),)


def test_summary_reader(tmp_path) -> None:
    f = tmp_path / "s.csv"
    f.write_text("instance_name\tLB\tOPT\tbest_overall\na\t3\t4\t4\nb\t2\t-1\t3\n")
    s = read_summary(f)
    assert s["a"].opt == 4 and s["b"].opt is None and s["b"].lb == 2


def test_offline_search_is_budgeted_in_iterations_not_time() -> None:
    # Same seed and iteration budget, no wall-clock cap: identical packings whatever the load.
    rng = np.random.default_rng(3)
    items = rng.integers(10, 60, size=(60, 3)).tolist()
    a = pack_offline(items, [150, 150, 150], time_budget=None, iterations=400)
    b = pack_offline(items, [150, 150, 150], time_budget=None, iterations=400)
    assert a == b
    _valid(a, items, [150, 150, 150])


def test_pack_file_looks_up_the_family_bound(tmp_path) -> None:
    from simulations.bench_packing import pack_file

    (tmp_path / "Fam" / "class1").mkdir(parents=True)
    f = tmp_path / "Fam" / "class1" / "x_6_2_0.vbp"
    f.write_text("2\n10 10\n3\n7 3 2\n3 7 2\n5 5 2\n")
    assert pack_file(f, iterations=50)["lower_bound"] is None  # no summary: still packs
    (tmp_path / "Fam_summary_known.csv").write_text(
        "instance_name\tLB\tOPT\tbest_overall\nx_6_2_0\t3\t3\t3\n")
    r = pack_file(f, iterations=50)
    assert r["lower_bound"] == 3 and r["bins"] == 3 and r["mode"] == "offline"
    on = pack_file(f, online=True)
    assert on["mode"] == "online" and len(on["assignment"]) == 6


@settings(max_examples=40, deadline=None)
@given(data=items_st, window=st.integers(1, 12), cut=st.integers(0, 30))
def test_window_packings_are_valid_and_windows_commit(data, window, cut) -> None:
    from engine.policies.batch import pack_windows

    cap, raw = data
    items = [[min(x, c) for x, c in zip(it, cap, strict=True)] for it in raw]
    full = pack_windows(items, cap, window)
    _valid(full, items, cap)
    # Whole windows are committed: later items never move earlier windows' items.
    cut -= cut % window
    assert pack_windows(items[:cut], cap, window).assignment == full.assignment[:cut]


def test_cis_pack_window(tmp_path, capsys) -> None:
    import json

    from adapters.cli import main

    path = tmp_path / "t.vbp"
    path.write_text("1\n10\n3\n2 1\n5 2\n8 1\n")  # items 2, 5, 5, 8 into bins of 10
    for window in ("1", "4"):
        with pytest.raises(SystemExit) as exit_:
            main(["pack", str(path), "--window", window, "--json"])
        assert exit_.value.code == 0
    one, four = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert (one["bins"], four["bins"]) == (3, 2) and four["mode"] == "window"
