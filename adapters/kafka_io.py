"""Low-level Kafka plumbing for the engine: no knowledge of our command types.

Design constraints (see the design doc):
- Partitions are assigned manually, or by a consumer group (``TopicsSource(group=…)``,
  used for assignment only); either way positions come from our database, so nothing
  here reads or commits offsets in Kafka.
- No Kafka transactions: tansu does not hide aborted transactional records.
- The broker (tansu in dev/tests) keeps topics in memory; a restart loses them.

Observed kafka-python 3.x behaviour against tansu that shapes this module:
- While the broker is frozen, ``KafkaConsumer.poll`` does not raise: it returns
  empty after its timeout and recovers by itself once the broker answers again.
  Use ``CommandSource.ping`` to tell "idle" from "broker unreachable".
- Fetching from an offset beyond the partition end returns nothing rather than
  OFFSET_OUT_OF_RANGE, so ``poll_batch`` checks positions against the high
  watermark itself (a DB position beyond the end means the broker lost data).
- tansu's ListOffsets(latest) can under-report the end offset (it answered
  "base offset of the last batch + 1"), so ``end_offsets`` also uses the high
  watermark seen in fetch responses.
- A produce request that times out while the broker is frozen is still applied
  when it resumes; only the idempotent producer stops the retry duplicating it.
- tansu auto-creates a missing topic (4 partitions) on fetch or produce, even
  with allow_auto_create_topics=False; a Metadata request alone does not.
- tansu runs consumer groups (JoinGroup, SyncGroup, Heartbeat, LeaveGroup); with the range
  assignor over topics of equal partition counts each member gets the same partition
  numbers on every topic. A member that stops heartbeating loses its partitions after
  ``session_timeout_ms``; one that closes leaves at once.
- kafka-python 3 calls a rebalance listener on the consumer's IO thread, from inside
  ``poll`` (the caller's thread waits there), so the listener runs between batches; it
  must not call the consumer's blocking methods (``seek`` is not one).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.errors import (
    BrokerNotAvailableError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    RetriableError,
)
from kafka.partitioner.default import DefaultPartitioner, murmur2
from kafka.producer.future import FutureRecordMetadata, RecordMetadata

from schemas.limits import BROKER_MAX_MESSAGE_BYTES

__all__ = [
    "BrokerUnavailable",
    "CommandSource",
    "DLQ_REASON_HEADER",
    "DLQ_SHA256_HEADER",
    "DLQ_SIZE_HEADER",
    "DLQ_TRUNCATED_HEADER",
    "DLQ_SOURCE_OFFSET_HEADER",
    "DLQ_SOURCE_PARTITION_HEADER",
    "DLQ_SOURCE_TOPIC_HEADER",
    "Header",
    "KafkaIOError",
    "PartitionCountMismatch",
    "PartitionListener",
    "PositionOutOfRange",
    "PublishFailed",
    "Publisher",
    "Record",
    "RecordTooLarge",
    "Slot",
    "TopicNotFound",
    "TopicsSource",
    "encode_json",
    "partition_for",
    "record_size",
]

Header = tuple[str, bytes]

DLQ_REASON_HEADER = "reason"
# Provenance of a dead-lettered record, so it can be found/replayed later.
DLQ_SOURCE_TOPIC_HEADER = "dlq.source.topic"
DLQ_SOURCE_PARTITION_HEADER = "dlq.source.partition"
DLQ_SOURCE_OFFSET_HEADER = "dlq.source.offset"
# What a record was before it was cut to fit the broker's limit (always present).
DLQ_SIZE_HEADER = "dlq.original.size"
DLQ_SHA256_HEADER = "dlq.original.sha256"
DLQ_TRUNCATED_HEADER = "dlq.truncated"  # "true" when the value is a prefix of the original
DLQ_REASON_MAX_BYTES = 1024
DLQ_KEY_MAX_BYTES = 1024
DLQ_HEADERS_MAX_BYTES = 16 * 1024
# A record's key, value and headers stay this far under the broker's limit: the rest is
# the record's and the batch's framing.
RECORD_BUDGET_BYTES = BROKER_MAX_MESSAGE_BYTES - 4096

# Connection settings shared by consumer and producer.
# - request_timeout_ms: a frozen broker is noticed (connection closed and
#   re-opened) after this long; the default 30 s is slow to detect outages.
# - reconnect_backoff_max_ms: the default 30 s cap can delay recovery by up to
#   30 s after the broker returns.
# - bootstrap_timeout_ms: constructors block this long (default 30 s) when
#   the broker is unreachable, then raise (mapped to BrokerUnavailable).
# - api_version stays None: kafka-python 3 negotiates with one ApiVersions
#   round trip per connection (milliseconds), no slow probing.
_CONNECTION_DEFAULTS: dict[str, Any] = {
    "request_timeout_ms": 10_000,
    "reconnect_backoff_ms": 50,
    "reconnect_backoff_max_ms": 2_000,
    "retry_backoff_ms": 100,
    "bootstrap_timeout_ms": 10_000,
}

# Connection errors, timeouts, "node not ready", stale metadata: worth a retry.
_UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (RetriableError, BrokerNotAvailableError)


# Finding a record the client cannot read: polls of one partition, each at most this long.
ISOLATING_POLLS = 10
ISOLATING_POLL_MS = 500
MAX_UNREADABLE_CHARS = 300


class KafkaIOError(Exception):
    """Base class for errors raised by this module."""


class BrokerUnavailable(KafkaIOError):
    """The broker did not answer in time; retry later with back-off."""


class TopicNotFound(KafkaIOError):
    """The topic does not exist (or has no partitions) on the broker."""


class PartitionCountMismatch(KafkaIOError):
    """The topic has a different number of partitions than the caller expects.

    tansu auto-creates a missing topic (with 4 partitions) when it is fetched
    from or produced to, so after a broker restart the count may silently change,
    which would move cells to other partitions.
    """


class PositionOutOfRange(KafkaIOError):
    """A position from our DB lies beyond the partition's end.

    With tansu's memory storage this means the broker restarted and lost the
    topic's records; it must not be silently skipped or reset.
    """

    def __init__(self, topic: str, partition: int, position: int, end: int) -> None:
        super().__init__(
            f"{topic}[{partition}]: position {position} is beyond the end offset {end}"
        )
        self.topic = topic
        self.partition = partition
        self.position = position
        self.end = end


class RecordTooLarge(KafkaIOError):
    """A record exceeds the broker's message limit: sending it again cannot help."""


