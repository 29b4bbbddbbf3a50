"""Consumer groups and topics as the admin client sees them: members, committed offsets, lag.

`GroupProbe.sample` asks the cluster, once, for every consumer group that has
committed offsets on one of the monitor's topics, its state and members, and
the end offsets of those topics; the dashboard keeps two samples to tell rates.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from bus.clients.base import Consumer, TopicPartition
from core.errors import BusError
from monitor.state import GroupSample, TopicSample

log = logging.getLogger(__name__)


class GroupProbe:
    """Samples groups and topics through an admin client and a consumer (no group joined)."""

    def __init__(
        self,
        admin: Any,
        consumer: Consumer,
        topics: Iterable[str],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._admin = admin
        self._consumer = consumer
        self._topics = sorted(set(topics))
        self._clock = clock

    def sample(self) -> tuple[list[GroupSample], list[TopicSample]]:
        """One sample of every relevant group and of every topic that exists."""
        try:
            ends = self._ends()
            offsets = self._admin.list_group_offsets(
                {g["group_id"]: None for g in self._admin.list_groups()}
            )
            relevant = {
                group: {
                    TopicPartition(tp.topic, tp.partition): meta.offset
                    for tp, meta in found.items()
                    if tp.topic in self._topics and meta.offset >= 0
                }
                for group, found in offsets.items()
            }
            relevant = {group: found for group, found in relevant.items() if found}
            described = self._admin.describe_groups(sorted(relevant)) if relevant else {}
        except BusError:
            raise
        except Exception as exc:  # kafka-python's admin errors (only drivers import the library)
            raise BusError(f"could not read the consumer groups: {exc}; is the broker up?") from exc
        now = self._clock()
        groups = [
            _group(group, committed, described.get(group, {}), ends, now)
            for group, committed in sorted(relevant.items())
        ]
        topics = [
            TopicSample(topic, sum(e for tp, e in ends.items() if tp.topic == topic), now)
            for topic in self._topics
            if any(tp.topic == topic for tp in ends)
        ]
        return groups, topics

    def _ends(self) -> dict[TopicPartition, int]:
        tps = [
            TopicPartition(topic, p)
            for topic in self._topics
            for p in self._consumer.partitions_for(topic)
        ]
        return self._consumer.end_offsets(tps) if tps else {}


def _group(
    group: str,
    committed: dict[TopicPartition, int],
    described: dict[str, Any],
    ends: dict[TopicPartition, int],
    now: float,
) -> GroupSample:
    by_topic: dict[str, int] = {}
    lag: dict[str, int] = {}
    for tp, offset in committed.items():
        by_topic[tp.topic] = by_topic.get(tp.topic, 0) + offset
        if tp in ends:
            lag[tp.topic] = lag.get(tp.topic, 0) + max(0, ends[tp] - offset)
    members = tuple(
        sorted(
            f"{m.get('client_id', '?')}@{str(m.get('client_host', '?')).lstrip('/')}"
            for m in described.get("members", [])
            if isinstance(m, dict)
        )
    )
    return GroupSample(
        group=group,
        state=str(described.get("group_state", "?")),
        members=members,
        committed=by_topic,
        lag=lag,
        ts=now,
    )
