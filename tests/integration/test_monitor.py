"""The monitor on a real pipeline: its API, and its page in a real headless Chromium.

A trainer and a scorer run on this test's topics; points (one of them bad, for a
dead letter) and a few inference requests are published; the monitor runs as a
user starts it. The page must show, in its models table and its score chart,
the model versions really published on ``models``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bus.clients import driver_for
from bus.messages import InferRequest, ModelVersion
from bus.settings import KafkaSettings
from bus.topics import Topics
from streamscore.broker import free_port
from tests.integration.streams import (
    ROOT,
    read_until,
    run_streamscore,
    send_values,
    service_env,
    start_service,
    stop_service,
)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return json.loads(answer.read())


def wait_for(what: str, check: Callable[[], Any], timeout_s: float) -> Any:
    """Call ``check`` until it returns something true; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except OSError as exc:  # not listening yet
            last = exc
        if last:
            return last
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}; last: {last!r}")


def send_requests(settings: KafkaSettings, topics: Topics, n: int) -> None:
    """Inference requests as the gateway sends them (replies to partition 0)."""
    producer = driver_for(settings).producer()
    try:
        for i in range(n):
            cid = f"monitor-test-{i}"
            producer.send(
                topics.requests,
                InferRequest(cid, [[0.1, 0.2]]).to_bytes(),
                key=cid.encode(),
                headers=[
                    ("correlation-id", cid.encode()),
                    ("reply-topic", topics.replies.encode()),
                    ("reply-partition", b"0"),
                ],
            )
        producer.flush()
    finally:
        producer.close()


@pytest.fixture
def pipeline_env(
    kafka_settings: KafkaSettings,
    fresh_topics: Topics,
    tmp_path: Path,
    unique_name: Callable[[str], str],
) -> Iterator[dict[str, str]]:
    """A trainer and a scorer on this test's topics (publishing often)."""
    env = service_env(
        kafka_settings,
        fresh_topics,
        STREAMSCORE_TRAINER_GROUP=unique_name("trainer"),
        STREAMSCORE_TRAINER_TRANSACTIONAL_ID=unique_name("trainer-tx"),
        STREAMSCORE_TRAINER_PUBLISH_EVERY="1000",
        STREAMSCORE_TRAINER_WINDOW="2000",
        STREAMSCORE_SCORER_GROUP=unique_name("scorer"),
        STREAMSCORE_SCORER_REQUESTS_GROUP=unique_name("requests"),
        STREAMSCORE_SCORER_SCORES_EVERY="200",
        STREAMSCORE_PRODUCER_FEATURES="2",
    )
    trainer = start_service(["trainer"], env, tmp_path / "trainer.log")
    scorer = start_service(["scorer"], env, tmp_path / "scorer.log")
    try:
        yield env
    finally:
        assert stop_service(scorer) == 0, (tmp_path / "scorer.log").read_text()[-3000:]
        assert stop_service(trainer) == 0, (tmp_path / "trainer.log").read_text()[-3000:]


