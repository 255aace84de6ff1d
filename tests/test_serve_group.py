"""`cis serve --group`: writers share the partitions through a Kafka consumer group.

Three writers on one PostgreSQL schema consume six partitions; one is SIGKILLed mid-stream.
Its partitions move to the two survivors, which resume from the positions in the store:
every command is decided once (the store holds what `cis apply` of the same commands
holds), every command has an outcome (re-published copies are identical), and every
partition is owned again.

A writer that stalls with a polled batch in hand, longer than its session, loses its
partitions; when it wakes, the store refuses that batch (the new owner decided it), and the
writer drops it, rejoins and carries on: nothing doubled, nothing lost.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from adapters.kafka_io import partition_for
from simulations import workloads
from simulations.tansu import Broker
from tests import test_serve_helpers as h
from tests.stores import PostgresTestDatabase
from tests.test_serve_e2e import make_topics
from tests.test_serve_helpers import reap_serve_processes  # noqa: F401 (autouse)

PARTITIONS = 6
WRITERS = 3
CELLS_PER_PARTITION = 3
INSTANCES_PER_CELL = 16
NODES = ("general-00001", "general-00002", "kata-00001")


def cells_on_every_partition() -> list[str]:
    """CELLS_PER_PARTITION cell names hashing to each of the PARTITIONS partitions."""
    chosen: dict[int, list[str]] = {p: [] for p in range(PARTITIONS)}
    n = 0
    while any(len(cells) < CELLS_PER_PARTITION for cells in chosen.values()):
        cell = f"cell-{n:03d}"
        if len(chosen[partition_for(cell, PARTITIONS)]) < CELLS_PER_PARTITION:
            chosen[partition_for(cell, PARTITIONS)].append(cell)
        n += 1
    return [cell for p in sorted(chosen) for cell in chosen[p]]


def setup_commands(cells: list[str]) -> list[dict[str, Any]]:
    """Per cell: the operator's price book and pools, then its nodes report ready."""
    ready = workloads.DAY_START + timedelta(seconds=45)
    return [*(c for cell in cells for c in workloads.setup(workloads.DAY_START, cell)),
            *({"type": "ReportNodeReady", "command_id": f"{cell}-ready-{node}", "cell": cell,
               "occurred_at": ready.isoformat(), "node_id": node}
              for cell in cells for node in NODES)]


def tenant_commands(cells: list[str]) -> list[dict[str, Any]]:
    """Per cell: CreateInstance and, ten minutes later, DeleteInstance of each instance, in
    time order; the cells round-robin, as independent tenants would."""
    per_cell = []
    for k, cell in enumerate(cells):
        creates, _ = workloads.tenants(INSTANCES_PER_CELL, 7 + k, workloads.DAY_START, cell)
        timed = []
        for at, create in creates:
            create["command_id"] = f"{cell}-{create['command_id']}"
            gone = at + timedelta(seconds=600)
            timed += [(at, create), (gone, {
                "type": "DeleteInstance", "command_id": f"{cell}-delete-{create['instance_id']}",
                "cell": cell, "issued_at": gone.isoformat(), "account": create["account"],
                "instance_id": create["instance_id"]})]
        per_cell.append([c for _, c in sorted(timed, key=lambda t: t[0])])
    return [cs[i] for i in range(max(map(len, per_cell))) for cs in per_cell if i < len(cs)]


def membership(writer: h.ServeProcess) -> set[int] | None:
    """The partitions a writer owns by its log (None: in the middle of a rebalance)."""
    moves = [line for line in writer.lines()
             if line.get("event") in ("partitions assigned", "partitions revoked")]
    if not moves or moves[-1]["event"] != "partitions assigned":
        return None
    return set(moves[-1]["partitions"])


def settled(writers: list[h.ServeProcess]) -> bool:
    """Each writer owns partitions and together they own each partition once."""
    owned = [membership(w) for w in writers]
    return all(owned) and sorted(p for o in owned if o for p in o) == list(range(PARTITIONS))


