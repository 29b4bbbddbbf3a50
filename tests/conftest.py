"""Test fixtures: one real Kafka broker per test session, fresh names per test.

The broker is chosen in this order: ``KAFKA_BOOTSTRAP_SERVERS`` if set; a
testcontainers Kafka if a Docker engine answers; otherwise the project's local
broker, started for this session in a temporary folder and stopped at the end.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import settings

from bus.clients import make_admin
from bus.settings import KafkaSettings
from bus.topics import TopicLayout, Topics, ensure_topics
from tests.report_guard import pytest_runtest_makereport

__all__ = ["pytest_runtest_makereport"]  # a hook: failures are rendered with gc paused

# Property tests explore new examples on every run; a run that must be repeatable (CI:
# HYPOTHESIS_PROFILE=ci) uses one fixed sequence, so a red run means a change broke it.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

KAFKA_IMAGE = "apache/kafka:4.1.1"


def _docker_answers() -> bool:
    """True when a Docker engine answers within two seconds."""
    host = os.environ.get("DOCKER_HOST", "")
    if not host and not Path("/var/run/docker.sock").exists():
        return False
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """The bootstrap address of a real Kafka broker for this test session."""
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if configured:
        yield configured
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer(KAFKA_IMAGE).with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    from streamscore.broker import BrokerConfig, LocalBroker, free_port

    base = BrokerConfig.from_env()
    home = Path(tempfile.mkdtemp(prefix="streamscore-test-kafka-"))
    broker = LocalBroker(
        replace(base, home=home, port=free_port(), controller_port=free_port(), heap="1g")
    )
    broker.up()
    try:
        yield broker.config.bootstrap
    finally:
        broker.down()


@pytest.fixture(scope="session")
def kafka_settings(kafka_bootstrap: str) -> KafkaSettings:
    """Settings pointing at the session's broker."""
    return replace(KafkaSettings.from_env({}), bootstrap_servers=kafka_bootstrap)


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Make names no other test uses: ``unique_name("group")`` -> ``group-test_x-1a2b3c``."""
    test = request.node.name.replace("[", "-").replace("]", "")[:40]

    def make(prefix: str) -> str:
        return f"{prefix}-{test}-{uuid.uuid4().hex[:8]}"

    return make


@pytest.fixture
def make_topic(
    kafka_settings: KafkaSettings, unique_name: Callable[[str], str]
) -> Callable[..., str]:
    """Create a fresh topic: ``make_topic(partitions=3, compact=False)`` -> its name."""
    from kafka.admin import NewTopic

    def make(partitions: int = 1, compact: bool = False) -> str:
        name = unique_name("t")
        configs = {"cleanup.policy": "compact"} if compact else {}
        admin = make_admin(kafka_settings)
        try:
            admin.create_topics([NewTopic(name, partitions, 1, topic_configs=configs)])
        finally:
            admin.close()
        return name

    return make


@pytest.fixture
def fresh_topics(kafka_settings: KafkaSettings, unique_name: Callable[[str], str]) -> Topics:
    """Every topic of the contract under a prefix of this test's own, created."""
    topics = Topics.with_prefix(unique_name("s") + ".")
    ensure_topics(kafka_settings, topics, TopicLayout(partitions=3, reply_partitions=4))
    return topics
