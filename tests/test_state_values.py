"""The writer's state holds typed values (issue 12 item 1): a pool's config and a price
book's versions, never dicts of strings; and logs written before them still replay."""

from __future__ import annotations

import pickle
from datetime import timedelta
from decimal import Decimal
from typing import Any

from adapters.bootstrap import Engine
from engine.billing.price_book import PriceVersion, version_in_force
from engine.domain.cell_log import CellLog
from engine.domain.pool import Pool
from engine.domain.pool_config import NodeModel, PoolConfig
from engine.domain.price_book import PriceBook
from engine.policies.runtimes import SEED_PROFILES
from engine.policies.spec_catalogue import Spec
from tests import builders as b
from tests.helpers import accepted, instance, one

# A pool as a log from before start timeouts, runtime profiles and start_cordoned stores it.
OLD_CONFIG: dict[str, Any] = {
    "kind": "dedicated", "min_nodes": 0, "max_nodes": 10, "labels": {"zone": "a"},
    "node_models": [{"name": "2C4G", "millicores": 2000, "memory_mib": 4096, "enis": 8,
                     "pods": 110, "price_per_hour": "0.10", "priority": 0}],
    "spec_catalogue": [{"vcpu": "0.5", "memory_gib": "1"}, {"vcpu": "1", "memory_gib": "2"}],
    "pending_timeout_seconds": 900, "placement_policy": "best_fit",
    "expander": "least-waste", "scale_down_utilisation_threshold": 0.5,
    "scale_down_unneeded_seconds": 600, "disruption_budget": 1,
    "cpu_overhead_millicores": {"runc": 0, "kata": 100, "hyper": 100},
}
# A price version as a log from before runtime rates stores it: rates as strings.
OLD_TERMS: dict[str, Any] = {
    "currency": "EUR", "minor_unit": 2, "rate_per_vcpu_second": "0.0000100",
    "rate_per_gib_second": "0.0000010", "min_seconds": 60, "grace_seconds": 3600,
    "effective_from": int(b.T0.timestamp())}


def test_a_pool_config_and_price_versions_are_typed(engine: Engine) -> None:
    accepted(engine, b.price_book(), b.networks(), b.pool(labels={"zone": "a"}))
    engine.processor.forget()  # read back from the store: replay builds the same values
    world = engine.processor.world
    pool, book = world.pool(b.CELL, "general"), world.price_book(b.CELL)
    assert pool is not None and book is not None
    assert isinstance(pool.config, PoolConfig) and pool.config.kind == "dedicated"
    assert all(isinstance(m, NodeModel) and isinstance(m.price_per_hour, Decimal)
               for m in pool.config.node_models)
    assert pool.config.spec_catalogue[0] == Spec(Decimal("0.5"), Decimal("1"))
    assert dict(pool.config.labels) == {"zone": "a"}
    (version,) = book.versions
    assert isinstance(version, PriceVersion)
    assert isinstance(version.rate_vcpu_s, Decimal) and isinstance(version.rate_gib_s, Decimal)


def test_no_memo_lives_in_the_pool_aggregate(engine: Engine) -> None:
    accepted(engine, b.price_book(), b.networks(),
             b.pool(), b.create("a"), b.create("b", vcpu="0.50"))
    pool = engine.processor.world.pool(b.CELL, "general")
    assert pool is not None
    assert set(vars(pool)) <= {"cell", "pool", "config", "nodes_requested", "_id", "_version",
                               "_created_on", "_modified_on", "_pending_events"}


def test_a_log_from_before_the_typed_state_still_replays(engine: Engine) -> None:
    # Events written in the shape old logs hold, straight into the store.
    pool = Pool.create(b.T0, cell=b.CELL, pool="general", config=OLD_CONFIG)
    book = PriceBook.create(b.T0, cell=b.CELL)
    book.publish(OLD_TERMS, b.T0)
    engine.app.save(pool, book, CellLog.create(b.T0, cell=b.CELL))
    engine.processor.forget()
    accepted(engine, b.networks(), b.create("a", vcpu="1", memory_gib="2"))
    world = engine.processor.world
    loaded = world.pool(b.CELL, "general")
    assert loaded is not None
    # What the old config lacks reads as ConfigurePool's defaults.
    config = loaded.config
    assert (config.scheduled_timeout_seconds, config.starting_timeout_seconds) == (300, 600)
    assert config.start_cordoned is False and dict(config.runtime_profiles) == SEED_PROFILES
    assert config.node_models[0].price_per_hour == Decimal("0.10")
    priced = world.price_book(b.CELL)
    assert priced is not None
    (version,) = priced.versions
    assert (version.rate_vcpu_s, version.rate_gib_s) == (Decimal("0.00001"),
                                                         Decimal("0.000001"))
    assert version.runtime_rates == {}
    created = instance(engine, "a")
    assert (created.billed_vcpu, created.billed_memory_gib) == (Decimal(1), Decimal(2))
    # The stored shape is unchanged: a new version is still published as strings.
    accepted(engine, b.price_book(t=10, currency="EUR", rate_per_vcpu_second="0.00002"))
    stored = [e for _, e in engine.app.read(0) if isinstance(e, PriceBook.VersionPublished)]
    assert stored[-1].terms["rate_per_vcpu_second"] == "0.00002"


def test_a_config_pickles_and_compares_by_value() -> None:
    config = PoolConfig.of(OLD_CONFIG)
    again = pickle.loads(pickle.dumps(config))
    assert again == config and again is not config
    assert again.billed_spec(Decimal("0.7"), Decimal("1")) == config.billed_spec(
        Decimal("0.7"), Decimal("1"))
    assert PoolConfig.of({**OLD_CONFIG, "min_nodes": 1}) != config


def test_the_version_in_force_is_the_latest_to_have_started() -> None:
    first = int(b.T0.timestamp())
    versions = [PriceVersion(n, first + 100 * (n - 1), Decimal(n), Decimal(0), "EUR", 2)
                for n in (1, 2, 3)]
    assert version_in_force(versions, b.T0 - timedelta(seconds=1)) is None
    assert version_in_force(versions, b.T0).version == 1  # type: ignore[union-attr]
    assert version_in_force(versions, b.T0 + timedelta(seconds=150)).version == 2  # type: ignore[union-attr]
    assert version_in_force(versions, b.T0 + timedelta(days=1)).version == 3  # type: ignore[union-attr]


def test_a_spec_choice_names_the_commands_own_spelling(engine: Engine) -> None:
    accepted(engine, b.price_book(), b.networks(), b.pool())
    spelled = [one(engine, b.create(name, vcpu=vcpu)) for name, vcpu in
               (("a", "49"), ("b", "49.0"), ("c", "49"))]
    problems = [" ".join(r.problem for r in o.reasons) for o in spelled]
    assert "vcpu 49 " in problems[0] and "vcpu 49.0 " in problems[1]
    assert problems[0] == problems[2]


def test_a_respelled_config_is_a_change_and_the_same_config_is_not(engine: Engine) -> None:
    catalogue = [{"vcpu": "1", "memory_gib": "2"}]
    accepted(engine, b.price_book(), b.networks(), b.pool(spec_catalogue=catalogue))
    assert one(engine, b.pool(spec_catalogue=catalogue)).note == "unchanged"
    respelled = one(engine, b.pool(spec_catalogue=[{"vcpu": "1.0", "memory_gib": "2"}]))
    assert respelled.status == "accepted" and respelled.note != "unchanged"
    pool = engine.processor.world.pool(b.CELL, "general")
    assert pool is not None and str(pool.config.spec_catalogue[0].vcpu) == "1.0"
