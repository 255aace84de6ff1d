"""A record the Kafka client cannot read (here: a header key that is not UTF-8, which Java
and librdkafka producers can send) is handed on as unreadable, in its place, and polling
goes on past it: it must not fail every poll, and so every restart, forever. Compressed
records of every codec Kafka allows are read."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from kafka import KafkaProducer

from adapters.kafka_io import CommandSource, Record
from simulations.tansu import Broker

MakeTopic = Callable[..., str]
_DEADLINE_S = 30.0  # a guard against hangs, not a timing assertion


class _NotUtf8(str):
    """A header key whose bytes on the wire are not UTF-8."""

    def encode(self, *args: object, **kwargs: object) -> bytes:  # type: ignore[override]
        return b"\xff\xfe"


def _collect(source: CommandSource, expected: int) -> list[Record]:
    got: list[Record] = []
    deadline = time.monotonic() + _DEADLINE_S
    while len(got) < expected:
        assert time.monotonic() < deadline, f"only {len(got)}/{expected} records arrived"
        for records in source.poll_batch(max_records=100, timeout_ms=500).values():
            got.extend(records)
    return got


def test_an_unreadable_record_is_handed_on_in_its_place(kafka_broker: Broker,
                                                        kafka_topic_factory: MakeTopic) -> None:
    topic = kafka_topic_factory("commands", partitions=1)
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap, linger_ms=0)
    try:
        producer.send(topic, key=b"az-1", value=b"first").get(10)
        producer.send(topic, key=b"az-1", value=b"bad", headers=[(_NotUtf8("x"), b"v")]).get(10)
        producer.send(topic, key=b"az-1", value=b"third").get(10)
    finally:
        producer.close()
    with CommandSource(kafka_broker.bootstrap, topic) as source:
        source.seek(0, 0)
        got = _collect(source, 3)
    assert [(r.offset, r.value, r.unreadable is not None) for r in got] == [
        (0, b"first", False), (1, b"", True), (2, b"third", False)]
    assert "CorruptRecord" in (got[1].unreadable or "") or "Unicode" in (got[1].unreadable or "")


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_every_codec_is_read(kafka_broker: Broker, kafka_topic_factory: MakeTopic,
                             codec: str) -> None:
    topic = kafka_topic_factory("commands", partitions=1)
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap, compression_type=codec)
    try:
        for i in range(5):
            producer.send(topic, key=b"az-1", value=b"v%d" % i)
        producer.flush(10)
    finally:
        producer.close()
    with CommandSource(kafka_broker.bootstrap, topic) as source:
        source.seek(0, 0)
        got = _collect(source, 5)
    assert [(r.value, r.unreadable) for r in got] == [(b"v%d" % i, None) for i in range(5)]
