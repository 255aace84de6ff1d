"""adapters.kafka_io against a real tansu broker (see simulations/tansu.py)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator

import pytest

from adapters.kafka_io import (
    DLQ_REASON_HEADER,
    DLQ_SHA256_HEADER,
    DLQ_SIZE_HEADER,
    DLQ_TRUNCATED_HEADER,
    BrokerUnavailable,
    CommandSource,
    PartitionCountMismatch,
    PositionOutOfRange,
    Publisher,
    Record,
    RecordTooLarge,
    TopicNotFound,
    TopicsSource,
    partition_for,
)
from schemas.limits import BROKER_MAX_MESSAGE_BYTES
from simulations.tansu import Broker

# Lets this file run before tests/conftest.py imports the fixtures; once it
# does, conftest's definitions take precedence and no second broker starts.

MakeTopic = Callable[..., str]

# Guard against hangs only; the tests assert on content, never on timing.
_DEADLINE_S = 20.0


@pytest.fixture
def publisher(kafka_broker: Broker) -> Iterator[Publisher]:
    with Publisher(kafka_broker.bootstrap, linger_ms=5) as pub:
        yield pub


def _collect(source: CommandSource, expected: int, max_records: int = 1000) -> list[Record]:
    """Poll until ``expected`` records arrived (or fail after the guard deadline)."""
    got: list[Record] = []
    deadline = time.monotonic() + _DEADLINE_S
    while len(got) < expected:
        assert time.monotonic() < deadline, f"only {len(got)}/{expected} records arrived"
        for records in source.poll_batch(max_records=max_records, timeout_ms=500).values():
            got.extend(records)
    return got


def _assert_contiguous(records: list[Record], start: int = 0) -> None:
    by_partition: dict[int, list[int]] = {}
    for r in records:
        by_partition.setdefault(r.partition, []).append(r.offset)
    for partition, offsets in by_partition.items():
        assert offsets == list(range(start, start + len(offsets))), partition


def test_partition_for_is_stable_and_in_range() -> None:
    assert partition_for("cell-a", 1) == 0
    spread = {partition_for(f"cell-{i}", 8) for i in range(200)}
    assert spread == set(range(8))
    assert all(partition_for("cell-a", 8) == partition_for("cell-a", 8) for _ in range(3))
    with pytest.raises(ValueError):
        partition_for("cell-a", 0)


def test_keyed_commands_round_trip_with_manual_assignment(
    kafka_broker: Broker, kafka_topic_factory: MakeTopic, publisher: Publisher
) -> None:
    topic = kafka_topic_factory("commands", partitions=4)
    n = 300
    cells = [f"cell-{i % 17}" for i in range(n)]
    for i, cell in enumerate(cells):
        publisher.send_command(topic, cell, {"seq": i, "cell": cell, "pad": "x" * 100})
    metadata = publisher.flush()

    # The producer's partitioner and partition_for agree for every key.
    assert [m.partition for m in metadata] == [partition_for(c, 4) for c in cells]

    with CommandSource(kafka_broker.bootstrap, topic) as source:
        assert source.partitions == (0, 1, 2, 3)
        source.seek_all({p: 0 for p in source.partitions})
        got = _collect(source, n, max_records=64)
        assert len(got) == n
        _assert_contiguous(got)
        for r in got:
            body = json.loads(r.value)
            assert r.key == body["cell"].encode()
            assert r.partition == partition_for(body["cell"], 4)
        # Per cell, commands arrive in send order (one cell = one partition).
        seqs_by_cell: dict[str, list[int]] = {}
        for r in sorted(got, key=lambda r: (r.partition, r.offset)):
            body = json.loads(r.value)
            seqs_by_cell.setdefault(body["cell"], []).append(body["seq"])
        for cell, seqs in seqs_by_cell.items():
            assert seqs == sorted(seqs), cell

        # Re-seek one partition into the middle: it resumes exactly there.
        partition = partition_for("cell-3", 4)
        end = source.end_offsets()[partition]
        source.seek(partition, end - 5)
        again = _collect(source, 5)
        assert [(r.partition, r.offset) for r in again] == [
            (partition, o) for o in range(end - 5, end)
        ]
        assert source.position(partition) == end
        assert source.lag()[partition] == 0


def test_single_partition_assignment_sees_only_its_cells(
    kafka_broker: Broker, kafka_topic_factory: MakeTopic, publisher: Publisher
) -> None:
    topic = kafka_topic_factory("commands", partitions=3)
    cells = [f"cell-{i}" for i in range(12)]
    for cell in cells:
        publisher.send_command(topic, cell, b"raw-bytes-" + cell.encode())
    publisher.flush()

    partition = partition_for("cell-0", 3)
    mine = [c for c in cells if partition_for(c, 3) == partition]
    with CommandSource(kafka_broker.bootstrap, topic, partitions=[partition]) as source:
        assert source.partitions == (partition,)
        assert source.topic_partition_count == 3
        source.seek(partition, 0)
        got = _collect(source, len(mine))
        assert [r.key for r in got] == [c.encode() for c in mine]
        assert [r.value for r in got] == [b"raw-bytes-" + c.encode() for c in mine]


def test_dlq_keeps_original_bytes_and_adds_reason(
    kafka_broker: Broker, kafka_topic_factory: MakeTopic, publisher: Publisher
) -> None:
    topic = kafka_topic_factory("commands")
    dlq = kafka_topic_factory("dlq")
    garbage = b"\x00\xffnot json{"
    publisher.send(topic, garbage, key=b"cell-9", headers=[("trace", b"t-1")])
    publisher.flush()

    with CommandSource(kafka_broker.bootstrap, topic) as source:
        source.seek(0, 0)
        (original,) = _collect(source, 1)
    publisher.send_dlq(dlq, original, reason="invalid JSON: line 1")
    publisher.send_dlq(dlq, b"bare bytes", reason="schema: unknown kind", key=b"k")
    publisher.flush()

    with CommandSource(kafka_broker.bootstrap, dlq) as source:
        source.seek(0, 0)
        first, second = _collect(source, 2)
    assert first.value == garbage
    assert first.key == b"cell-9"
    assert first.header(DLQ_REASON_HEADER) == b"invalid JSON: line 1"
    assert first.header("trace") == b"t-1"
    assert first.header("dlq.source.topic") == topic.encode()
    assert first.header("dlq.source.partition") == b"0"
    assert first.header("dlq.source.offset") == b"0"
    assert second.value == b"bare bytes"
    assert second.key == b"k"
    assert second.headers == (
        (DLQ_REASON_HEADER, b"schema: unknown kind"),
        (DLQ_SIZE_HEADER, b"10"),
        (DLQ_SHA256_HEADER, hashlib.sha256(b"bare bytes").hexdigest().encode()),
    )


def test_dlq_cuts_a_record_too_large_to_fit_and_says_what_it_was(
    kafka_broker: Broker, kafka_topic_factory: MakeTopic, publisher: Publisher
) -> None:
    dlq = kafka_topic_factory("dlq")
    huge = bytes(range(256)) * (BROKER_MAX_MESSAGE_BYTES // 256 + 100)  # over 1 MiB
    with pytest.raises(RecordTooLarge):  # what dead-lettering it whole did before
        publisher.send(dlq, huge)
    original = Record(topic="cmds", partition=3, offset=7, key=b"cell-1", value=huge,
                      headers=(("trace", b"t" * 40_000),), timestamp_ms=0)
    publisher.send_dlq(dlq, original, reason="not JSON: " + "x" * 5000)
    publisher.flush()

    with CommandSource(kafka_broker.bootstrap, dlq) as source:
        source.seek(0, 0)
        (record,) = _collect(source, 1)
    assert record.header(DLQ_TRUNCATED_HEADER) == b"true"
    assert huge.startswith(record.value) and len(record.value) < BROKER_MAX_MESSAGE_BYTES
    assert record.header(DLQ_SIZE_HEADER) == str(len(huge)).encode()
    assert record.header(DLQ_SHA256_HEADER) == hashlib.sha256(huge).hexdigest().encode()
    assert record.header(DLQ_REASON_HEADER).startswith(b"not JSON: xxx")  # type: ignore
    assert record.header("dlq.source.offset") == b"7"
    assert record.header("trace") is None, "the original's huge headers make way for ours"


def test_consumer_and_producer_survive_a_paused_broker(
    kafka_broker: Broker, kafka_topic_factory: MakeTopic, publisher: Publisher
) -> None:
    topic = kafka_topic_factory("commands", partitions=2)
    for i in range(50):
        publisher.send_command(topic, f"cell-{i % 5}", {"seq": i})
    publisher.flush()

    with CommandSource(kafka_broker.bootstrap, topic) as source:
        source.seek_all({0: 0, 1: 0})
        got = _collect(source, 50)

        kafka_broker.pause()
        try:
            # Sends are buffered; polls come back empty instead of raising.
            for i in range(50, 100):
                publisher.send_command(topic, f"cell-{i % 5}", {"seq": i})
            for _ in range(4):
                assert source.poll_batch(timeout_ms=500) == {}
            with pytest.raises(BrokerUnavailable):
                source.ping(timeout_ms=1000)
        finally:
            kafka_broker.resume()

        publisher.flush()
        got += _collect(source, 100 - len(got))
        source.ping()
    seqs = sorted(json.loads(r.value)["seq"] for r in got)
    assert seqs == list(range(100))  # nothing lost, nothing duplicated
    _assert_contiguous(got)


def test_position_beyond_end_is_reported(
    kafka_broker: Broker, kafka_topic_factory: MakeTopic, publisher: Publisher
) -> None:
    # tansu answers a fetch beyond the end with nothing, not OFFSET_OUT_OF_RANGE.
    topic = kafka_topic_factory("commands")
    for i in range(3):
        publisher.send(topic, b"%d" % i)
    publisher.flush()
    with CommandSource(kafka_broker.bootstrap, topic) as source:
        source.seek(0, 3)  # exactly at the end: fine, nothing to read
        assert source.poll_batch(timeout_ms=300) == {}
        source.seek(0, 10)
        with pytest.raises(PositionOutOfRange) as info:
            deadline = time.monotonic() + _DEADLINE_S
            while time.monotonic() < deadline:
                source.poll_batch(timeout_ms=300)
        assert (info.value.position, info.value.end) == (10, 3)


def test_end_offsets_count_every_record_of_a_batch(
    kafka_broker: Broker, kafka_topic_factory: MakeTopic
) -> None:
    topic = kafka_topic_factory("commands")
    # A long linger puts all ten records into one produce batch.
    with Publisher(kafka_broker.bootstrap, linger_ms=200) as pub:
        for i in range(10):
            pub.send(topic, b"%d" % i)
        pub.flush()
    with CommandSource(kafka_broker.bootstrap, topic) as source:
        source.seek(0, 4)
        _collect(source, 6)
        assert source.end_offsets() == {0: 10}
        source.seek(0, 7)
        assert source.lag() == {0: 3}


def test_unknown_topic_and_missing_position_are_errors(
    kafka_broker: Broker, kafka_topic_factory: MakeTopic
) -> None:
    with pytest.raises(TopicNotFound):
        CommandSource(kafka_broker.bootstrap, "no-such-topic", metadata_timeout_s=0.5)
    topic = kafka_topic_factory("commands", partitions=2)
    with pytest.raises(TopicNotFound):
        CommandSource(kafka_broker.bootstrap, topic, partitions=[5], metadata_timeout_s=0.5)
    with pytest.raises(PartitionCountMismatch):
        CommandSource(kafka_broker.bootstrap, topic, expected_partitions=4)
    with CommandSource(kafka_broker.bootstrap, topic) as source:
        source.seek(0, 0)
        with pytest.raises(ValueError):
            source.poll_batch()
        with pytest.raises(ValueError):
            source.seek(7, 0)


def test_one_source_reads_several_topics_keyed_by_topic_and_partition(
    kafka_broker: Broker, kafka_topic_factory: MakeTopic, publisher: Publisher
) -> None:
    tenant, agent = kafka_topic_factory("t", partitions=2), kafka_topic_factory("a", partitions=2)
    cell = "cell-3"
    p = partition_for(cell, 2)
    publisher.send_command(tenant, cell, {"n": 1})
    publisher.send_command(agent, cell, {"n": 2})
    publisher.send_command(agent, cell, {"n": 3})
    publisher.flush()
    with TopicsSource(kafka_broker.bootstrap, [tenant, agent], partitions=[p]) as source:
        assert source.slots == ((tenant, p), (agent, p))
        source.seek((tenant, p), 0)
        source.seek((agent, p), 1)  # positions are per topic
        got: dict[tuple[str, int], list[int]] = {}
        deadline = time.monotonic() + _DEADLINE_S
        while sum(map(len, got.values())) < 2 and time.monotonic() < deadline:
            for slot, records in source.poll_batch(timeout_ms=200).items():
                got.setdefault(slot, []).extend(json.loads(r.value)["n"] for r in records)
        assert got == {(tenant, p): [1], (agent, p): [3]}
        assert source.lag() == {(tenant, p): 0, (agent, p): 0}
    other = kafka_topic_factory("o", partitions=3)
    with pytest.raises(PartitionCountMismatch):  # a cell would live on two partition numbers
        TopicsSource(kafka_broker.bootstrap, [tenant, other])


def test_submit_waits_for_its_own_principals_outcome(
    kafka_broker: Broker, kafka_topic_factory: MakeTopic, publisher: Publisher
) -> None:
    from adapters.submit import Submitted, _collect
    from schemas.outcomes import Outcome

    topic = kafka_topic_factory("outcomes")
    with CommandSource(kafka_broker.bootstrap, topic) as source:
        source.seek(0, 0)
        for principal in ("account:evil", "account:acme"):  # ids are per principal
            outcome = Outcome(command_id="c-1", principal=principal, status="accepted")
            publisher.send(topic, outcome.to_json().encode(), key=b"c-1")
        publisher.flush()
        result = Submitted(sent=["c-1"], principals={"c-1": "account:acme"})
        _collect(source, result, deadline=time.monotonic() + 30)
    assert result.outcomes["c-1"].principal == "account:acme"
