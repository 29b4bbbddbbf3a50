"""The monitor's state, views, SVG charts and HTTP API, on data made in memory."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import falcon.testing
import pytest

from bus.clients.base import Record
from bus.messages import ModelVersion, Prediction, Score
from bus.topics import Topics
from core.errors import ConfigError
from monitor.app import create_app
from monitor.config import MonitorConfig
from monitor.records import Recorder
from monitor.state import Dashboard, Drift, GroupSample, ScorePoint, TopicSample
from monitor.svg import score_chart
from monitor.views import (
    deadletters_view,
    groups_view,
    models_view,
    requests_view,
    scores_view,
    serving_reason,
)

TOPICS = Topics()
SVG = "{http://www.w3.org/2000/svg}"


def model(name: str, version: int, rmse: float | None = 1.0) -> ModelVersion:
    return ModelVersion(
        name=name,
        version=version,
        kind="multivariate" if name == "multivariate" else "polynomial",
        n_features=2,
        params={"coef": [1.0, 2.0], "intercept": 0.5},
        trained_on={"count": 100 * version},
        train_score={"r2": 0.9, "rmse": rmse, "mae": 0.5},
        created_at=1_000 * version,
    )


def score(
    name: str, version: int, ts: int, rmse: float, drift: tuple[int, int] | None = None
) -> bytes:
    """A ``scores`` value; ``drift`` is (how many drifts so far, when the last one was)."""
    drifts, drift_at = drift or (0, None)
    found = Score(name, version, 500, 500, 0.9, rmse, rmse / 2, ts, drifts > 0, drift_at, drifts)
    return json.dumps(found.to_json()).encode()


def rec(
    topic: str, value: bytes | None, *, ts: int = 0, key: bytes | None = None, **h: str
) -> Record:
    headers = [(k.replace("_", "-"), v.encode()) for k, v in h.items()]
    return Record(topic, 0, 0, key, value, ts, headers)


def filled() -> Dashboard:
    """Two models, two versions of one; scores over time; a drift; predictions."""
    board = Dashboard(history=100, deadletters=3)
    recorder = Recorder(TOPICS, board)
    for m in (model("multivariate", 1, 2.0), model("polynomial", 1, 0.8), model("polynomial", 2)):
        recorder.apply(rec(TOPICS.models, m.to_bytes(), key=m.name.encode()))
    recorder.apply(rec(TOPICS.scores, score("polynomial", 1, 10_000, 0.9)))
    recorder.apply(rec(TOPICS.scores, score("multivariate", 1, 10_000, 2.5)))
    recorder.apply(rec(TOPICS.scores, score("polynomial", 1, 20_000, 0.7)))
    drift = (1, 25_000)
    recorder.apply(rec(TOPICS.scores, score("polynomial", 2, 30_000, 0.4, drift)))
    recorder.apply(rec(TOPICS.scores, score("polynomial", 2, 40_000, 0.3, drift)))
    prediction = Prediction("p-1", 1.5, "polynomial", 2, None, 41_000)
    recorder.apply(rec(TOPICS.predictions, prediction.to_bytes(), ts=41_000))
    return board


def test_models_view_lists_versions_and_says_which_serves_and_why() -> None:
    view = models_view(filled().snapshot())
    assert [m["name"] for m in view["models"]] == ["multivariate", "polynomial"]
    poly = view["models"][1]
    assert [v["version"] for v in poly["versions"]] == [1, 2]
    assert poly["latest"] == 2 and poly["serving"] is True
    assert poly["drift"] == {"count": 1, "last_ts": 25_000}
    assert poly["versions"][1]["score"]["rmse"] == 0.3
    assert poly["versions"][1]["predictions_seen"] == 1
    assert view["serving"]["model"] == "polynomial" and view["serving"]["version"] == 2
    assert view["serving"]["why"] == "lowest rolling RMSE (0.3)"


def test_a_recalibrated_prediction_shows_in_why_and_in_the_api() -> None:
    board = filled()
    prediction = Prediction("p-2", 1.5, "polynomial", 2, None, 42_000, calibration=(-1.25, 1.5))
    Recorder(TOPICS, board).apply(rec(TOPICS.predictions, prediction.to_bytes(), ts=42_000))
    serving = models_view(board.snapshot())["serving"]
    assert serving["calibration"] == [-1.25, 1.5]
    assert serving["why"] == (
        "lowest rolling RMSE (0.3); recalibrated since its residuals jumped: serving "
        "-1.25 + 1.5 x its output until another version serves"
    )
    plain = Prediction("p-3", 1.5, "polynomial", 2, None, 43_000)
    Recorder(TOPICS, board).apply(rec(TOPICS.predictions, plain.to_bytes(), ts=43_000))
    serving = models_view(board.snapshot())["serving"]
    assert serving["calibration"] is None and serving["why"] == "lowest rolling RMSE (0.3)"


def test_serving_reason_when_another_model_scores_better() -> None:
    board = filled()
    board.add_prediction("multivariate", 1, 50_000)
    reason = serving_reason(board.snapshot())
    assert reason.startswith("kept: polynomial has a lower rolling RMSE (0.3 < 2.5)")


def test_serving_reason_before_any_score_is_the_training_rmse() -> None:
    board = Dashboard()
    board.add_model(model("multivariate", 1, 2.0))
    board.add_model(model("polynomial", 1, 0.5))
    assert serving_reason(board.snapshot()) == "no prediction seen yet"
    board.add_prediction("polynomial", 1, 5)
    assert serving_reason(board.snapshot()) == "lowest training RMSE (0.5); no rolling score yet"
    board.add_prediction("multivariate", 1, 6)
    assert serving_reason(board.snapshot()).startswith("named by the scorer's policy")


def test_tombstone_removes_a_model() -> None:
    board = filled()
    Recorder(TOPICS, board).apply(rec(TOPICS.models, None, key=b"multivariate"))
    assert [m["name"] for m in models_view(board.snapshot())["models"]] == ["polynomial"]


def test_scores_view_series_and_drifts() -> None:
    view = scores_view(filled().snapshot())
    keys = [(s["model"], s["version"]) for s in view["series"]]
    assert keys == [("multivariate", 1), ("polynomial", 1), ("polynomial", 2)]
    assert [p["rmse"] for p in view["series"][1]["points"]] == [0.9, 0.7]
    assert view["drifts"] == [{"model": "polynomial", "ts": 25_000, "count": 1}]
    assert view["drift"] == {"polynomial": {"count": 1, "last_ts": 25_000}}


@pytest.mark.parametrize(
    "fields",
    [{}, {"drifts": "1", "drift_at": 5}, {"drifts": -1, "drift_at": 5}, {"drifts": 1}],
)
def test_a_missing_or_malformed_drift_is_ignored(fields: dict[str, object]) -> None:
    board = Dashboard()
    obj = json.loads(score("m", 1, 10, 0.5))
    obj.update(fields)
    Recorder(TOPICS, board).apply(rec(TOPICS.scores, json.dumps(obj).encode()))
    view = scores_view(board.snapshot())
    assert len(view["series"]) == 1
    assert view["drifts"] == [] and view["drift"] == {}


def test_the_drift_fields_are_read() -> None:
    board = Dashboard()
    Recorder(TOPICS, board).apply(rec(TOPICS.scores, score("m", 1, 10, 0.5, (2, 7))))
    assert scores_view(board.snapshot())["drifts"] == [{"model": "m", "ts": 7, "count": 2}]


def test_a_bad_score_is_skipped() -> None:
    board = Dashboard()
    Recorder(TOPICS, board).apply(rec(TOPICS.scores, b'{"model": "m"}'))
    assert scores_view(board.snapshot())["series"] == []


def test_score_history_is_bounded() -> None:
    board = Dashboard(history=3)
    for ts in range(10):
        board.add_score(ScorePoint("m", 1, ts, 10, 10, 0.5, 1.0, 0.5, Drift(0, 0)))
    points = scores_view(board.snapshot())["series"][0]["points"]
    assert [p["ts"] for p in points] == [7, 8, 9]


def test_dead_letters_newest_first_with_reason_and_origin() -> None:
    board = Dashboard(deadletters=2)
    recorder = Recorder(TOPICS, board)
    for i in range(3):
        recorder.apply(
            rec(
                TOPICS.deadletter,
                b"junk",
                ts=i,
                key=f"k{i}".encode(),
                error=f"bad point {i}",
                source_topic="points",
                source_partition="2",
                source_offset=str(40 + i),
            )
        )
    recorder.apply(rec(TOPICS.deadletter, b"x", ts=9))  # no headers at all
    view = deadletters_view(board.snapshot())
    assert view["total"] == 4
    assert [d["ts"] for d in view["latest"]] == [9, 2]
    assert view["latest"][0]["error"] == "(no error header)"
    assert view["latest"][0]["source"] == {"topic": None, "partition": None, "offset": None}
    assert view["latest"][1]["error"] == "bad point 2"
    assert view["latest"][1]["source"] == {"topic": "points", "partition": 2, "offset": 42}
    assert view["latest"][1]["key"] == "k2"


def test_requests_are_matched_to_replies_in_either_order() -> None:
    board = Dashboard()
    recorder = Recorder(TOPICS, board)
    for i, sent in enumerate([100, 200, 300]):
        recorder.apply(rec(TOPICS.requests, b"{}", ts=sent, correlation_id=f"c{i}"))
    recorder.apply(rec(TOPICS.replies, b'{"id": "c0"}', ts=110, correlation_id="c0"))
    recorder.apply(rec(TOPICS.replies, b'{"id": "c1", "error": "x"}', ts=260, correlation_id="c1"))
    recorder.apply(rec(TOPICS.replies, b'{"id": "c9"}', ts=500, correlation_id="c9"))
    recorder.apply(rec(TOPICS.requests, b"{}", ts=480, correlation_id="c9"))  # read late
    view = requests_view(board.snapshot())
    assert view["requests"] == 4 and view["replies"] == 3 and view["matched"] == 3
    assert view["errors"] == 1 and view["waiting"] == 1
    assert view["latency_ms"] == {
        "samples": 3,
        "mean": 30.0,
        "p50": 20,
        "p95": 60,
        "p99": 60,
        "max": 60,
    }


def test_groups_view_rates_and_lag_from_two_samples() -> None:
    board = Dashboard()
    first = GroupSample("scorer", "Stable", ("c@h",), {"points": 100}, {"points": 50}, 10.0)
    second = GroupSample("scorer", "Stable", ("c@h",), {"points": 300}, {"points": 20}, 12.0)
    board.add_groups([first], [TopicSample("points", 150, 10.0)])
    view = groups_view(board.snapshot())
    assert view["groups"][0]["rate"] is None and view["groups"][0]["lag"] == 50
    board.add_groups([second], [TopicSample("points", 350, 12.0)])
    view = groups_view(board.snapshot())
    group = view["groups"][0]
    assert group["rate"] == 100.0 and group["lag"] == 20
    assert group["topics"] == [{"topic": "points", "committed": 300, "lag": 20, "rate": 100.0}]
    assert view["topics"] == [{"topic": "points", "end_offset": 350, "rate": 100.0}]


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def test_chart_draws_every_version_and_marks_changes_and_drift() -> None:
    svg = parse(score_chart(scores_view(filled().snapshot()), "rmse"))
    lines = svg.findall(f"{SVG}polyline")
    drawn = {(e.get("data-model"), e.get("data-version")) for e in lines}
    assert drawn == {("multivariate", "1"), ("polynomial", "1"), ("polynomial", "2")}
    marks = [g for g in svg.iter(f"{SVG}g") if g.get("class") == "version-mark"]
    assert [(g.get("data-model"), g.get("data-version")) for g in marks] == [("polynomial", "2")]
    drifts = [g for g in svg.iter(f"{SVG}g") if g.get("class") == "drift-mark"]
    assert [(g.get("data-model"), g.get("data-ts")) for g in drifts] == [("polynomial", "25000")]


def test_chart_points_follow_the_values() -> None:
    svg = parse(score_chart(scores_view(filled().snapshot()), "rmse"))
    line = next(e for e in svg.findall(f"{SVG}polyline") if e.get("data-version") == "2")
    (x1, y1), (x2, y2) = (map(float, p.split(",")) for p in line.get("points", "").split())
    assert x2 > x1, "later scores are further right"
    assert y2 > y1, "a lower RMSE is drawn lower"


def test_close_version_changes_are_marked_but_not_all_labelled() -> None:
    board = Dashboard()
    for version in range(1, 21):  # a new version every second over 20 s: ~25 px apart
        for ts in (version * 1000, version * 1000 + 500):
            board.add_score(ScorePoint("m", version, ts, 10, 10, 0.5, 1.0 / version, 0.5))
    svg = parse(score_chart(scores_view(board.snapshot()), "rmse"))
    marks = [g for g in svg.iter(f"{SVG}g") if g.get("class") == "version-mark"]
    labels = [t.text for g in marks for t in g.findall(f"{SVG}text")]
    assert len(marks) == 19, "every change after the first version is marked"
    assert labels[0] == "v2" and 5 <= len(labels) < 19
    legend = [g for g in svg.iter(f"{SVG}g") if g.get("class") == "legend" and g.get("data-model")]
    assert ["".join(g.itertext()) for g in legend] == ["m v1-v20"]


def test_chart_without_scores_and_unknown_metric() -> None:
    svg = parse(score_chart({"series": []}, "r2"))
    assert "no scores yet" in "".join(svg.itertext())
    with pytest.raises(ValueError, match="unknown metric"):
        score_chart({"series": []}, "accuracy")


def test_chart_escapes_model_names() -> None:
    board = Dashboard()
    board.add_score(ScorePoint('<b>"x"&', 1, 5, 10, 10, 0.5, 1.0, 0.5))
    board.add_score(ScorePoint('<b>"x"&', 2, 9, 10, 10, 0.5, 0.9, 0.5))
    svg = score_chart(scores_view(board.snapshot()), "rmse")
    assert "<b>" not in svg
    lines = parse(svg).findall(f"{SVG}polyline")
    assert {e.get("data-model") for e in lines} == {'<b>"x"&'}


def test_api_serves_every_view_and_the_page() -> None:
    board = filled()
    client = falcon.testing.TestClient(create_app(board, config=MonitorConfig(refresh_ms=1500)))
    views = {
        "groups": groups_view,
        "models": models_view,
        "scores": scores_view,
        "deadletters": deadletters_view,
        "requests": requests_view,
    }
    for name, view in views.items():
        answer = client.simulate_get(f"/api/{name}")
        assert answer.status_code == 200, name
        assert answer.json == json.loads(json.dumps(view(board.snapshot()))), name
    page = client.simulate_get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'data-refresh-ms="1500"' in page.text
    assert "http" not in page.text.replace("http://www.w3.org", ""), "nothing loaded from outside"
    chart = client.simulate_get("/chart/mae.svg")
    assert chart.status_code == 200 and chart.headers["content-type"] == "image/svg+xml"
    assert parse(chart.text).get("data-metric") == "mae"
    assert client.simulate_get("/chart/nope.svg").status_code == 404
    assert client.simulate_get("/ping").json == {"ping": "pong"}


def test_config_from_env() -> None:
    assert MonitorConfig.from_env({}).bind == "127.0.0.1:5555"
    config = MonitorConfig.from_env(
        {"STREAMSCORE_MONITOR_PORT": "6000", "STREAMSCORE_MONITOR_HOST": "0.0.0.0"}
    )
    assert config.bind == "0.0.0.0:6000"
    with pytest.raises(ConfigError, match="STREAMSCORE_MONITOR_PORT"):
        MonitorConfig.from_env({"STREAMSCORE_MONITOR_PORT": "70000"})
    with pytest.raises(ConfigError, match="without a port"):
        MonitorConfig.from_env({"STREAMSCORE_MONITOR_HOST": "0.0.0.0:5555"})
    with pytest.raises(ConfigError, match="at least 200"):
        MonitorConfig.from_env({"STREAMSCORE_MONITOR_REFRESH_MS": "10"})
