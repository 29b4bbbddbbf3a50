"""``streamscore status`` on a real broker: records counted (not transaction markers), models."""

from __future__ import annotations

from collections.abc import Callable

from bus.clients import driver_for
from bus.messages import Prediction, Score
from bus.settings import KafkaSettings
from bus.topics import Topics
from streamscore.services import TopicSize, model_overview, topic_sizes
from tests.integration.streams import linear_model, send_model, send_values


def test_sizes_count_records_not_transaction_markers(
    kafka_settings: KafkaSettings,
    make_topic: Callable[..., str],
    unique_name: Callable[[str], str],
) -> None:
    topic, plain = make_topic(partitions=2), make_topic()
    producer = driver_for(kafka_settings).producer(transactional_id=unique_name("tx"))
    try:
        producer.init_transactions()
        for i in range(7):  # one commit marker per transaction
            producer.begin_transaction()
            producer.send(topic, f"{i}".encode(), partition=i % 2)
            producer.commit_transaction()
        producer.begin_transaction()  # aborted: not a record anyone reads
        producer.send(topic, b"aborted", partition=0)
        producer.abort_transaction()
    finally:
        producer.close()
    send_values(kafka_settings, plain, [b"a", b"b", b"c"])
    driver = driver_for(kafka_settings)
    sizes = topic_sizes(driver, [topic, plain, unique_name("missing")])
    assert list(sizes.values()) == [TopicSize(7, True), TopicSize(3, True), None]
    offsets = topic_sizes(driver, [topic], count_limit=5)[topic]
    assert offsets is not None and not offsets.exact, "too large to read: its offsets are shown"
    assert offsets.records >= 14, "seven records and seven commit markers"


def test_model_overview_lists_latest_versions_scores_and_the_serving_model(
    kafka_settings: KafkaSettings, fresh_topics: Topics
) -> None:
    for version in (1, 2, 3):
        send_model(kafka_settings, fresh_topics, linear_model(version))
    send_model(kafka_settings, fresh_topics, linear_model(1, name="other"))
    scores = [
        Score("multivariate", 2, 500, 500, 0.5, 0.9, 0.4, 10).to_bytes(),
        Score("multivariate", 3, 500, 300, 0.75, 0.25, 0.125, 20).to_bytes(),
    ]
    send_values(kafka_settings, fresh_topics.scores, scores, key=b"multivariate")
    prediction = Prediction("p-1", 1.0, "multivariate", 3, None, 30).to_bytes()
    send_values(kafka_settings, fresh_topics.predictions, [prediction])
    lines = model_overview(driver_for(kafka_settings), fresh_topics)
    assert len(lines) == 2
    assert lines[0].split()[:2] == ["multivariate", "v3"]
    assert "v3: r2 0.75 rmse 0.25 mae 0.125 over 300" in lines[0]
    assert lines[0].endswith("<- serving v3")
    assert lines[1].split()[:2] == ["other", "v1"]
    assert "no rolling score yet" in lines[1] and "serving" not in lines[1]
