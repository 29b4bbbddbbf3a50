"""Topic names (with the optional prefix) and how each topic is created."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

from kafka.admin import NewTopic
from kafka.errors import InvalidReplicationFactorError, KafkaError, TopicAlreadyExistsError

from bus.clients import make_admin
from bus.settings import KafkaSettings
from core.env import env_int, env_str
from core.errors import BusError

log = logging.getLogger(__name__)

HOUR_MS = 3_600_000
#: The most copies an automatic replication factor asks for.
MAX_AUTO_REPLICATION = 3
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
    """How many partitions topics get, and their replication factor.

    ``replication_factor`` None means: as many copies as the cluster has brokers,
    at most 3 (asked of the cluster when topics are created). With more than one
    copy, a write with acks=all needs `min_insync_replicas` of them.
    """

    partitions: int = 6
    reply_partitions: int = 16
    replication_factor: int | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TopicLayout:
        """Read ``STREAMSCORE_{PARTITIONS,REPLY_PARTITIONS,TOPIC_REPLICATION}``.

        ``STREAMSCORE_REPLICATION`` is the older name of ``STREAMSCORE_TOPIC_REPLICATION``.
        """
        env = os.environ if env is None else env
        replication: int | None = None
        for name in ("STREAMSCORE_TOPIC_REPLICATION", "STREAMSCORE_REPLICATION"):
            if env_str(env, name, ""):
                replication = env_int(env, name, 1, minimum=1)
                break
        return cls(
            partitions=env_int(env, "STREAMSCORE_PARTITIONS", 6, minimum=1),
            reply_partitions=env_int(env, "STREAMSCORE_REPLY_PARTITIONS", 16, minimum=1),
            replication_factor=replication,
        )

    def replication_for(self, brokers: int) -> int:
        """The replication factor on a cluster of ``brokers`` live brokers."""
        if self.replication_factor is not None:
            return self.replication_factor
        return max(1, min(MAX_AUTO_REPLICATION, brokers))


def min_insync_replicas(replication_factor: int) -> int:
    """Copies a write with acks=all needs: 2 of 3 (one broker may be down), 1 of 1 or 2."""
    return max(1, min(2, replication_factor - 1))


def topic_specs(topics: Topics, layout: TopicLayout, brokers: int = 1) -> list[NewTopic]:
    """The creation spec of every topic: partitions, replication and retention.

    ``brokers`` is the size of the cluster, for an automatic replication factor.
    """
    replication = layout.replication_for(brokers)
    durability = (
        {"min.insync.replicas": str(min_insync_replicas(replication))} if replication > 1 else {}
    )
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
        NewTopic(name, partitions, replication, topic_configs={**configs, **durability})
        for name, partitions, configs in plan
    ]


def ensure_topics(
    settings: KafkaSettings, topics: Topics, layout: TopicLayout | None = None
) -> list[str]:
    """Create every topic that does not exist yet; return the names created."""
    layout = layout or TopicLayout()
    admin = make_admin(settings)
    try:
        existing = set(admin.list_topics())
        if all(name in existing for name in topics.all().values()):
            return []
        brokers = 1
        if layout.replication_factor is None:
            live = admin.describe_cluster().get("brokers") or ()
            brokers = sum(1 for broker in live if not broker.get("is_fenced"))
        specs = topic_specs(topics, layout, brokers)
        created: list[str] = []
        for spec in specs:
            if spec.name in existing:
                continue
            try:
                admin.create_topics([spec])
                created.append(spec.name)
            except TopicAlreadyExistsError:
                pass  # another process created it meanwhile
        if created:
            admin.wait_for_topics(created)  # visible, with a leader for every partition
            log.info("created topics: %s", ", ".join(created))
        return created
    except InvalidReplicationFactorError as exc:
        raise BusError(
            f"cannot create topics on {settings.bootstrap_servers} with replication factor "
            f"{layout.replication_for(brokers)}: {exc}. Set STREAMSCORE_TOPIC_REPLICATION to at "
            "most the number of live brokers (or leave it unset)"
        ) from exc
    except KafkaError as exc:
        raise BusError(f"cannot create topics on {settings.bootstrap_servers}: {exc}") from exc
    finally:
        admin.close()