@pytest.fixture
def monitor_url(pipeline_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """The monitor, started as ``python -m monitor`` on a free port."""
    port = free_port()
    env = {**pipeline_env, "STREAMSCORE_MONITOR_PORT": str(port)}
    env["STREAMSCORE_MONITOR_REFRESH_MS"] = "1000"
    env["STREAMSCORE_MONITOR_GROUPS_EVERY_S"] = "1"
    log = (tmp_path / "monitor.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "monitor"], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for("the monitor to answer /ping", lambda: get_json(url + "/ping"), 30)
        yield url
    finally:
        assert stop_service(process) == 0, (tmp_path / "monitor.log").read_text()[-3000:]


def published_versions(settings: KafkaSettings, topics: Topics) -> dict[str, set[int]]:
    """Every (model, version) on the models topic, read as any user would."""
    records = read_until(settings, topics.models, lambda _: False, timeout_s=5)
    out: dict[str, set[int]] = {}
    for record in records:
        if record.value is not None:
            model = ModelVersion.from_bytes(record.value)
            out.setdefault(model.name, set()).add(model.version)
    return out


def test_monitor_shows_the_published_versions(
    kafka_settings: KafkaSettings,
    fresh_topics: Topics,
    pipeline_env: dict[str, str],
    monitor_url: str,
    tmp_path: Path,
) -> None:
    produced = run_streamscore(
        pipeline_env, "producer", "--count", "6000", "--rate", "1500", "--run-id", "monitor"
    )
    assert produced.returncode == 0, produced.stdout + produced.stderr
    send_values(kafka_settings, fresh_topics.points, [b"this is not json"], key=b"bad")
    send_requests(kafka_settings, fresh_topics, 5)

    def scored_enough() -> Any:
        scores = get_json(monitor_url + "/api/scores")
        models = get_json(monitor_url + "/api/models")
        requests = get_json(monitor_url + "/api/requests")
        dead = get_json(monitor_url + "/api/deadletters")
        versions = sum(len(m["versions"]) for m in models["models"])
        ok = (
            len(scores["series"]) >= 2
            and versions >= 2
            and models["serving"] is not None
            and requests["matched"] >= 5
            and dead["total"] >= 1
        )
        return (scores, models, requests, dead) if ok else None

    scores, models, requests, dead = wait_for("scores, models and replies", scored_enough, 120)
    published = published_versions(kafka_settings, fresh_topics)
    assert published, "the trainer published models"
    shown = {m["name"]: {v["version"] for v in m["versions"]} for m in models["models"]}
    assert shown.keys() <= published.keys()
    for name, versions in shown.items():
        assert versions <= published[name]
    serving = models["serving"]
    assert serving["version"] in published[serving["model"]]
    for series in scores["series"]:
        assert series["version"] in published[series["model"]]
    assert requests["latency_ms"]["samples"] >= 5
    assert requests["latency_ms"]["max"] >= 0
    letter = dead["latest"][0]
    assert letter["source"]["topic"] == fresh_topics.points
    assert letter["error"]
    groups = {g["group"]: g for g in get_json(monitor_url + "/api/groups")["groups"]}
    assert pipeline_env["STREAMSCORE_SCORER_GROUP"] in groups

    check_page(monitor_url, lambda: published_versions(kafka_settings, fresh_topics), tmp_path)


def check_page(url: str, published: Callable[[], dict[str, set[int]]], tmp_path: Path) -> None:
    """Open the dashboard in headless Chromium; its table and chart show published versions."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1300"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        browser.get(url + "/")

        def page_ready() -> Any:
            rows = browser.find_elements(By.CSS_SELECTOR, "#models tbody tr[data-version]")
            lines = browser.find_elements(By.CSS_SELECTOR, "#chart-rmse svg polyline.series")
            return (rows, lines) if rows and lines else None

        wait_for("the page to show models and scores", page_ready, 30)
        rows = browser.find_elements(By.CSS_SELECTOR, "#models tbody tr[data-version]")
        table = {
            (r.get_attribute("data-model"), int(r.get_attribute("data-version"))) for r in rows
        }
        lines = browser.find_elements(By.CSS_SELECTOR, "#chart-rmse svg polyline.series")
        chart = {
            (e.get_attribute("data-model"), int(e.get_attribute("data-version"))) for e in lines
        }
        # read after the page: versions only go up, so everything shown was published by now
        everything = {(name, v) for name, versions in published().items() for v in versions}
        assert table and table <= everything, (table, everything)
        assert chart and chart <= everything, (chart, everything)
        assert browser.find_elements(By.CSS_SELECTOR, "#models tr.serving"), "serving row marked"
        assert "cannot reach" not in browser.find_element(By.ID, "status").text
        artifacts = Path(os.environ.get("STREAMSCORE_ARTIFACTS") or tmp_path)
        artifacts.mkdir(parents=True, exist_ok=True)
        shot = artifacts / "monitor.png"
        assert browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
    finally:
        browser.quit()
