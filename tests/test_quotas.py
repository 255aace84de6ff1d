"""Per-account quotas and launch rate limits: `SetAccountQuota`, `quota_exceeded`,
`rate_limited`, decided from the log alone (the same after a restart)."""

from __future__ import annotations

from typing import Any

from adapters.bootstrap import Engine, connect
from schemas.commands import SetAccountQuota
from schemas.outcomes import Outcome
from tests import builders as b
from tests.helpers import accepted, one, run


def quota(t: float = 0, account: str = b.ACCOUNT, **limits: Any) -> dict[str, Any]:
    return {"type": "SetAccountQuota", "command_id": b.cid("quota"), "cell": b.CELL,
            "issued_at": b.at(t), "account": account, **limits}


def _cell(engine: Engine, *commands: dict[str, Any]) -> None:
    accepted(engine, b.price_book(), b.networks(), b.networks("other"), b.networks("burst"),
             b.pool(max_nodes=100), *commands)


def _codes(outcome: Outcome) -> list[str | None]:
    return [r.code for r in outcome.reasons]


def test_vcpu_quota_counts_live_instances_billed_vcpu(engine: Engine) -> None:
    _cell(engine, quota(vcpu="1"))
    # 0.3 vCPU is billed as 0.5: two of them use the whole quota.
    accepted(engine, b.create("a", 1, vcpu="0.3"), b.create("b", 2, vcpu="0.3"))
    refused = one(engine, b.create("c", 3, vcpu="0.3"))
    assert refused.status == "rejected"
    assert _codes(refused) == ["quota_exceeded"]
    assert "used 1.0, asked 0.5, limit 1" in refused.reasons[0].problem
    # Another account has no quota; an ended instance no longer counts.
    accepted(engine, b.create("c", 4, account="other", vcpu="2"))
    accepted(engine, b.tenant("StopInstance", "a", 5), b.create("c", 6, vcpu="0.3"))


def test_no_quota_is_unlimited_and_a_quota_can_be_lifted(engine: Engine) -> None:
    _cell(engine, quota(vcpu="0.5"))
    accepted(engine, b.create("a", 1))
    assert _codes(one(engine, b.create("b", 2))) == ["quota_exceeded"]
    assert one(engine, quota(3)).status == "accepted"  # every field to its default: no quota
    accepted(engine, b.create("b", 4), b.create("c", 5, vcpu="2"))


def test_lowering_a_quota_under_use_keeps_instances_and_says_so(engine: Engine) -> None:
    _cell(engine)
    accepted(engine, b.create("a", 1, vcpu="2"))
    lowered = one(engine, quota(2, vcpu="1"))
    assert lowered.status == "accepted" and lowered.note is not None
    assert "above the new quota" in lowered.note
    assert one(engine, quota(3, vcpu="1")).note == "unchanged"


def test_launch_rate_is_a_token_bucket_driven_by_the_cells_clock(engine: Engine) -> None:
    _cell(engine, quota(launch_burst=3, launch_rate_per_second="0.5"))
    accepted(engine, b.tick(1), *(b.create(f"i{k}", 1) for k in range(3)))  # the burst at once
    refused = run(engine, b.tick(2.9), b.create("i3", 2.9))[1]
    assert _codes(refused) == ["rate_limited"]
    problem = refused.reasons[0].problem
    assert "tokens 0.950000 of burst 3" in problem
    assert "next token at 2026-03-01T00:00:03Z" in problem  # 1 s + 1 token / 0.5 per s
    accepted(engine, b.tick(3), b.create("i3", 3))
    # A refused create takes no token: a token later, one more launch and no further.
    outcomes = run(engine, b.tick(5), b.create("i4", 5), b.create("i5", 5))
    assert [o.status for o in outcomes] == ["accepted", "accepted", "rejected"]


def test_default_bucket_is_fargates_burst_of_100(engine: Engine) -> None:
    _cell(engine)
    outcomes = run(engine, *(b.create(f"i{k}", 1, account="burst") for k in range(101)))
    assert [o.status for o in outcomes] == ["accepted"] * 100 + ["rejected"]
    assert _codes(outcomes[-1]) == ["rate_limited"]
    # 20 tokens per second: 50 ms later there is one again.
    assert "next token at 2026-03-01T00:00:01.050000Z" in outcomes[-1].reasons[0].problem
    assert _codes(one(engine, b.create("i101", 1.05, account="burst"))) == ["rate_limited"]
    accepted(engine, b.tick(1.05), b.create("i101", 1.05, account="burst"))


