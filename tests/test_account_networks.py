"""Network ownership (hostile-probe finding 04): an operator records the VPCs, subnets and
security groups each account owns in a cell (`SetAccountNetworks`); a create naming an id
registered to other accounts only is refused `network_not_owned`, so no tenant's ENI lands in
another's subnet or security group. An id nobody registered stays free. Decided from the log
alone: the same after a restart or from a snapshot."""

from __future__ import annotations

import json
from typing import Any

from adapters.bootstrap import Engine, connect
from adapters.pods import pod_manifest
from schemas.commands import SetAccountNetworks
from tests import builders as b
from tests.helpers import accepted, instance, one, run

ACME = {"vpcs": ("vpc-acme",), "subnets": ("subnet-acme-private", "subnet-acme-public"),
        "security_groups": ("sg-acme-db", "sg-acme-web")}
ACME_NET = {"vpc": "vpc-acme", "subnet": "subnet-acme-private", "security_groups": ["sg-acme-db"]}
EVIL_NET = {"vpc": "vpc-evil", "subnet": "subnet-evil", "security_groups": ["sg-evil"]}


def _cell(engine: Engine) -> None:
    accepted(engine, b.price_book(), b.pool(max_nodes=10),
             b.networks("acme", **ACME),
             b.networks("evil", vpcs=("vpc-evil",), subnets=("subnet-evil",),
                        security_groups=("sg-evil",)))


def _not_owned(outcome: Any) -> list[tuple[str, str]]:
    assert outcome.status == "rejected"
    return [(r.field, r.code) for r in outcome.reasons]


def test_a_tenant_cannot_name_another_accounts_network(engine: Engine) -> None:
    _cell(engine)
    accepted(engine, b.create("db", 1, account="acme", network=ACME_NET))
    probe = one(engine, b.create("probe", 2, account="evil", network=ACME_NET))
    # Every offending id, each with its field.
    assert _not_owned(probe) == [("network.vpc", "network_not_owned"),
                                 ("network.subnet", "network_not_owned"),
                                 ("network.security_groups[0]", "network_not_owned")]
    assert "'subnet-acme-private'" in probe.reasons[1].problem
    assert "'evil'" in probe.reasons[1].problem
    assert engine.processor.world.instance(b.CELL, "evil", "probe") is None
    # One foreign id among its own is enough, and only that one is named.
    mixed = one(engine, b.create("probe", 3, account="evil",
                                 network={**EVIL_NET, "security_groups": ["sg-evil",
                                                                          "sg-acme-db"]}))
    assert _not_owned(mixed) == [("network.security_groups[1]", "network_not_owned")]
    # Its own network is fine, and its Pod is annotated with its own subnet only.
    accepted(engine, b.create("probe", 4, account="evil", network=EVIL_NET))
    evil = instance(engine, "probe", account="evil")
    notes = pod_manifest(evil, "n", "x")["metadata"]["annotations"]
    assert notes["cis.io/subnet"] == "subnet-evil"


def test_unregistered_ids_stay_free_and_registered_ones_are_exclusive(engine: Engine) -> None:
    accepted(engine, b.price_book(), b.pool())
    # Nobody registered these: any account may name them, as before registration existed.
    accepted(engine, b.create("a", 1, network={"vpc": "vpc-x", "subnet": "subnet-x"}))
    accepted(engine, b.networks("acme", 2, vpcs=("vpc-x",), subnets=("subnet-x",)))
    outcome = one(engine, b.create("b", 3, account="other",
                                   network={"vpc": "vpc-x", "subnet": "subnet-x"}))
    assert [r.code for r in outcome.reasons] == ["network_not_owned"] * 2
    assert "registered to another account" in outcome.reasons[0].problem
    assert "acme" not in outcome.reasons[0].problem  # who owns it is not told
    # Ids compare case-folded: a variant spelling is the same network.
    variant = one(engine, b.create("b", 3, account="other",
                                   network={"vpc": "VPC-X", "subnet": "Subnet-X"}))
    assert [r.code for r in variant.reasons] == ["network_not_owned"] * 2
    # A shared network: registered to both, both may name it.
    accepted(engine, b.networks("other", 4, vpcs=("vpc-x",), subnets=("subnet-x",)))
    accepted(engine, b.create("b", 5, account="other",
                              network={"vpc": "vpc-x", "subnet": "subnet-x"}))


