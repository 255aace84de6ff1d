"""Lines that different JSON readers would read differently get one answer here: duplicate
keys are refused, RFC 3339 times with up to nine fractional digits are taken (truncated to
the microsecond), JSON's -0.0 is zero, and a time that is not RFC 3339 says so by its code."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import lines
from schemas.outcomes import Outcome, parse_command
from tests import builders as b


def _reasons(result: object) -> list[tuple[str, str | None]]:
    assert isinstance(result, Outcome), result
    return [(r.field, r.code) for r in result.reasons]


def test_a_top_level_key_given_twice_is_refused() -> None:
    stop = b.tenant("StopInstance", "web-1", 5, account="acme")
    line = json.dumps(stop)[:-1] + ', "account": "globex"}'
    assert _reasons(parse_command(line)) == [("account", "duplicate_key")]


def test_a_key_spelled_with_an_escape_is_still_a_duplicate() -> None:
    stop = b.tenant("StopInstance", "web-1", 5, account="acme")
    line = json.dumps(stop)[:-1] + ', "\\u0061ccount": "globex"}'
    assert _reasons(parse_command(line)) == [("account", "duplicate_key")]


def test_a_nested_duplicate_is_refused_once_anything_looks_repeated() -> None:
    create = b.create("web-1")
    line = json.dumps(create).replace('"vcpu": "0.5"', '"vcpu": "0.5", "vcpu": "64"', 1)
    assert '"vcpu": "64"' in line
    assert _reasons(parse_command(line)) == [("vcpu", "duplicate_key")]


def test_keys_repeated_in_different_objects_are_fine() -> None:
    create = b.create("web-1")
    create["containers"] = [dict(create["containers"][0], name=f"c{i}") for i in range(3)]
    command = parse_command(json.dumps(create))
    assert not isinstance(command, Outcome)
    assert len(command.containers) == 3


def test_nanoseconds_are_taken_and_truncated_to_the_microsecond() -> None:
    command = parse_command(json.dumps(b.tick(0) | {"now": "2026-03-01T00:00:07.123456789Z"}))
    assert not isinstance(command, Outcome)
    assert command.now == datetime(2026, 3, 1, 0, 0, 7, 123456, tzinfo=UTC)


def test_ten_fractional_digits_are_not_rfc3339_and_the_code_says_so() -> None:
    line = json.dumps(b.tick(0) | {"now": "2026-03-01T00:00:07.1234567891Z"})
    assert _reasons(parse_command(line)) == [("now", "not_rfc3339")]
    line = json.dumps(b.tick(0) | {"now": "2026-03-01 00:00"})
    assert _reasons(parse_command(line)) == [("now", "not_rfc3339")]


def test_negative_zero_is_zero() -> None:
    book = b.price_book() | {"rate_per_vcpu_second": -0.0, "rate_per_gib_second": -0.0}
    command = parse_command(json.dumps(book))
    assert not isinstance(command, Outcome)
    for rate in (command.rate_per_vcpu_second, command.rate_per_gib_second):
        assert rate == 0 and not rate.is_signed() and str(rate) == "0.0"
    assert Decimal("-0.0").is_signed()  # what JSON's -0.0 would have been


_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=8)
_json = st.recursive(st.none() | st.booleans() | st.integers() | _text,
                     lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(_text, inner, max_size=3), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(document=st.dictionaries(_text, _json, min_size=1, max_size=4), indent=st.booleans(),
       ascii_only=st.booleans())
def test_duplicates_are_found_exactly(document: dict[str, object], indent: bool,
                                      ascii_only: bool) -> None:
    line = json.dumps(document, indent=1 if indent else None, ensure_ascii=ascii_only)
    assert lines.duplicate_key(line.encode()) is None
    key = next(iter(document))
    doubled = line.rstrip()[:-1].rstrip() + ", " + json.dumps(key) + " : 1}"
    assert lines.duplicate_key(doubled.encode()) == key


@pytest.mark.parametrize("account", ["default", "kube-system", "kube-public", "kube-node-lease"])
def test_kubernetes_own_namespaces_are_no_account(account: str) -> None:
    line = json.dumps(b.create("coredns", account=account))
    assert _reasons(parse_command(line)) == [("account", "reserved_account")]
