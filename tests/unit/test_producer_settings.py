"""The producer's settings, summary and progress reports."""

from __future__ import annotations

import io

import pytest

from bus.messages import Point
from core.errors import ConfigError
from producer.__main__ import format_summary, parse_config
from producer.config import ProducerConfig
from producer.loop import (
    PublishSummary,
    point_key,
)
from producer.progress import ProgressReporter, render_bar
from producer.sources import BadRows
from tests.unit.producer_fakes import FakeClock


def test_config_from_env_and_flags_on_top() -> None:
    env = {
        "STREAMSCORE_PRODUCER_FUNCTION": "linear",
        "STREAMSCORE_PRODUCER_RATE": "1000",
        "STREAMSCORE_PRODUCER_COUNT": "50",
        "STREAMSCORE_PRODUCER_COLUMNS": "a, b",
        "STREAMSCORE_PRODUCER_FILE": "x.csv",
        "STREAMSCORE_PRODUCER_KEEP_TS": "true",
    }
    config = ProducerConfig.from_env(env)
    assert (config.function, config.rate, config.count) == ("linear", 1000.0, 50)
    assert config.columns == ("a", "b") and config.keep_ts
    flags = parse_config(["--rate", "250", "-n", "7", "--no-keep-ts", "--keys", "4"], env)
    assert (flags.function, flags.rate, flags.count, flags.keep_ts) == ("linear", 250.0, 7, False)
    key_fn = flags.key_fn()
    assert key_fn is not None and key_fn(5, Point("p", [1.0])) == "entity-1"
    assert ProducerConfig().key_fn() is point_key
    assert ProducerConfig(keys="none").key_fn() is None
    assert ProducerConfig() == ProducerConfig.from_env({})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"STREAMSCORE_PRODUCER_RATE": "fast"}, "STREAMSCORE_PRODUCER_RATE"),
        ({"STREAMSCORE_PRODUCER_UNLABELLED": "1.5"}, "--unlabelled / STREAMSCORE_PRODUCER_UN"),
        ({"STREAMSCORE_PRODUCER_KEYS": "some"}, "--keys"),
        ({"STREAMSCORE_PRODUCER_FUNCTION": "sine"}, "STREAMSCORE_PRODUCER_FUNCTION"),
        ({"STREAMSCORE_PRODUCER_COLUMNS": "a"}, "without --file"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ProducerConfig.from_env(env)


def test_run_ids_prefix_the_ids() -> None:
    assert ProducerConfig().id_prefix_for_run() == "p-"
    assert ProducerConfig(run_id="r7").id_prefix_for_run() == "r7-p-"
    assert ProducerConfig(run_id="auto").id_prefix_for_run(lambda: "abc123") == "abc123-p-"


def test_summary_lists_the_first_bad_rows() -> None:
    bad = BadRows("data.csv")
    for line in range(2, 30):
        bad.add(line, f"bad thing {line}")
    summary = PublishSummary(
        sent=1000, labelled=900, failed=0, elapsed=0.5, stopped=True, exhausted=False
    )
    text = format_summary(summary, bad, "points")
    assert text.splitlines()[0] == (
        "sent 1,000 points to 'points' in 0.50 s (2,000 points/s); 900 labelled, 100 unlabelled"
    )
    assert "skipped 28 bad row(s) of data.csv:" in text
    assert "  line 2: bad thing 2" in text and "  line 11: bad thing 11" in text
    assert "line 12:" not in text and "... and 18 more" in text
    assert "stopped on request" in text


def test_producer_tuning_is_passed_only_when_set() -> None:
    assert ProducerConfig().producer_overrides() == {}
    env = {"STREAMSCORE_PRODUCER_LINGER_MS": "20", "STREAMSCORE_PRODUCER_BATCH_SIZE": "65536"}
    assert ProducerConfig.from_env(env).producer_overrides() == {
        "linger_ms": 20,
        "batch_size": 65536,
    }
    with pytest.raises(ConfigError, match="STREAMSCORE_PRODUCER_BATCH_SIZE"):
        ProducerConfig.from_env({"STREAMSCORE_PRODUCER_BATCH_SIZE": "10"})


def test_progress_bar_on_a_terminal_is_redrawn_in_place_and_throttled() -> None:
    stream = io.StringIO()
    clock = FakeClock(0.0)
    reporter = ProgressReporter(stream, total=1000, tty=True, interval=0.2, clock=clock)
    reporter(100, 0.1)  # too early: nothing drawn
    assert stream.getvalue() == ""
    clock.now = 0.25
    reporter(500, 0.25)
    clock.now = 0.3
    reporter(600, 0.3)  # throttled
    reporter.finish()
    text = stream.getvalue()
    assert text.count("\r") == 1 and text.endswith("\n")
    assert "500/1,000" in text and " 50% " in text and "2,000 points/s" in text
    assert render_bar(10, None, 2.0) == "10 points sent, 5 points/s, 2.0 s"


def test_progress_without_a_terminal_logs_lines(caplog: pytest.LogCaptureFixture) -> None:
    stream = io.StringIO()
    clock = FakeClock(0.0)
    reporter = ProgressReporter(stream, total=None, tty=False, interval=5.0, clock=clock)
    with caplog.at_level("INFO", logger="producer.progress"):
        for second in range(1, 12):
            clock.now = float(second)
            reporter(second * 100, float(second))
        reporter.finish()
    assert stream.getvalue() == ""
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "progress: 500 points sent, 100 points/s, 5.0 s",
        "progress: 1,000 points sent, 100 points/s, 10.0 s",
    ]