def test_dropping_an_id_releases_it_and_leaves_running_instances(engine: Engine) -> None:
    _cell(engine)
    accepted(engine, b.create("db", 1, account="acme", network=ACME_NET))
    before = engine.processor.world.instance(b.CELL, "acme", "db")
    assert before is not None
    state, version = before.state, before.version
    # The private subnet and the db group are no longer acme's, and evil registers them.
    assert one(engine, b.networks("acme", 2, vpcs=("vpc-acme",),
                                  subnets=("subnet-acme-public",),
                                  security_groups=("sg-acme-web",))).status == "accepted"
    assert one(engine, b.networks("evil", 2, vpcs=("vpc-evil",),
                                  subnets=("subnet-evil", "subnet-acme-private"),
                                  security_groups=("sg-evil", "sg-acme-db"))).status == "accepted"
    refused = one(engine, b.create("db2", 3, account="acme", network=ACME_NET))
    assert _not_owned(refused) == [("network.subnet", "network_not_owned"),
                                   ("network.security_groups[0]", "network_not_owned")]
    accepted(engine, b.create("web", 4, account="acme", network={
        "vpc": "vpc-acme", "subnet": "subnet-acme-public", "security_groups": ["sg-acme-web"]}))
    after = engine.processor.world.instance(b.CELL, "acme", "db")
    assert after is not None and (after.state, after.version) == (state, version)
    assert after.network == ACME_NET


def test_the_same_set_in_another_order_is_unchanged(engine: Engine) -> None:
    _cell(engine)
    again = one(engine, b.networks("acme", 1, vpcs=("vpc-acme", "vpc-acme"),
                                   subnets=tuple(reversed(ACME["subnets"])),
                                   security_groups=tuple(reversed(ACME["security_groups"]))))
    assert again.status == "accepted" and again.note == "unchanged"


def test_ownership_is_rebuilt_from_the_log_and_from_a_snapshot(store_url: str) -> None:
    commands = b.lines(
        b.price_book(), b.pool(max_nodes=10), b.networks("acme", **ACME),
        b.create("db", 1, account="acme", network=ACME_NET),
        b.create("probe", 2, account="evil", network=ACME_NET),
        b.networks("acme", 3, vpcs=("vpc-acme",), subnets=("subnet-acme-public",)),
        b.networks("evil", 3, vpcs=("vpc-acme",), subnets=("subnet-acme-private",)),
        b.create("db2", 4, account="acme", network=ACME_NET),
        b.create("web", 5, account="acme", network={"vpc": "vpc-acme",
                                                     "subnet": "subnet-acme-public"}))
    with connect("memory://") as once:
        in_one_run = [o.to_json() for o in once.apply(commands)]
    assert [o["status"] for o in map(json.loads, in_one_run)] == [
        "accepted", "accepted", "accepted", "accepted", "rejected", "accepted", "accepted",
        "rejected", "accepted"]
    with connect(store_url) as restarted:
        processor = restarted.processor
        step_by_step = []
        for i, command in enumerate(commands):
            if i % 2:
                processor.save_snapshots()
            processor.forget()  # the next command rebuilds from the snapshot or the log
            step_by_step += [o.to_json() for o in restarted.apply([command])]
    assert step_by_step == in_one_run


def test_only_an_operator_records_networks_and_ids_are_bounded(engine: Engine) -> None:
    _cell(engine)
    (outcome,) = engine.apply(b.lines(b.networks("evil", vpcs=("vpc-acme",))), role="tenant")
    assert outcome.status == "rejected"
    too_many = tuple(f"subnet-{k}" for k in range(101))
    for field, value in (("subnets", too_many), ("vpcs", ("vpc acme",)), ("vpcs", ("",))):
        (bad,) = run(engine, b.networks("acme", **{field: value}))
        assert bad.status == "rejected" and bad.reasons[0].field.startswith(field)
    schema = SetAccountNetworks.model_json_schema()["properties"]
    assert schema["subnets"]["x-limit"] == "MAX_ACCOUNT_NETWORK_IDS"