def group_args(store: str, bootstrap: str, topics: dict[str, str]) -> list[str]:
    """A writer of the test's group; small batches, so a kill lands between many commits.
    (A group name is the test's own: tansu assigns nothing to a group that once had other
    topics.)"""
    group = f"writers-{topics['commands']}"
    return h.serve_args(store, bootstrap, topics, "--group", group, "--session-timeout",
                        "6", "--tick-interval", "0", "--projections", "off", "--batch", "10",
                        "--poll-records", "10")


def waiter(writers: list[h.ServeProcess]) -> Callable[[Callable[[], bool], str], None]:
    """wait(predicate, what): polls until true, failing at once if a writer exited."""
    def wait(predicate: Callable[[], bool], what: str) -> None:
        def alive_and() -> bool:
            for w in writers:
                assert w.alive(), f"writer exited ({w.process.returncode}); log {w.log_path}"
            return predicate()
        h.wait_until(alive_and, what)
    return wait


def published_all(bootstrap: str, topic: str, commands: list[dict[str, Any]]
                  ) -> Callable[[], bool]:
    ids = {c["command_id"] for c in commands}
    return lambda: ids <= h.outcomes_by_id(h.read_topic(bootstrap, topic)).keys()


def assert_exactly_once(store: str, reference: str, bootstrap: str, topics: dict[str, str],
                        commands: list[dict[str, Any]]) -> None:
    """The store holds what one `cis apply` of the same commands holds (snapshot() also
    fails on a command recorded in two cell-log entries); every command has an outcome on
    the topic, and copies (re-published after a crash) are identical."""
    printed = h.apply_reference(reference, h.in_served_order(store, commands))
    served, applied = h.snapshot(store), h.snapshot(reference)
    assert set(served["outcomes"]) == {c["command_id"] for c in commands}
    assert served["events"] == applied["events"], "events lost or duplicated"
    assert served["outcomes"] == applied["outcomes"]
    assert served["tables"] == applied["tables"]
    created = [o for o in printed if "-create-" in o["command_id"] and o["status"] == "accepted"]
    assert created and len(served["tables"]["instances"]) == len(created), \
        "an instance created twice or lost"
    published = h.outcomes_by_id(h.read_topic(bootstrap, topics["outcomes"]))
    expected = {o["command_id"]: o for o in printed}
    assert published.keys() == expected.keys(), "an outcome without a command, or none"
    for command_id, copies in published.items():
        assert all(c == expected[command_id] for c in copies), command_id


