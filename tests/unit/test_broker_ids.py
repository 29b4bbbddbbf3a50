"""The local broker's KRaft cluster ids, and how status tells its own broker from another."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from core.errors import BrokerError
from streamscore import broker
from streamscore.broker import BrokerConfig, LocalBroker


def test_cluster_ids_never_start_like_an_option() -> None:
    # about one random id in 64 starts with "-", which the storage tool reads as an option
    ids = [broker.new_cluster_id() for _ in range(2000)]
    assert not [i for i in ids if i.startswith("-")]
    assert len(set(ids)) == len(ids)
    for cluster_id in ids[:50]:
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


def _running_home(tmp_path: Path, port: int, cluster_id: str) -> BrokerConfig:
    """A home whose node looks started: properties on ``port``, storage of ``cluster_id``."""
    config = BrokerConfig.from_env(
        {"STREAMSCORE_HOME": str(tmp_path), "STREAMSCORE_KAFKA_PORT": "19092"}
    )
    node = config.nodes[0]
    node.data_dir.mkdir(parents=True)
    node.properties_file.write_text(
        f"node.id=1\nlisteners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{port + 1}\n"
    )
    (node.data_dir / "meta.properties").write_text(f"node.id=1\ncluster.id={cluster_id}\n")
    return config


@pytest.fixture
def alive_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every node's process runs and its port answers."""
    monkeypatch.setattr(LocalBroker, "_live_pid", lambda self, node: 4242)
    monkeypatch.setattr(broker, "port_open", lambda host, port: True)


def test_the_started_port_and_cluster_id_are_read_back(tmp_path: Path) -> None:
    config = _running_home(tmp_path, 39092, "abcDEF123")
    assert broker.listener_port(config.properties_file) == 39092
    assert broker.formatted_cluster_id(config.data_dir) == "abcDEF123"
    assert broker.listener_port(tmp_path / "missing") is None
    assert broker.formatted_cluster_id(tmp_path / "missing") is None


@pytest.mark.usefixtures("alive_broker")
def test_another_kafka_on_the_configured_port_is_not_our_broker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _running_home(tmp_path, 19092, "ours")
    monkeypatch.setattr(broker, "cluster_id_at", lambda bootstrap: "theirs")
    status = LocalBroker(config).status()
    assert status.state == "mismatch"
    assert "another Kafka (cluster theirs) answers on 127.0.0.1:19092" in status.describe()
    with pytest.raises(BrokerError, match="cluster theirs"):
        LocalBroker(config).up()
    monkeypatch.setattr(broker, "cluster_id_at", lambda bootstrap: "ours")
    assert LocalBroker(config).status().state == "up"


@pytest.mark.usefixtures("alive_broker")
def test_a_broker_of_this_home_on_another_port_is_named_with_its_port(tmp_path: Path) -> None:
    config = _running_home(tmp_path, 39092, "ours")
    status = LocalBroker(config).status()
    assert status.state == "mismatch"
    assert "runs on 127.0.0.1:39092 (pid 4242)" in status.describe()
    assert "set STREAMSCORE_KAFKA_PORT=39092" in status.describe()
    with pytest.raises(BrokerError, match="STREAMSCORE_KAFKA_PORT=39092"):
        LocalBroker(config).up()
