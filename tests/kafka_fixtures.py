"""pytest fixtures for a tansu broker; import them into tests/conftest.py:

    pytest_plugins = ["tests.kafka_fixtures"]

or (works too, but pytest then warns it cannot assert-rewrite the module):

    from tests.kafka_fixtures import kafka_broker, kafka_topic_factory  # noqa: F401

One broker serves the whole session; tests isolate themselves with unique
topic names (a tansu restart would lose all topics anyway). Tests that pause
the broker must resume it in a ``finally``; ``kafka_topic_factory`` resumes a
broker left paused so later tests are not stuck.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator

import pytest

from simulations.tansu import Broker, create_topics, start_broker

__all__ = ["kafka_broker", "kafka_topic_factory"]


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A memory-storage tansu broker on a free 127.0.0.1 port for the session.

    Its log is written under pytest's basetemp (``Broker.log_path``).
    """
    log_dir = tmp_path_factory.mktemp("tansu")
    broker = start_broker(log_dir=log_dir)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def kafka_topic_factory(kafka_broker: Broker) -> Iterator[Callable[..., str]]:
    """Create uniquely named topics: ``make_topic("commands", partitions=4) -> name``."""
    counter = itertools.count()
    suffix = uuid.uuid4().hex[:8]

    def make_topic(prefix: str = "t", partitions: int = 1) -> str:
        if kafka_broker.paused:
            kafka_broker.resume()
        name = f"{prefix}-{suffix}-{next(counter)}"
        create_topics(kafka_broker.bootstrap, [name], partitions)
        return name

    yield make_topic
    if kafka_broker.paused:
        kafka_broker.resume()