def test_creates_dated_ahead_earn_no_tokens(engine: Engine) -> None:
    """A tenant may date creates ahead of the clock (by the skew), but only the clock
    refills the bucket: 300 creates dated 50 ms apart at one clock get the burst of 100."""
    _cell(engine)
    outcomes = run(engine, *(b.create(f"i{k}", 10 + 0.05 * k) for k in range(300)))
    assert [o.status for o in outcomes] == ["accepted"] * 100 + ["rejected"] * 200
    assert all(_codes(o) == ["rate_limited"] for o in outcomes[100:])
    # Tokens come only as the clock earns them: a create ahead holds its token until the
    # clock reaches its time, and then counts there (so the bucket, full until 10 s, frees a
    # token at 10.05 s, once two of them are behind the clock).
    assert "next token at 2026-03-01T00:00:10.050000Z" in outcomes[100].reasons[0].problem
    assert _codes(run(engine, b.tick(10.04), b.create("x", 10.05))[1]) == ["rate_limited"]
    accepted(engine, b.tick(10.05), b.create("x", 10.05))


def test_a_bucket_decides_alike_in_any_batches_and_after_restarts(store_url: str) -> None:
    """Creates dated ahead, the clock moving and the limits changing mid-stream: one batch,
    and one command per batch each after a restart, decide alike."""
    commands = b.lines(b.price_book(), b.networks(), b.pool(max_nodes=100),
                       quota(launch_burst=3, launch_rate_per_second="1"),
                       *(b.create(f"a{k}", 2 + k) for k in range(4)), b.tick(1),
                       b.create("b0", 1.5), b.tick(3), quota(4, launch_burst=5),
                       *(b.create(f"c{k}", 4 + k / 2) for k in range(6)), b.tick(9),
                       *(b.create(f"d{k}", 9) for k in range(6)))
    with connect("memory://") as once:
        expected = [(o.status, _codes(o), o.reasons and o.reasons[0].problem)
                    for o in once.apply(commands)]
    assert expected.count(("accepted", [], None)) < len(commands)
    with connect(store_url) as engine:
        got = []
        for command in commands:
            engine.processor.forget()
            (o,) = engine.apply([command])
            got.append((o.status, _codes(o), o.reasons and o.reasons[0].problem))
    assert got == expected


def test_an_earlier_claimed_time_refills_nothing(engine: Engine) -> None:
    _cell(engine, quota(launch_burst=1, launch_rate_per_second="1"))
    accepted(engine, b.create("a", 10))
    assert _codes(one(engine, b.create("b", 5))) == ["rate_limited"]  # never back in time
    accepted(engine, b.tick(11), b.create("b", 11))


def test_the_bucket_and_usage_are_rebuilt_from_the_log_after_a_restart(engine: Engine) -> None:
    _cell(engine, quota(vcpu="2", launch_burst=2, launch_rate_per_second="1"))
    accepted(engine, b.create("a", 1, vcpu="1"), b.create("b", 1, vcpu="0.5"))
    engine.processor.forget()  # the next batch rebuilds the world from the log
    assert _codes(one(engine, b.create("c", 1.5, vcpu="0.5"))) == ["rate_limited"]
    accepted(engine, b.tick(2))
    engine.processor.forget()
    assert _codes(one(engine, b.create("c", 2, vcpu="1"))) == ["quota_exceeded"]
    engine.processor.forget()
    accepted(engine, b.create("c", 2, vcpu="0.5"))


def test_both_reasons_at_once(engine: Engine) -> None:
    _cell(engine, quota(vcpu="0.5", launch_burst=1))
    accepted(engine, b.create("a", 1))
    assert sorted(_codes(one(engine, b.create("b", 1)))) == ["quota_exceeded", "rate_limited"]


def test_only_an_operator_sets_quotas(engine: Engine) -> None:
    _cell(engine)
    (outcome,) = engine.apply(b.lines(quota(vcpu="100")), role="tenant")
    assert outcome.status == "rejected"


def test_limits_are_bounded_and_named(engine: Engine) -> None:
    _cell(engine)
    for field, value in (("vcpu", "1000001"), ("launch_burst", 0), ("launch_rate_per_second", 0),
                         ("launch_rate_per_second", "0.0001"), ("vcpu", -1)):
        outcome = one(engine, quota(**{field: value}))
        assert outcome.status == "rejected" and [r.field for r in outcome.reasons] == [field]
    schema = SetAccountQuota.model_json_schema()["properties"]
    assert schema["launch_burst"]["x-limit"] == "MAX_LAUNCH_BURST"
    assert schema["launch_rate_per_second"]["x-limit"] == "MAX_LAUNCH_RATE"
    assert schema["vcpu"]["anyOf"][0]["x-limit"] == "MAX_ACCOUNT_VCPU"
