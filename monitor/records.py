"""From records to dashboard state: one function per topic the monitor reads.

`Recorder.apply` takes any record of the monitor's topics and updates the
`Dashboard`; a value the contract refuses is logged and skipped (the monitor
only watches: the dead-letter topic is the consumers' business).
"""

from __future__ import annotations

import logging

from bus.clients.base import Record
from bus.messages import ModelVersion, Prediction, Score, dump_object, load_object
from bus.topics import Topics
from core.errors import MessageError
from monitor.state import Dashboard, DeadLetter, Drift, ScorePoint

log = logging.getLogger(__name__)

#: The optional drift fields of a ``scores`` value (see `monitor.state.Drift`).
DRIFT_KEYS = frozenset({"drift", "drifts", "drift_at"})


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", "replace")


def _int(value: bytes | None) -> int | None:
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


def dead_letter(record: Record) -> DeadLetter:
    """The dead letter ``record`` holds, with its reason and origin from the headers."""
    key = _text(record.key)
    return DeadLetter(
        partition=record.partition,
        offset=record.offset,
        ts=record.timestamp,
        error=_text(record.header("error")) or "(no error header)",
        source_topic=_text(record.header("source-topic")),
        source_partition=_int(record.header("source-partition")),
        source_offset=_int(record.header("source-offset")),
        key=None if key is None else key[:200],
        size=len(record.value or b""),
    )


def score_point(value: bytes) -> ScorePoint:
    """A ``scores`` value, with its optional drift figures (ignored when malformed).

    The drift fields are read here, in either form `Drift.parse` takes, and left
    out of what `Score` parses: a reader that knows only one form must not refuse
    the score itself.
    """
    obj = load_object(value)
    score = Score.from_bytes(dump_object({k: v for k, v in obj.items() if k not in DRIFT_KEYS}))
    return ScorePoint.of(score, Drift.parse(obj))


class Recorder:
    """Applies records of the monitor's topics to a `Dashboard`."""

    def __init__(self, topics: Topics, dashboard: Dashboard) -> None:
        self._topics = topics
        self.dashboard = dashboard

    def apply(self, record: Record) -> None:
        """Update the dashboard with one record; bad values are logged and skipped."""
        topics, board = self._topics, self.dashboard
        try:
            if record.topic == topics.models:
                if record.value is None:
                    if record.key:
                        board.remove_model(record.key.decode("utf-8", "replace"))
                else:
                    board.add_model(ModelVersion.from_bytes(record.value))
            elif record.topic == topics.scores and record.value is not None:
                board.add_score(score_point(record.value))
            elif record.topic == topics.predictions and record.value is not None:
                prediction = Prediction.from_bytes(record.value)
                board.add_prediction(
                    prediction.model, prediction.version, record.timestamp, prediction.calibration
                )
            elif record.topic == topics.deadletter:
                board.add_deadletter(dead_letter(record))
            elif record.topic == topics.requests:
                board.add_request(_text(record.header("correlation-id")), record.timestamp)
            elif record.topic == topics.replies:
                error = record.value is not None and "error" in load_object(record.value)
                board.add_reply(
                    _text(record.header("correlation-id")), record.timestamp, error=error
                )
        except MessageError as exc:
            log.warning("skipped %s[%d]@%d: %s", record.topic, record.partition, record.offset, exc)