class PublishFailed(KafkaIOError):
    """Some records sent since the last successful flush were not acknowledged."""

    def __init__(self, message: str, errors: Sequence[BaseException]) -> None:
        super().__init__(message)
        self.errors = list(errors)


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed record, decoupled from kafka-python's ConsumerRecord."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[Header, ...]
    timestamp_ms: int
    # Why the client could not read this record (a corrupt batch, a codec, a header key
    # that is not UTF-8): it has no key, value or headers, only its place.
    unreadable: str | None = None

    def header(self, name: str) -> bytes | None:
        """Value of the last header called ``name`` (Kafka allows repeats)."""
        found: bytes | None = None
        for key, value in self.headers:
            if key == name:
                found = value
        return found


def key_hash(key: bytes) -> int:
    """The default partitioner's hash of a record key: murmur2, made non-negative, as
    kafka-python's DefaultPartitioner and the Java client compute it."""
    return murmur2(key) & 0x7FFFFFFF


def partition_for(key: str, n_partitions: int) -> int:
    """Partition the producer's default (murmur2) partitioner picks for ``key``, assuming
    partitions are numbered 0..n-1."""
    if n_partitions <= 0:
        raise ValueError("n_partitions must be positive")
    return key_hash(key.encode("utf-8")) % n_partitions


def encode_json(payload: Mapping[str, Any]) -> bytes:
    """Compact, key-sorted JSON so equal payloads give equal bytes."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode("utf-8")


def _header_bytes(headers: Sequence[Header]) -> int:
    return sum(len(k.encode("utf-8")) + len(v) + 8 for k, v in headers)


def record_size(value: bytes, key: bytes | None = None, headers: Sequence[Header] = ()) -> int:
    """Bytes a record's key, value and headers take (framing aside)."""
    return len(value) + len(key or b"") + _header_bytes(headers)


def _is_unavailable(exc: BaseException) -> bool:
    return isinstance(exc, _UNAVAILABLE_ERRORS)


Slot = tuple[str, int]  # (topic, partition)


