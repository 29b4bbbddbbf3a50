"""The demo's drift report, from the predictions it read."""

from __future__ import annotations

from bus.messages import Prediction
from bus.topics import Topics
from streamscore.demo import Monitor, drift_report

TOPICS = Topics()


def predict(
    m: Monitor, i: int, error: float, version: int, calibration: tuple[float, float] | None
) -> None:
    value = Prediction(f"p-{i:06d}", 1.0 + error, "polynomial", version, 1.0, i, calibration)
    m.add(TOPICS.predictions, value.to_bytes(), i, TOPICS)


def test_the_report_says_where_the_scorer_recalibrated() -> None:
    m = Monitor()
    for i in range(100):
        predict(m, i, 0.1, 1, None)
    for i in range(100, 103):
        predict(m, i, 15.0, 1, None)
    for i in range(103, 140):
        predict(m, i, 0.2, 1, (-1.25, -1.5))
    for i in range(140, 200):
        predict(m, i, 0.1, 2, None)
    lines = drift_report(m, 100, span=50)
    assert (
        "  recalibrated     37 predictions, points 103-139 (a + b x the serving version's "
        "output, from 3 points after the drift)"
    ) in lines
    assert (
        "  took over        polynomial v2 at point 140 (40 points after the drift; "
        "polynomial v1 served before)"
    ) in lines


def test_without_recalibration_the_report_has_no_such_line() -> None:
    m = Monitor()
    for i in range(200):
        predict(m, i, 0.1, 1 if i < 150 else 2, None)
    assert not any("recalibrated" in line for line in drift_report(m, 100, span=50))
