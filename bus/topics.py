"""Topic names (with the optional prefix) and how each topic is created."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from bus.clients import make_admin
from bus.settings import KafkaSettings
from streamscore.env import env_int, env_str
from streamscore.errors import BusError

log = logging.getLogger(__name__)

HOUR_MS = 3_600_000
WEEK_MS = 7 * 24 * HOUR_MS


@dataclass(frozen=True)
class Topics:
    """The names of every topic streamscore uses.

    Each default is prefixed by ``STREAMSCORE_TOPIC_PREFIX`` and can be replaced on its
    own by ``STREAMSCORE_TOPIC_<NAME>`` (e.g. ``STREAMSCORE_TOPIC_POINTS=sensor-points``).
    ``trainer_state`` is internal: the trainer's checkpoints, not part of the contract.
    """

    points: str = "points"
    models: str = "models"
    predictions: str = "predictions"
    scores: str = "scores"
    deadletter: str = "deadletter"
    requests: str = "requests"
    replies: str = "replies"
    trainer_state: str = "trainer-state"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Topics:
        """Names from ``STREAMSCORE_TOPIC_PREFIX`` and ``STREAMSCORE_TOPIC_<NAME>``."""
        env = os.environ if env is None else env
        return cls.with_prefix(
            env.get("STREAMSCORE_TOPIC_PREFIX", ""),
            **{
                f.name: env_str(env, f"STREAMSCORE_TOPIC_{f.name.upper()}", "")
                for f in fields(cls)
                if env_str(env, f"STREAMSCORE_TOPIC_{f.name.upper()}", "")
            },
        )

    @classmethod
    def with_prefix(cls, prefix: str, **overrides: str) -> Topics:
        """Default names with ``prefix`` in front, then ``overrides`` taken as they are."""
        names = {f.name: prefix + str(f.default) for f in fields(cls)}
        names.update(overrides)
        return cls(**names)

    def all(self) -> dict[str, str]:
        """Field name -> topic name, for every topic."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class TopicLayout:
    """How many partitions topics get, and their replication factor."""

    partitions: int = 6
    reply_partitions: int = 16
    replication_factor: int = 1

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TopicLayout:
        """Read ``STREAMSCORE_{PARTITIONS,REPLY_PARTITIONS,REPLICATION}``."""
        env = os.environ if env is None else env
        return cls(
            partitions=env_int(env, "STREAMSCORE_PARTITIONS", 6, minimum=1),
            reply_partitions=env_int(env, "STREAMSCORE_REPLY_PARTITIONS", 16, minimum=1),
            replication_factor=env_int(env, "STREAMSCORE_REPLICATION", 1, minimum=1),
        )


def topic_specs(topics: Topics, layout: TopicLayout) -> list[NewTopic]:
    """The creation spec of every topic: partitions, replication and retention."""
    delete = {"cleanup.policy": "delete", "retention.ms": str(WEEK_MS)}
    short = {"cleanup.policy": "delete", "retention.ms": str(HOUR_MS)}
    # the active segment is never compacted: roll it every 10 minutes so old versions go
    compact = {"cleanup.policy": "compact", "min.compaction.lag.ms": "0", "segment.ms": "600000"}
    # a prediction's timestamp is when the broker appended it: end-to-end latency is
    # that minus the point's ts
    appended = {**delete, "message.timestamp.type": "LogAppendTime"}
    plan: list[tuple[str, int, dict[str, str]]] = [
        (topics.points, layout.partitions, delete),
        (topics.models, 1, compact),
        (topics.predictions, layout.partitions, appended),
        (topics.scores, 1, delete),
        (topics.deadletter, 1, delete),
        (topics.requests, layout.partitions, short),
        (topics.replies, layout.reply_partitions, short),
        (topics.trainer_state, 1, compact),
    ]
    return [
        NewTopic(name, partitions, layout.replication_factor, topic_configs=dict(configs))
        for name, partitions, configs in plan
    ]


def ensure_topics(
    settings: KafkaSettings, topics: Topics, layout: TopicLayout | None = None
) -> list[str]:
    """Create every topic that does not exist yet; return the names created."""
    specs = topic_specs(topics, layout or TopicLayout())
    admin = make_admin(settings)
    try:
        existing = set(admin.list_topics())
        missing = [spec for spec in specs if spec.name not in existing]
        created: list[str] = []
        for spec in missing:
            try:
                admin.create_topics([spec])
                created.append(spec.name)
            except TopicAlreadyExistsError:
                pass  # another process created it meanwhile
        if created:
            admin.wait_for_topics(created)  # visible, with a leader for every partition
            log.info("created topics: %s", ", ".join(created))
        return created
    except KafkaError as exc:
        raise BusError(f"cannot create topics on {settings.bootstrap_servers}: {exc}") from exc
    finally:
        admin.close()