def test_three_writers_one_killed_lose_nothing_and_double_nothing(
        kafka_broker: Broker, kafka_topic_factory: Callable[..., str],
        pg_database: PostgresTestDatabase, tmp_path: Path) -> None:
    topics = make_topics(kafka_topic_factory, partitions=PARTITIONS)
    cells = cells_on_every_partition()
    setup, tenants = setup_commands(cells), tenant_commands(cells)
    commands = setup + tenants
    assert len({c["command_id"] for c in commands}) == len(commands), "ids must be unique"
    store = pg_database.new_schema()
    bootstrap = kafka_broker.bootstrap
    args = group_args(store, bootstrap, topics)
    writers = [h.ServeProcess(args, tmp_path / f"writer-{k}.log") for k in range(WRITERS)]
    wait = waiter(writers)

    h.produce_by_role(bootstrap, topics, setup)
    set_up = h.role_ends(bootstrap, topics, PARTITIONS)
    wait(lambda: h.consumed_all(store, set_up), "the set-up")
    wait(lambda: settled(writers), "three writers with two partitions each")

    # Half the tenants' commands; the victim dies while deciding its share of them.
    half = len(tenants) // 2
    h.produce_by_role(bootstrap, topics, tenants[:half])
    victim = writers.pop(0)
    lost = membership(victim)
    assert lost, "the victim owns partitions"
    commands_topic = topics["commands"]
    begun = {p: h.positions(store).get(f"kafka:{commands_topic}:{p}", -1) for p in lost}
    h.wait_until(lambda: any(h.positions(store).get(f"kafka:{commands_topic}:{p}", -1)
                             > begun[p] for p in lost), "the victim deciding", process=victim)
    victim.process.send_signal(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL

    # The rest arrives after the kill: the victim's partitions only drain if owned again.
    h.produce_by_role(bootstrap, topics, tenants[half:])
    ends = h.role_ends(bootstrap, topics, PARTITIONS)
    assert sum(n for e in ends.values() for n in e.values()) == len(commands)
    wait(lambda: h.consumed_all(store, ends), "every command decided")
    wait(lambda: settled(writers), "the survivors owning all six partitions")
    assert set().union(*(membership(w) or set() for w in writers)) == set(range(PARTITIONS))

    wait(published_all(bootstrap, topics["outcomes"], commands), "an outcome for every command")
    for w in writers:
        assert w.terminate() == 0, w.log_path.read_text()[-3000:]
    assert_exactly_once(store, pg_database.new_schema(), bootstrap, topics, commands)


def stopped(writer: h.ServeProcess) -> bool:
    """True once the process froze itself (state T in /proc)."""
    stat = Path(f"/proc/{writer.process.pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] == "T"


def test_a_stalled_writer_is_fenced_by_the_store_and_carries_on(
        kafka_broker: Broker, kafka_topic_factory: Callable[..., str],
        pg_database: PostgresTestDatabase, tmp_path: Path) -> None:
    topics = make_topics(kafka_topic_factory, partitions=PARTITIONS)
    cells = cells_on_every_partition()
    setup, tenants = setup_commands(cells), tenant_commands(cells)
    commands = setup + tenants
    store = pg_database.new_schema()
    bootstrap = kafka_broker.bootstrap
    args = group_args(store, bootstrap, topics)
    survivor = h.ServeProcess(args, tmp_path / "survivor.log")
    wait = waiter([survivor])
    h.produce_by_role(bootstrap, topics, setup)
    set_up = h.role_ends(bootstrap, topics, PARTITIONS)
    wait(lambda: h.consumed_all(store, set_up), "the set-up")

    # The second writer freezes with its second poll of tenants' commands in hand.
    stalling = h.ServeProcess(args, tmp_path / "stalling.log", env={"CIS_STALL_AT": "after-poll:2"})
    wait = waiter([survivor, stalling])
    wait(lambda: settled([survivor, stalling]), "two writers with three partitions each")
    half = len(tenants) // 2
    h.produce_by_role(bootstrap, topics, tenants[:half])
    h.wait_until(lambda: stalling.events("stall injected") and stopped(stalling), "the stall")
    wait = waiter([survivor])
    wait(lambda: membership(survivor) == set(range(PARTITIONS)), "the survivor owning all")
    first = h.role_ends(bootstrap, topics, PARTITIONS)
    wait(lambda: h.consumed_all(store, first), "the survivor deciding the first half")

    # Awake, the stalled writer decides its batch on stale state: the store refuses it.
    stalling.process.send_signal(signal.SIGCONT)
    wait = waiter([survivor, stalling])
    h.produce_by_role(bootstrap, topics, tenants[half:])
    ends = h.role_ends(bootstrap, topics, PARTITIONS)
    wait(lambda: h.consumed_all(store, ends), "every command decided")
    wait(lambda: bool(stalling.events("partitions assigned")[1:])
         and settled([survivor, stalling]), "the stalled writer back in the group")
    wait(published_all(bootstrap, topics["outcomes"], commands), "an outcome for every command")
    refused = stalling.events("another writer advanced this partition; batch abandoned, "
                              "reading on from the stored position")
    assert refused, f"the stalled writer's batch was not refused; log {stalling.log_path}"
    for w in (survivor, stalling):
        assert w.terminate() == 0, w.log_path.read_text()[-3000:]
    assert_exactly_once(store, pg_database.new_schema(), bootstrap, topics, commands)