class PartitionListener(Protocol):
    """Told when a consumer group moves partitions (``TopicsSource(group=…)``). Both calls
    come from inside ``poll_batch``, so never while the caller handles a batch."""

    def partitions_revoked(self, slots: frozenset[Slot]) -> None:
        """``slots`` are about to go (still assigned): finish with them."""

    def partitions_assigned(self, slots: frozenset[Slot]) -> None:
        """``slots`` are ours now: ``seek`` each, or the poll cannot go on."""


class _GroupRelay(ConsumerRebalanceListener):
    """kafka-python's rebalance calls, turned into the source's assignment and the
    listener's calls. The listener's exception is kept so that ``poll_batch`` raises it
    rather than the KafkaError kafka-python wraps it in."""

    def __init__(self, source: TopicsSource, listener: PartitionListener) -> None:
        self._source = source
        self._listener = listener

    def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        slots = frozenset((tp.topic, tp.partition) for tp in revoked)
        try:
            if slots:  # an eager rebalance revokes the empty set at the first join
                self._listener.partitions_revoked(slots)
        except Exception as exc:
            self._source._listener_error = exc
            raise
        finally:
            self._source._unassigned(slots)

    def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        slots = frozenset((tp.topic, tp.partition) for tp in assigned)
        self._source._assigned(slots)
        try:
            self._listener.partitions_assigned(slots)
        except Exception as exc:
            self._source._listener_error = exc
            raise


