"""Rating (engine/billing/) against docs/design.md §3.3 and the naive reference."""

from __future__ import annotations

import calendar
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.billing.adjust import adjustments
from engine.billing.invoice import Invoice, invoice_for
from engine.billing.meter import billed_seconds
from engine.billing.money import round_money
from engine.billing.periods import US_PER_S, period_bounds, period_of
from engine.billing.price_book import (
    PriceBook,
    PriceVersion,
    Rates,
    finalises_at,
    price_book_errors,
)
from engine.billing.rate import InvoiceLine, rate_instance
from engine.policies.spec_catalogue import (
    DEFAULT_CATALOGUE,
    Spec,
    SpecChoice,
    SpecRejected,
    round_up,
)
from tests import reference_billing as ref

D = Decimal
SPEC = Spec(D(1), D(2))


def sec(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> int:
    return calendar.timegm((y, mo, d, h, mi, s))


def us(second: int, micros: int = 0) -> int:
    return second * US_PER_S + micros


def pv(
    version: int,
    eff: int,
    rv: str = "0.00001",
    rg: str = "0.000001",
    *,
    currency: str = "EUR",
    minor_unit: int = 2,
    min_seconds: int = 0,
    **kw: Any,
) -> PriceVersion:
    return PriceVersion(version, eff, D(rv), D(rg), currency, minor_unit, min_seconds, **kw)


T0 = sec(2024, 1, 15)
BOOK = PriceBook((pv(1, sec(2020, 1, 1), "0.01", "0.001"),))  # 1 vCPU/2 GiB: 0.012 per second


def rate(intervals: list[tuple[int, int]], book: PriceBook = BOOK, **kw: Any) -> list[InvoiceLine]:
    return rate_instance("i-1", "acct-1", kw.pop("spec", SPEC), "runc", intervals, book, **kw)


def summary(lines: list[InvoiceLine]) -> list[tuple[str, int, int, int, Decimal]]:
    return [(x.period, x.price_version, x.seconds, x.topup_seconds, x.amount) for x in lines]


# --- seconds -------------------------------------------------------------------------------


def test_sub_second_interval_bills_its_second() -> None:
    assert billed_seconds([(us(5, 200_000), us(5, 700_000))]) == [(5, 6)]


def test_whole_second_interval_bills_only_that_second() -> None:
    assert billed_seconds([(us(5), us(6))]) == [(5, 6)]
    assert billed_seconds([(us(5), us(6, 1))]) == [(5, 7)]
    assert billed_seconds([(us(4, 999_999), us(6))]) == [(4, 6)]


def test_empty_interval_bills_nothing() -> None:
    assert billed_seconds([(us(5, 300), us(5, 300))]) == []
    assert rate([(us(T0, 1), us(T0, 1))]) == []


def test_backwards_interval_is_rejected() -> None:
    with pytest.raises(ValueError):
        billed_seconds([(us(6), us(5))])


def test_instance_that_never_starts_has_no_lines() -> None:
    assert rate([]) == []


def test_restart_storm_inside_one_second_bills_it_once() -> None:
    storm = [(us(T0, k * 1000), us(T0, k * 1000 + 500)) for k in range(1000)]
    assert billed_seconds(storm) == [(T0, T0 + 1)]
    assert summary(rate(storm)) == [("2024-01", 1, 1, 0, D("0.01"))]


def test_touching_and_overlapping_ranges_merge_into_one_run() -> None:
    ivs = [(us(10, 500_000), us(12, 100)), (us(12, 100), us(12, 200)), (us(13), us(15)),
           (us(11), us(14))]
    assert billed_seconds(ivs) == [(10, 15)]
    # Seconds 20 and 21 are touched by separate intervals: one run of 2, not two of 1.
    assert billed_seconds([(us(20, 900_000), us(21)), (us(21), us(21, 1))]) == [(20, 22)]


# --- months and price versions ---------------------------------------------------------------


def test_month_boundary_splits_lines() -> None:
    feb = sec(2024, 2, 1)
    lines = rate([(us(feb - 10), us(feb + 10))])
    assert summary(lines) == [
        ("2024-01", 1, 10, 0, D("0.12")),
        ("2024-02", 1, 10, 0, D("0.12")),
    ]
    assert period_of(feb - 1) == "2024-01" and period_of(feb) == "2024-02"
    assert period_bounds("2024-02") == (feb, sec(2024, 3, 1))


def test_price_change_mid_run() -> None:
    noon = sec(2024, 1, 15, 12)
    book = PriceBook((pv(1, sec(2020, 1, 1), "0.01", "0.001"), pv(2, noon, "0.02", "0.002")))
    lines = rate([(us(noon - 5, 500_000), us(noon + 5))], book)
    assert summary(lines) == [
        ("2024-01", 1, 5, 0, D("0.06")),
        ("2024-01", 2, 5, 0, D("0.12")),
    ]
    assert lines[1].price_per_second == D("0.024")
    assert lines[1].amount_exact == D("0.120")


def test_no_price_in_force_is_an_error() -> None:
    with pytest.raises(ValueError, match="no price version"):
        rate([(us(sec(2019, 1, 1)), us(sec(2019, 1, 1) + 1))])


def test_runtime_override_rates() -> None:
    book = PriceBook(
        (pv(1, 0, "0.01", "0.001", runtime_rates={"kata": Rates(D("0.1"), D("0.01"))}),)
    )
    kata = rate_instance("i", "a", SPEC, "kata", [(us(T0), us(T0 + 1))], book)
    runc = rate_instance("i", "a", SPEC, "runc", [(us(T0), us(T0 + 1))], book)
    assert kata[0].amount_exact == D("0.12") and runc[0].amount_exact == D("0.012")


# --- minimum seconds -------------------------------------------------------------------------


def test_short_run_topped_up_on_its_last_line() -> None:
    book = PriceBook((pv(1, 0, "0.01", "0.001", min_seconds=60),))
    lines = rate([(us(T0), us(T0 + 10))], book)
    assert summary(lines) == [("2024-01", 1, 10, 50, D("0.72"))]
    # Two separate runs are topped up separately; a run at the minimum is not.
    lines = rate([(us(T0), us(T0 + 10)), (us(T0 + 100), us(T0 + 160))], book)
    assert summary(lines) == [("2024-01", 1, 70, 50, D("1.44"))]


def test_topup_at_last_seconds_price_in_new_version() -> None:
    noon = sec(2024, 1, 15, 12)
    book = PriceBook(
        (pv(1, 0, "0.01", "0.001", min_seconds=0), pv(2, noon, "0.02", "0.002", min_seconds=60))
    )
    lines = rate([(us(noon - 2), us(noon + 3))], book)
    # The run's last second is under v2: v2's minimum applies and the top-up is priced there.
    assert summary(lines) == [
        ("2024-01", 1, 2, 0, D("0.02")),
        ("2024-01", 2, 3, 55, D("1.39")),  # 58 * 0.024 = 1.392
    ]


def test_topup_lands_in_new_month() -> None:
    feb = sec(2024, 2, 1)
    book = PriceBook((pv(1, 0, "0.01", "0.001", min_seconds=60),))
    lines = rate([(us(feb - 1, 500_000), us(feb + 1, 1))], book)  # seconds feb-1, feb, feb+1
    assert summary(lines) == [
        ("2024-01", 1, 1, 0, D("0.01")),
        ("2024-02", 1, 2, 57, D("0.71")),  # 59 * 0.012 = 0.708
    ]


# --- rounding ------------------------------------------------------------------------------


def test_round_money_is_half_up() -> None:
    assert round_money(D("0.005"), 2) == D("0.01")
    assert round_money(D("0.004999999"), 2) == D("0.00")
    assert round_money(D("0.015"), 2) == D("0.02")  # not banker's rounding
    assert round_money(D("2.5"), 0) == D("3")
    assert round_money(D("-0.005"), 2) == D("-0.01")  # ties go away from zero
    assert str(round_money(D("1"), 2)) == "1.00"


def test_line_at_exactly_half_a_cent_rounds_up() -> None:
    book = PriceBook((pv(1, 0, "0.0025", "0"),))
    lines = rate([(us(T0), us(T0 + 1))], book, spec=Spec(D(2), D(4)))  # 2 * 0.0025 = 0.005
    assert lines[0].amount_exact == D("0.005") and lines[0].amount == D("0.01")


def test_jpy_has_no_decimals() -> None:
    book = PriceBook((pv(1, 0, "0.5", "0.25", currency="JPY", minor_unit=0),))
    lines = rate([(us(T0), us(T0 + 5))], book)  # 5 * (0.5 + 0.5) = 5.0
    assert lines[0].amount == D("5") and lines[0].currency == "JPY"
    lines = rate([(us(T0), us(T0 + 5))], book, spec=Spec(D("0.25"), D("0.5")))  # 5 * 0.25
    assert lines[0].amount_exact == D("1.25") and str(lines[0].amount) == "1"
    lines = rate([(us(T0), us(T0 + 10))], book, spec=Spec(D("0.25"), D("0.5")))  # 2.5
    assert lines[0].amount == D("3")
    inv = invoice_for("acct-1", "2024-01", lines)
    assert inv.total == D("3") and inv.currency == "JPY"


# --- price book ----------------------------------------------------------------------------


def test_price_book_errors_are_all_reported() -> None:
    bad = [pv(2, 0, "-1", "0.1"), pv(1, 10, currency="JPY", minor_unit=0)]
    errors = price_book_errors(bad)
    assert any("rate_vcpu_s" in e for e in errors)
    assert any("currency" in e for e in errors)
    assert price_book_errors([pv(2, 0), pv(1, 10)]) == [
        "version 1 takes effect after 2 but numbers lower"
    ]
    assert price_book_errors([]) != []
    with pytest.raises(ValueError):
        PriceBook((pv(1, 0), pv(2, 0)))


def test_published_version_is_read_only() -> None:
    v = pv(1, 0, runtime_rates={"kata": Rates(D(1), D(1))})
    with pytest.raises(TypeError):
        v.runtime_rates["runc"] = Rates(D(0), D(0))  # type: ignore[index]


# --- spec catalogue ---------------------------------------------------------------------------


def test_spec_rounds_up_to_cheapest_holding_spec() -> None:
    def billed(v: str, m: str) -> Spec:
        choice = round_up(v, m)
        assert isinstance(choice, SpecChoice)
        return choice.billed

    assert billed("1", "1") == Spec(D(1), D(2))
    assert billed("0.3", "5") == Spec(D(1), D(5))
    assert billed("0.25", "0.5") == Spec(D("0.25"), D("0.5"))
    assert billed("0.1", "2.5") == Spec(D("0.5"), D(3))
    assert billed("4", "31") == Spec(D(8), D(32))
    assert billed("16", "120") == Spec(D(16), D(120))
    choice = round_up(D("0.3"), 5)
    assert isinstance(choice, SpecChoice) and choice.requested == Spec(D("0.3"), D(5))


def test_spec_tie_breaks_by_vcpu_then_memory() -> None:
    cat = [Spec(D(2), D(1)), Spec(D(1), D(3)), Spec(D(1), D(2))]
    choice = round_up(1, 1, cat, weights=(D(1), D(1)))  # all cost 3
    assert isinstance(choice, SpecChoice) and choice.billed == Spec(D(1), D(2))


def test_spec_rejection_lists_every_reason() -> None:
    r = round_up(0, 500)
    assert isinstance(r, SpecRejected)
    assert {x.code for x in r.reasons} == {"vcpu_not_positive", "memory_gib_above_catalogue"}
    r = round_up(32, 500)
    assert isinstance(r, SpecRejected)
    assert {x.code for x in r.reasons} == {"vcpu_above_catalogue", "memory_gib_above_catalogue"}
    r = round_up(0.5, "abc")  # type: ignore[arg-type]
    assert isinstance(r, SpecRejected)
    assert {x.code for x in r.reasons} == {"vcpu_not_exact", "memory_gib_not_a_number"}
    r = round_up("NaN", "-1")
    assert isinstance(r, SpecRejected)
    assert {x.code for x in r.reasons} == {"vcpu_not_a_number", "memory_gib_not_positive"}
    r = round_up(2, 8, [Spec(D(4), D(4)), Spec(D(1), D(8))])
    assert isinstance(r, SpecRejected) and [x.code for x in r.reasons] == ["no_spec_holds_both"]
    r = round_up(1, 1, [])
    assert isinstance(r, SpecRejected) and [x.code for x in r.reasons] == ["empty_catalogue"]


def test_default_catalogue_shape() -> None:
    assert len(DEFAULT_CATALOGUE) == len(set(DEFAULT_CATALOGUE))
    assert Spec(D("0.25"), D(2)) in DEFAULT_CATALOGUE
    assert Spec(D("0.25"), D(3)) not in DEFAULT_CATALOGUE


# --- finalisation, adjustments, invoices ----------------------------------------------------


def test_finalisation_waits_for_the_grace_of_the_version_in_force() -> None:
    feb = sec(2024, 2, 1)
    assert finalises_at("2024-01", BOOK) == feb + 3600
    short = PriceBook((pv(1, 0, grace_seconds=0),))
    assert finalises_at("2024-01", short) == feb


def test_adjustment_after_late_report() -> None:
    jan = sec(2024, 1, 20)
    on_time = [(us(jan), us(jan + 100))]
    late = [(us(jan + 1000), us(jan + 1050, 1))]  # 51 s reported after January froze
    finalised = rate(on_time)
    recomputed = rate(on_time + late)
    now = sec(2024, 2, 3)
    billed_in = "2024-02"
    assert now >= finalises_at("2024-01", BOOK)
    adj = adjustments(finalised, recomputed, billed_in=billed_in, corrects=("evt-9",))
    assert len(adj) == 1
    a = adj[0]
    assert (a.period, a.billed_in, a.instance_id, a.price_version) == ("2024-01", "2024-02",
                                                                       "i-1", 1)
    assert (a.finalised_amount, a.recomputed_amount, a.amount) == (D("1.20"), D("1.81"),
                                                                   D("0.61"))
    assert a.corrects == ("evt-9",)
    # The finalised invoice is untouched; February's carries the adjustment.
    jan_inv = invoice_for("acct-1", "2024-01", finalised)
    assert jan_inv.total == D("1.20")
    feb_lines = rate([(us(sec(2024, 2, 2)), us(sec(2024, 2, 2) + 10))])
    feb_inv = invoice_for("acct-1", "2024-02", feb_lines, adj)
    assert feb_inv.adjustments == (a,) and feb_inv.total == D("0.12") + D("0.61")
    # Unchanged lines give nothing; a wholly new line in a finalised period needs `periods`.
    assert adjustments(finalised, finalised, billed_in="2024-02") == []
    new = adjustments([], recomputed, billed_in="2024-02", periods=["2024-01"])
    assert [x.amount for x in new] == [D("1.81")]
    assert adjustments([], recomputed, billed_in="2024-02") == []
    # Only the named periods are corrected: February's lines are still open, not adjusted.
    scoped = adjustments(finalised + feb_lines, recomputed, billed_in="2024-03",
                         periods=["2024-01"])
    assert [x.period for x in scoped] == ["2024-01"]
    with pytest.raises(ValueError):
        adjustments(finalised, recomputed, billed_in="2024-01")


def test_invoice_total_and_hash() -> None:
    feb = sec(2024, 2, 1)
    a = rate_instance("i-1", "acct", SPEC, "runc", [(us(feb - 10), us(feb + 10))], BOOK)
    b = rate_instance("i-2", "acct", SPEC, "runc", [(us(feb - 3), us(feb - 1))], BOOK)
    other = rate_instance("i-3", "other", SPEC, "runc", [(us(feb - 3), us(feb - 1))], BOOK)
    inv = invoice_for("acct", "2024-01", a + b + other)
    assert isinstance(inv, Invoice)
    assert [x.instance_id for x in inv.lines] == ["i-1", "i-2"]
    assert inv.total == D("0.12") + D("0.02")
    assert invoice_for("acct", "2024-01", list(reversed(a + b))).content_hash == inv.content_hash
    c = rate_instance("i-2", "acct", SPEC, "runc", [(us(feb - 4), us(feb - 1))], BOOK)
    assert invoice_for("acct", "2024-01", a + c).content_hash != inv.content_hash
    with pytest.raises(ValueError, match="same key"):
        invoice_for("acct", "2024-01", a + a)
    empty = invoice_for("acct", "2023-05", a)
    assert empty.lines == () and empty.total == 0 and empty.currency is None


# --- properties: production == reference ----------------------------------------------------

BASES = [sec(2024, 1, 1), sec(2024, 2, 1), sec(2024, 3, 1), sec(2023, 6, 15, 12)]
RATES = ["0", "0.00001", "0.0000123", "0.000004444", "0.5", "1.25", "0.000000005", "0.0025"]
CURRENCIES = [("EUR", 2), ("JPY", 0), ("BHD", 3)]
SPAN = 900  # seconds either side of the base


@st.composite
def versions_st(draw: st.DrawFn, base: int) -> list[dict[str, Any]]:
    currency, minor = draw(st.sampled_from(CURRENCIES))
    n = draw(st.integers(1, 4))
    # Cluster some version changes next to the month boundary, where the runs cluster too.
    when = st.integers(base - SPAN + 1, base + SPAN) | st.integers(base - 30, base + 30)
    later = draw(st.lists(when, min_size=n - 1, max_size=n - 1, unique=True))
    effs = [base - SPAN - draw(st.integers(0, 3))] + sorted(later)
    out = []
    for i, eff in enumerate(effs):
        kata = draw(st.booleans())
        out.append(
            {
                "version": i + 1,
                "effective_from": eff,
                "rate_vcpu_s": D(draw(st.sampled_from(RATES))),
                "rate_gib_s": D(draw(st.sampled_from(RATES))),
                "currency": currency,
                "minor_unit": minor,
                "min_seconds": draw(st.sampled_from([0, 0, 1, 2, 5, 60, 300])),
                "runtime_rates": (
                    {"kata": (D(draw(st.sampled_from(RATES))), D(draw(st.sampled_from(RATES))))}
                    if kata
                    else {}
                ),
            }
        )
    return out


_GAPS = st.one_of(
    st.sampled_from([0, 0, -US_PER_S // 2, US_PER_S // 3, US_PER_S, 2 * US_PER_S, -1, 1]),
    st.integers(-10 * US_PER_S, 120 * US_PER_S),
)
_LENGTHS = st.one_of(
    st.sampled_from([0, 1, US_PER_S // 2, US_PER_S, 3 * US_PER_S]),
    st.integers(1, US_PER_S),
    st.integers(1, 200 * US_PER_S),
)


@st.composite
def intervals_st(draw: st.DrawFn, base: int) -> list[tuple[int, int]]:
    """A chain of intervals with gaps that may be zero (touching) or negative (overlapping)."""
    start = st.integers(base - SPAN, base + SPAN) | st.integers(base - 40, base + 10)
    t = us(draw(start)) + draw(st.sampled_from([0, 1, US_PER_S // 2]) | st.integers(0, US_PER_S))
    out = []
    for _ in range(draw(st.integers(0, 12))):
        t0 = max(us(base - SPAN), t + draw(_GAPS))
        t1 = t0 + draw(_LENGTHS)
        out.append((t0, t1))
        t = t1
    return draw(st.permutations(out))


@st.composite
def scenario_st(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    base = draw(st.sampled_from(BASES))
    versions = draw(versions_st(base))
    instances = []
    for k in range(draw(st.integers(1, 3))):
        spec = draw(st.sampled_from(DEFAULT_CATALOGUE[:40]))
        instances.append(
            {
                "instance_id": f"i-{k}",
                "vcpu": spec.vcpu,
                "memory_gib": spec.memory_gib,
                "runtime": draw(st.sampled_from(["runc", "kata"])),
                "intervals": draw(intervals_st(base)),
            }
        )
    return versions, instances


def to_book(versions: list[dict[str, Any]]) -> PriceBook:
    return PriceBook(
        tuple(
            PriceVersion(
                version=v["version"],
                effective_from=v["effective_from"],
                rate_vcpu_s=v["rate_vcpu_s"],
                rate_gib_s=v["rate_gib_s"],
                currency=v["currency"],
                minor_unit=v["minor_unit"],
                min_seconds=v["min_seconds"],
                runtime_rates={k: Rates(*r) for k, r in v["runtime_rates"].items()},
            )
            for v in versions
        )
    )


def rate_all(instances: list[dict[str, Any]], book: PriceBook) -> list[InvoiceLine]:
    lines: list[InvoiceLine] = []
    for inst in instances:
        lines += rate_instance(
            inst["instance_id"], "acct", Spec(inst["vcpu"], inst["memory_gib"]),
            inst["runtime"], inst["intervals"], book,
        )
    return lines


PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(scenario_st())
def test_rating_agrees_with_reference(
    scenario: tuple[list[dict[str, Any]], list[dict[str, Any]]],
) -> None:
    versions, instances = scenario
    lines = rate_all(instances, to_book(versions))
    expected = ref.reference_lines(instances, versions)
    got = {(x.period, x.instance_id, x.price_version): x for x in lines}
    assert got.keys() == expected.keys()
    for key, e in expected.items():
        g = got[key]
        assert (g.seconds, g.topup_seconds) == (e["seconds"], e["topup_seconds"]), key
        assert g.amount_exact == e["amount_exact"], key
        assert g.amount == e["amount"], key
    for period, total in ref.reference_totals(expected).items():
        assert invoice_for("acct", period, lines).total == total


@settings(PROPS, max_examples=100)
@given(scenario_st(), st.randoms(use_true_random=False))
def test_invoice_hash_stable_under_reordering(
    scenario: tuple[list[dict[str, Any]], list[dict[str, Any]]], rnd: Any
) -> None:
    versions, instances = scenario
    book = to_book(versions)
    shuffled = []
    for inst in instances:
        ivs = list(inst["intervals"])
        rnd.shuffle(ivs)
        shuffled.append({**inst, "intervals": ivs})
    rnd.shuffle(shuffled)
    a, b = rate_all(instances, book), rate_all(shuffled, book)
    for period in {x.period for x in a} | {x.period for x in b}:
        ia, ib = invoice_for("acct", period, a), invoice_for("acct", period, b)
        assert ia.content_hash == ib.content_hash and ia.total == ib.total


@settings(PROPS, max_examples=100)
@given(scenario_st(), st.data())
def test_adjustments_bring_finalised_totals_to_recomputed(
    scenario: tuple[list[dict[str, Any]], list[dict[str, Any]]], data: st.DataObject
) -> None:
    versions, instances = scenario
    book = to_book(versions)
    on_time = []
    for inst in instances:
        cut = data.draw(st.integers(0, len(inst["intervals"])))
        on_time.append({**inst, "intervals": inst["intervals"][:cut]})
    finalised, recomputed = rate_all(on_time, book), rate_all(instances, book)
    periods = sorted({x.period for x in finalised + recomputed})
    adj = adjustments(finalised, recomputed, billed_in="2099-01", periods=periods,
                      corrects=("late",))
    for period in periods:
        before = invoice_for("acct", period, finalised).total
        after = invoice_for("acct", period, recomputed).total
        assert before + sum((a.amount for a in adj if a.period == period), D(0)) == after