class TopicsSource:
    """Consumer of one or more topics, keyed by (topic, partition). The topics must have
    the same number of partitions: a key (a cell) lands on the same partition number in
    each, so owning a partition number means owning the same cells on every topic.

    Partitions are assigned manually (``partitions``), or by the consumer group ``group``
    with the range assignor, which gives each member the same partition numbers on every
    topic; the group's ``listener`` hears of every move.

    Every assigned partition must get a position via ``seek`` (from our DB)
    before ``poll_batch``; there is no committed-offset or reset fallback.
    """

    def __init__(
        self,
        bootstrap: str,
        topics: Sequence[str],
        partitions: Iterable[int] | None = None,
        *,
        client_id: str = "cis-command-source",
        expected_partitions: int | None = None,
        metadata_timeout_s: float = 10.0,
        group: str | None = None,
        listener: PartitionListener | None = None,
        session_timeout_ms: int = 10_000,
        **consumer_overrides: Any,
    ) -> None:
        membership: dict[str, Any] = {}
        if group is not None:
            if partitions is not None or listener is None:
                raise ValueError("a group assigns the partitions: give it a listener that "
                                 "positions them, and no partitions")
            membership = {
                "group_id": group,
                # Range over topics of equal size: partition p of every topic together.
                "partition_assignment_strategy": [RangePartitionAssignor],
                "session_timeout_ms": session_timeout_ms,
                "heartbeat_interval_ms": max(100, session_timeout_ms // 3),
            }
        config: dict[str, Any] = {
            **_CONNECTION_DEFAULTS,
            "client_id": client_id,
            "group_id": None,
            "enable_auto_commit": False,
            # Any other value than earliest/latest makes kafka-python raise
            # instead of silently moving our position.
            "auto_offset_reset": "none",
            "allow_auto_create_topics": False,
            "fetch_max_wait_ms": 500,
            "max_partition_fetch_bytes": 4 * 1024 * 1024,
            "check_crcs": True,
            # Records of aborted transactions are never decided (exactly-once with a
            # transactional producer).
            "isolation_level": "read_committed",
            **membership,
            **consumer_overrides,
        }
        if not topics or len(set(topics)) != len(topics):
            raise ValueError(f"give distinct topics, not {list(topics)}")
        self.topics = tuple(topics)
        self.group = group
        self._tps: dict[Slot, TopicPartition] = {}
        self._seeked: set[Slot] = set()
        # The high watermark known when each slot was sought: it says nothing of the new
        # position (another writer may have moved the store past what we last fetched).
        self._end_at_seek: dict[Slot, int | None] = {}
        self._listener_error: Exception | None = None
        self._bootstrap, self._config = bootstrap, config  # for a throwaway probe
        try:
            self._consumer = KafkaConsumer(bootstrap_servers=bootstrap, **config)
        except KafkaError as e:
            if _is_unavailable(e):
                raise BrokerUnavailable(f"cannot reach {bootstrap}: {e!r}") from e
            raise
        try:
            counts = {t: self._wait_for_partitions(t, metadata_timeout_s) for t in self.topics}
            available = counts[self.topics[0]]
            for topic, found in counts.items():
                if expected_partitions is not None and len(found) != expected_partitions:
                    raise PartitionCountMismatch(
                        f"{topic} has {len(found)} partitions, expected {expected_partitions}"
                    )
                if found != available:
                    raise PartitionCountMismatch(
                        f"{topic} has {len(found)} partitions, {self.topics[0]} "
                        f"{len(available)}: a cell would live on different partitions"
                    )
            if group is not None:
                assert listener is not None
                self._consumer.subscribe(list(self.topics), listener=_GroupRelay(self, listener))
            else:
                chosen = sorted(available) if partitions is None else sorted(set(partitions))
                missing = [p for p in chosen if p not in available]
                if missing:
                    raise TopicNotFound(
                        f"{self.topics[0]} has partitions {sorted(available)}, not {missing}"
                    )
                self._assigned(frozenset((t, p) for t in self.topics for p in chosen))
                self._consumer.assign(list(self._tps.values()))
        except BaseException:
            self._consumer.close()
            raise
        self._n_topic_partitions = len(available)

    def _assigned(self, slots: frozenset[Slot]) -> None:
        merged = {**self._tps, **{slot: TopicPartition(*slot) for slot in slots}}
        rank = {topic: i for i, topic in enumerate(self.topics)}  # in the caller's order
        self._tps = dict(sorted(merged.items(), key=lambda kv: (rank[kv[0][0]], kv[0][1])))

    def _unassigned(self, slots: frozenset[Slot]) -> None:
        for slot in slots:
            self._tps.pop(slot, None)
            self._seeked.discard(slot)
            self._end_at_seek.pop(slot, None)

    def _wait_for_partitions(self, topic: str, timeout_s: float) -> set[int]:
        # Metadata may lag right after topic creation; poll briefly for it.
        deadline = time.monotonic() + timeout_s
        while True:
            found = self._consumer.partitions_for_topic(topic)
            if found:
                return set(found)
            if time.monotonic() >= deadline:
                raise TopicNotFound(f"topic {topic!r} not found within {timeout_s}s")
            time.sleep(0.1)

    @property
    def slots(self) -> tuple[Slot, ...]:
        """Assigned (topic, partition) pairs."""
        return tuple(self._tps)

    @property
    def partitions(self) -> tuple[int, ...]:
        """Assigned partition numbers (the same on every topic), ascending."""
        return tuple(sorted({p for _, p in self._tps}))

    @property
    def topic_partition_count(self) -> int:
        """Partitions of each whole topic (for ``partition_for``)."""
        return self._n_topic_partitions

    def _tp(self, slot: Slot) -> TopicPartition:
        try:
            return self._tps[slot]
        except KeyError:
            raise ValueError(f"partition {slot[1]} of {slot[0]} is not assigned") from None

    def seek(self, slot: Slot, offset: int) -> None:
        """Next ``poll_batch`` returns the slot's records starting at ``offset``."""
        if offset < 0:
            raise ValueError("offset must be >= 0")
        self._end_at_seek[slot] = self._consumer.highwater(self._tp(slot))
        self._consumer.seek(self._tp(slot), offset)
        self._seeked.add(slot)

    def position(self, slot: Slot) -> int:
        """Offset of the next record ``poll_batch`` will return for ``slot``."""
        if slot not in self._seeked:
            raise ValueError(f"{slot} has no position; call seek first")
        return int(self._consumer.position(self._tp(slot)))

    def poll_batch(
        self, max_records: int = 1000, timeout_ms: int = 1000
    ) -> dict[Slot, list[Record]]:
        """Up to ``max_records`` records, grouped by (topic, partition), in offset order.

        Returns ``{}`` when nothing arrives within ``timeout_ms``, which is also
        what happens while the broker is unreachable (kafka-python reconnects on
        its own); call ``ping`` after repeated empty batches to tell them apart.
        Raises ``PositionOutOfRange`` if a position is beyond the partition end
        (seen from the previous fetch, so before any record is taken).
        """
        unpositioned = [s for s in self._tps if s not in self._seeked]
        if unpositioned:
            raise ValueError(f"{unpositioned} have no position; call seek first")
        self._check_positions()
        try:
            raw = self._consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        except KafkaError as e:
            kept, self._listener_error = self._listener_error, None
            if kept is not None:  # the group listener's own failure, as it raised it
                raise kept from e
            if _is_unavailable(e):
                raise BrokerUnavailable(f"poll failed: {e!r}") from e
            return self._unreadable(e)
        batch: dict[Slot, list[Record]] = {}
        for tp, messages in raw.items():
            if (tp.topic, tp.partition) not in self._seeked:
                continue  # fetched before a rebalance took it away
            batch[(tp.topic, tp.partition)] = [
                Record(
                    topic=m.topic,
                    partition=m.partition,
                    offset=m.offset,
                    key=m.key,
                    value=m.value if m.value is not None else b"",
                    headers=tuple((k, v if v is not None else b"") for k, v in m.headers),
                    timestamp_ms=m.timestamp,
                )
                for m in messages
            ]
        return batch

    def _unreadable(self, error: KafkaError) -> dict[Slot, list[Record]]:
        """After a poll failed on a record the client cannot read, find it and hand it on as
        unreadable, with the consumer positioned past it, so the caller answers it like any
        bad record instead of failing on it forever.

        kafka-python's consumer cannot be asked again once a fetch failed (its next poll
        of that partition never returns), so a throwaway consumer reads each partition at
        its position, alone, until one fails there too; the culprit's partition is moved
        one past it and every other partition is sought where it was, which also clears the
        failed fetch."""
        consumer = self._consumer
        tps = {slot: self._tps[slot] for slot in sorted(self._seeked) if slot in self._tps}
        positions = {slot: int(consumer.position(tp)) for slot, tp in tps.items()}
        culprit: tuple[Slot, KafkaError] | None = None
        probe = KafkaConsumer(bootstrap_servers=self._bootstrap,
                              **{**self._config, "group_id": None})
        try:
            for slot, tp in tps.items():
                probe.assign([tp])
                probe.seek(tp, positions[slot])
                failed = None
                for _ in range(ISOLATING_POLLS):
                    try:
                        if probe.poll(timeout_ms=ISOLATING_POLL_MS, max_records=1):
                            break
                    except KafkaError as e:
                        if _is_unavailable(e):
                            raise BrokerUnavailable(f"poll failed: {e!r}") from e
                        failed = e
                        break
                if failed is not None:
                    culprit = (slot, failed)
                    break
        finally:
            probe.close()
        for slot, tp in tps.items():
            skip = culprit is not None and culprit[0] == slot
            consumer.seek(tp, positions[slot] + skip)
        if culprit is None:
            raise KafkaIOError(f"poll failed: {error!r}") from error
        slot, failed = culprit
        why = f"{type(failed).__name__}: {failed}"[:MAX_UNREADABLE_CHARS]
        return {slot: [Record(slot[0], slot[1], positions[slot], None, b"", (), -1, why)]}

    def _check_positions(self) -> None:
        # Uses the high watermark of the last fetch response since the seek, if any yet.
        for (topic, partition), tp in self._tps.items():
            if (topic, partition) not in self._seeked:
                continue
            end = self._consumer.highwater(tp)
            if end is None or end == self._end_at_seek.get((topic, partition)):
                continue
            position = self._consumer.position(tp)
            if position is not None and position > end:
                raise PositionOutOfRange(topic, partition, int(position), int(end))

    def end_offsets(self, timeout_ms: int = 5000) -> dict[Slot, int]:
        """Offset after the last record of each assigned slot (for lag).

        Raises ``BrokerUnavailable`` if the broker does not answer in time.
        """
        try:
            listed = self._consumer.end_offsets(list(self._tps.values()), timeout_ms=timeout_ms)
        except KafkaError as e:
            if _is_unavailable(e):
                raise BrokerUnavailable(f"end_offsets failed: {e!r}") from e
            raise KafkaIOError(f"end_offsets failed: {e!r}") from e
        result: dict[Slot, int] = {}
        for slot, tp in self._tps.items():
            # tansu's ListOffsets can under-report; the fetch high watermark is exact.
            seen = self._consumer.highwater(tp)
            result[slot] = max(int(listed[tp]), int(seen) if seen is not None else 0)
        return result

    def lag(self, timeout_ms: int = 5000) -> dict[Slot, int]:
        """Records between our position and the end, per assigned slot."""
        ends = self.end_offsets(timeout_ms=timeout_ms)
        return {s: max(0, ends[s] - self.position(s)) for s in self._tps}

    def ping(self, timeout_ms: int = 3000) -> None:
        """Round trip to the broker; raises ``BrokerUnavailable`` if it does not answer."""
        self.end_offsets(timeout_ms=timeout_ms)

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> TopicsSource:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class CommandSource:
    """A ``TopicsSource`` of one topic, keyed by partition number."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        partitions: Iterable[int] | None = None,
        **kwargs: Any,
    ) -> None:
        self.topic = topic
        self._source = TopicsSource(bootstrap, [topic], partitions, **kwargs)

    @property
    def partitions(self) -> tuple[int, ...]:
        """Assigned partitions, ascending."""
        return self._source.partitions

    @property
    def topic_partition_count(self) -> int:
        """Partitions of the whole topic (for ``partition_for``)."""
        return self._source.topic_partition_count

    def seek(self, partition: int, offset: int) -> None:
        """Next ``poll_batch`` returns ``partition`` records starting at ``offset``."""
        self._source.seek((self.topic, partition), offset)

    def seek_all(self, positions: Mapping[int, int]) -> None:
        for partition, offset in positions.items():
            self.seek(partition, offset)

    def position(self, partition: int) -> int:
        """Offset of the next record ``poll_batch`` will return for ``partition``."""
        return self._source.position((self.topic, partition))

    def poll_batch(
        self, max_records: int = 1000, timeout_ms: int = 1000
    ) -> dict[int, list[Record]]:
        """As ``TopicsSource.poll_batch``, keyed by partition."""
        batch = self._source.poll_batch(max_records, timeout_ms)
        return {p: records for (_, p), records in batch.items()}

    def end_offsets(self, timeout_ms: int = 5000) -> dict[int, int]:
        """Offset after the last record of each assigned partition (for lag)."""
        return {p: n for (_, p), n in self._source.end_offsets(timeout_ms).items()}

    def lag(self, timeout_ms: int = 5000) -> dict[int, int]:
        """Records between our position and the end, per assigned partition."""
        return {p: n for (_, p), n in self._source.lag(timeout_ms).items()}

    def ping(self, timeout_ms: int = 3000) -> None:
        self._source.ping(timeout_ms)

    def close(self) -> None:
        self._source.close()

    def __enter__(self) -> CommandSource:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Publisher:
    """Producer for outcomes, dead letters and commands.

    Sends are asynchronous; ``flush`` waits for everything sent since the last
    flush and raises ``PublishFailed`` if any of it was not acked.
    Only advance DB positions after a successful flush (at-least-once).
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        client_id: str = "cis-publisher",
        linger_ms: int = 5,
        batch_size: int = 256 * 1024,
        delivery_timeout_ms: int = 120_000,
        max_block_ms: int = 10_000,
        **producer_overrides: Any,
    ) -> None:
        config: dict[str, Any] = {
            **_CONNECTION_DEFAULTS,
            "client_id": client_id,
            "acks": "all",
            # Idempotence makes retries after a timed-out request safe: tansu
            # drops the duplicate (observed after a 30 s SIGSTOP).
            "enable_idempotence": True,
            # retries stays at kafka-python's default (unbounded): delivery_timeout_ms
            # bounds them, retry_backoff_ms spaces them.
            "linger_ms": linger_ms,
            "batch_size": batch_size,
            "delivery_timeout_ms": delivery_timeout_ms,
            "max_block_ms": max_block_ms,
            # Explicit, so a change of library default can't move cells between
            # partitions behind partition_for's back.
            "partitioner": DefaultPartitioner(),
            "allow_auto_create_topics": False,
            # The broker's limit, said here so a record over it fails at once, in send.
            "max_request_size": BROKER_MAX_MESSAGE_BYTES,
            **producer_overrides,
        }
        try:
            self._producer = KafkaProducer(bootstrap_servers=bootstrap, **config)
        except KafkaError as e:
            if _is_unavailable(e):
                raise BrokerUnavailable(f"cannot reach {bootstrap}: {e!r}") from e
            raise
        self._pending: list[FutureRecordMetadata] = []

    def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: Sequence[Header] = (),
        partition: int | None = None,
        track: bool = True,
    ) -> FutureRecordMetadata:
        """Queue one record; ``flush`` reports whether it was acknowledged (unless
        ``track`` is false: then only the returned future tells, e.g. for a notice whose
        failure must not make the caller resend everything)."""
        try:
            future = self._producer.send(
                topic, value=value, key=key, headers=list(headers), partition=partition
            )
        except MessageSizeTooLargeError as e:
            raise RecordTooLarge(f"record for {topic} too large: {e}") from e
        except KafkaError as e:
            # Metadata unavailable for max_block_ms or buffer full.
            if _is_unavailable(e):
                raise BrokerUnavailable(f"send to {topic} failed: {e!r}") from e
            raise KafkaIOError(f"send to {topic} failed: {e!r}") from e
        if track:
            self._pending.append(future)
        return future

    def send_command(
        self,
        topic: str,
        cell: str,
        command: Mapping[str, Any] | bytes,
        headers: Sequence[Header] = (),
    ) -> FutureRecordMetadata:
        """A command keyed by cell: all of a cell's commands share one partition."""
        value = command if isinstance(command, bytes) else encode_json(command)
        return self.send(topic, value, key=cell.encode("utf-8"), headers=headers)

    def send_dlq(
        self,
        topic: str,
        original: Record | bytes,
        reason: str,
        key: bytes | None = None,
        headers: Sequence[Header] = (),
    ) -> FutureRecordMetadata:
        """Dead-letter the original bytes, with ``reason``, size and SHA-256 headers.

        Given a ``Record``, its key and headers are kept and its topic,
        partition and offset are added as ``dlq.source.*`` headers. A value
        that would not fit the broker's limit with all that is cut to fit
        (``dlq.truncated``); the digest and size are those of the original.
        """
        kept: list[Header] = []
        ours: list[Header] = []
        if isinstance(original, Record):
            value = original.value
            key = original.key if key is None else key
            # The original's headers travel with it, unless they are what is too big.
            if _header_bytes(original.headers) <= DLQ_HEADERS_MAX_BYTES:
                kept = list(original.headers)
            ours.extend(
                [
                    (DLQ_SOURCE_TOPIC_HEADER, original.topic.encode("utf-8")),
                    (DLQ_SOURCE_PARTITION_HEADER, str(original.partition).encode("ascii")),
                    (DLQ_SOURCE_OFFSET_HEADER, str(original.offset).encode("ascii")),
                ]
            )
        else:
            value = original
        ours.extend(headers)
        ours.append((DLQ_REASON_HEADER, reason.encode("utf-8")[:DLQ_REASON_MAX_BYTES]))
        ours.append((DLQ_SIZE_HEADER, str(len(value)).encode("ascii")))
        ours.append((DLQ_SHA256_HEADER, hashlib.sha256(value).hexdigest().encode("ascii")))
        key = key[:DLQ_KEY_MAX_BYTES] if key is not None else None
        all_headers = [*kept, *ours]
        room = max(0, RECORD_BUDGET_BYTES - len(key or b"") - _header_bytes(all_headers))
        if len(value) > room:
            value = value[:room]
            all_headers.append((DLQ_TRUNCATED_HEADER, b"true"))
        return self.send(topic, value, key=key, headers=all_headers)

    def flush(self, timeout_s: float | None = 30.0) -> list[RecordMetadata]:
        """Wait for all records sent since the last flush; return their metadata.

        Metadata is in send order. With idempotence a record that was retried
        may report offset -1 (the broker dropped the duplicate), so don't rely
        on offsets. Raises ``BrokerUnavailable`` on timeout: the records stay
        in flight and the next flush waits for them again. Raises
        ``PublishFailed`` if any record definitively failed; those are then
        forgotten, so resend the batch (consumers dedupe by key/command id).
        """
        try:
            self._producer.flush(timeout=timeout_s)
        except KafkaTimeoutError as e:
            raise BrokerUnavailable(f"flush timed out after {timeout_s}s") from e
        pending, self._pending = self._pending, []
        errors = [f.exception for f in pending if f.failed() and f.exception is not None]
        if errors:
            raise PublishFailed(f"{len(errors)} of {len(pending)} records failed", errors)
        return [f.value for f in pending]

    @property
    def pending(self) -> int:
        return len(self._pending)

    def close(self, timeout_s: float | None = 10.0) -> None:
        self._producer.close(timeout=timeout_s)

    def __enter__(self) -> Publisher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
