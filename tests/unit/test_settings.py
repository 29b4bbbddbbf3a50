"""Settings read from the environment: Kafka connection, topic names and layout, env helpers."""

from __future__ import annotations

from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient

from bus.clients import CONSUMER_DEFAULTS, PRODUCER_DEFAULTS
from bus.settings import KafkaSettings
from bus.topics import HOUR_MS, WEEK_MS, TopicLayout, Topics, topic_specs
from core.env import env_bool, env_choice, env_float, env_int, env_str
from core.errors import ConfigError
from streamscore.broker import PROJECT_ROOT, BrokerConfig, default_home, kafka_file

# --- KafkaSettings ------------------------------------------------------------------


def test_kafka_settings_default_to_a_plaintext_local_broker() -> None:
    settings = KafkaSettings.from_env({})
    assert settings == KafkaSettings(
        bootstrap_servers="127.0.0.1:9092",
        client_id="streamscore",
        security_protocol="PLAINTEXT",
        request_timeout_ms=30_000,
    )
    assert settings.client_kwargs() == {
        "bootstrap_servers": ["127.0.0.1:9092"],
        "client_id": "streamscore",
        "security_protocol": "PLAINTEXT",
        "request_timeout_ms": 30_000,
    }


def test_kafka_settings_read_the_process_environment_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka-1:9092")
    monkeypatch.setenv("KAFKA_CLIENT_ID", "scorer-7")
    settings = KafkaSettings.from_env()
    assert settings.bootstrap_servers == "kafka-1:9092"
    assert settings.client_id == "scorer-7"


def test_several_bootstrap_servers_become_a_list() -> None:
    settings = KafkaSettings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "k1:9092,k2:9093,k3:9094"})
    assert settings.client_kwargs()["bootstrap_servers"] == ["k1:9092", "k2:9093", "k3:9094"]


def test_sasl_ssl_settings_pass_through_to_every_client() -> None:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": "broker.example.com:9096",
        "KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
        "KAFKA_SASL_MECHANISM": "scram-sha-512",
        "KAFKA_SASL_USERNAME": "alice",
        "KAFKA_SASL_PASSWORD": "s3cret",
        "KAFKA_SSL_CAFILE": "/etc/kafka/ca.pem",
        "KAFKA_SSL_CERTFILE": "/etc/kafka/client.pem",
        "KAFKA_SSL_KEYFILE": "/etc/kafka/client.key",
        "KAFKA_SSL_PASSWORD": "keypass",
        "KAFKA_REQUEST_TIMEOUT_MS": "45000",
    }
    kwargs = KafkaSettings.from_env(env).client_kwargs()
    assert kwargs == {
        "bootstrap_servers": ["broker.example.com:9096"],
        "client_id": "streamscore",
        "security_protocol": "SASL_SSL",
        "request_timeout_ms": 45_000,
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "alice",
        "sasl_plain_password": "s3cret",
        "ssl_cafile": "/etc/kafka/ca.pem",
        "ssl_certfile": "/etc/kafka/client.pem",
        "ssl_keyfile": "/etc/kafka/client.key",
        "ssl_password": "keypass",
    }


def test_the_same_settings_as_librdkafka_properties() -> None:
    assert KafkaSettings.from_env({}).librdkafka_config() == {
        "bootstrap.servers": "127.0.0.1:9092",
        "client.id": "streamscore",
        "security.protocol": "PLAINTEXT",
        "socket.timeout.ms": 30_000,
    }
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": "k1:9096,k2:9096",
        "KAFKA_CLIENT_ID": "scorer-2",
        "KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
        "KAFKA_SASL_MECHANISM": "scram-sha-256",
        "KAFKA_SASL_USERNAME": "alice",
        "KAFKA_SASL_PASSWORD": "s3cret",
        "KAFKA_SSL_CAFILE": "/etc/kafka/ca.pem",
        "KAFKA_SSL_CERTFILE": "/etc/kafka/client.pem",
        "KAFKA_SSL_KEYFILE": "/etc/kafka/client.key",
        "KAFKA_SSL_PASSWORD": "keypass",
        "KAFKA_REQUEST_TIMEOUT_MS": "45000",
    }
    assert KafkaSettings.from_env(env).librdkafka_config() == {
        "bootstrap.servers": "k1:9096,k2:9096",
        "client.id": "scorer-2",
        "security.protocol": "SASL_SSL",
        "socket.timeout.ms": 45_000,
        "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": "alice",
        "sasl.password": "s3cret",
        "ssl.ca.location": "/etc/kafka/ca.pem",
        "ssl.certificate.location": "/etc/kafka/client.pem",
        "ssl.key.location": "/etc/kafka/client.key",
        "ssl.key.password": "keypass",
    }


def test_the_settings_name_their_secrets_and_hide_them_from_repr() -> None:
    settings = KafkaSettings.from_env({"KAFKA_SASL_PASSWORD": "pw1", "KAFKA_SSL_PASSWORD": "pw2"})
    assert settings.secrets() == ["pw1", "pw2"]
    assert "pw1" not in repr(settings) and "pw2" not in repr(settings)
    assert KafkaSettings.from_env({}).secrets() == []


def test_ssl_without_sasl_sends_no_sasl_settings() -> None:
    env = {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": "/ca.pem"}
    kwargs = KafkaSettings.from_env(env).client_kwargs()
    assert kwargs["security_protocol"] == "SSL"
    assert kwargs["ssl_cafile"] == "/ca.pem"
    assert not {k for k in kwargs if k.startswith("sasl")}


@pytest.mark.parametrize("client", [KafkaProducer, KafkaConsumer, KafkaAdminClient])
def test_every_setting_and_default_is_an_option_kafka_python_knows(client: type) -> None:
    env = {
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "PLAIN",
        "KAFKA_SASL_USERNAME": "u",
        "KAFKA_SASL_PASSWORD": "p",
        "KAFKA_SSL_CAFILE": "c",
        "KAFKA_SSL_CERTFILE": "c",
        "KAFKA_SSL_KEYFILE": "k",
        "KAFKA_SSL_PASSWORD": "p",
    }
    known = set(client.DEFAULT_CONFIG)  # type: ignore[attr-defined]
    assert set(KafkaSettings.from_env(env).client_kwargs()) <= known
    defaults = {KafkaProducer: PRODUCER_DEFAULTS, KafkaConsumer: CONSUMER_DEFAULTS}
    assert set(defaults.get(client, {})) <= known


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"KAFKA_SECURITY_PROTOCOL": "TLS"},
            "KAFKA_SECURITY_PROTOCOL='TLS': expected one of PLAINTEXT, SSL, SASL_PLAINTEXT, "
            "SASL_SSL",
        ),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"},
            "KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT needs KAFKA_SASL_MECHANISM",
        ),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "  "},
            "KAFKA_SECURITY_PROTOCOL=SASL_SSL needs KAFKA_SASL_MECHANISM",
        ),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "MD5"},
            "KAFKA_SASL_MECHANISM='MD5': expected one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, "
            "OAUTHBEARER, GSSAPI",
        ),
        (
            {"KAFKA_REQUEST_TIMEOUT_MS": "soon"},
            "KAFKA_REQUEST_TIMEOUT_MS='soon': expected an integer",
        ),
        (
            {"KAFKA_REQUEST_TIMEOUT_MS": "10"},
            "KAFKA_REQUEST_TIMEOUT_MS=10: must be at least 1000",
        ),
    ],
)
def test_bad_kafka_settings_are_a_config_error_that_names_the_variable(
    env: dict[str, str], expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        KafkaSettings.from_env(env)
    assert str(info.value) == expected


def test_blank_security_settings_mean_the_defaults() -> None:
    settings = KafkaSettings.from_env(
        {"KAFKA_SECURITY_PROTOCOL": " ", "KAFKA_SASL_MECHANISM": "", "KAFKA_SASL_USERNAME": ""}
    )
    assert settings.security_protocol == "PLAINTEXT"
    assert settings.sasl_mechanism is None
    assert settings.sasl_username is None


# --- Topics -----------------------------------------------------------------------

CONTRACT_NAMES = {
    "points": "points",
    "models": "models",
    "predictions": "predictions",
    "scores": "scores",
    "deadletter": "deadletter",
    "requests": "requests",
    "replies": "replies",
    "trainer_state": "trainer-state",
}


def test_topic_names_default_to_the_contract() -> None:
    assert Topics.from_env({}).all() == CONTRACT_NAMES
    assert Topics.from_env({}) == Topics()


def test_the_prefix_goes_in_front_of_every_topic() -> None:
    topics = Topics.from_env({"STREAMSCORE_TOPIC_PREFIX": "acme.prod."})
    assert topics.all() == {field: f"acme.prod.{name}" for field, name in CONTRACT_NAMES.items()}


def test_a_topic_can_be_overridden_on_its_own_and_is_taken_as_is() -> None:
    topics = Topics.from_env(
        {
            "STREAMSCORE_TOPIC_PREFIX": "acme.",
            "STREAMSCORE_TOPIC_POINTS": "sensor-points",
            "STREAMSCORE_TOPIC_TRAINER_STATE": "trainer-checkpoints",
        }
    )
    assert topics.points == "sensor-points"
    assert topics.trainer_state == "trainer-checkpoints"
    assert topics.models == "acme.models"
    assert topics.replies == "acme.replies"


def test_a_blank_override_keeps_the_default_name() -> None:
    topics = Topics.from_env({"STREAMSCORE_TOPIC_MODELS": "  ", "STREAMSCORE_TOPIC_PREFIX": "x-"})
    assert topics.models == "x-models"


def test_topic_names_read_the_process_environment_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STREAMSCORE_TOPIC_PREFIX", "t1.")
    monkeypatch.setenv("STREAMSCORE_TOPIC_SCORES", "quality")
    topics = Topics.from_env()
    assert (topics.points, topics.scores) == ("t1.points", "quality")


def test_with_prefix_applies_overrides_after_the_prefix() -> None:
    topics = Topics.with_prefix("p.", deadletter="dlq")
    assert topics.deadletter == "dlq"
    assert topics.points == "p.points"


# --- TopicLayout and topic_specs -----------------------------------------------------


def test_topic_layout_defaults_and_environment() -> None:
    assert TopicLayout.from_env({}) == TopicLayout(
        partitions=6,
        reply_partitions=16,
        replication_factor=None,  # None: the cluster decides
    )
    env = {
        "STREAMSCORE_PARTITIONS": "12",
        "STREAMSCORE_REPLY_PARTITIONS": "4",
        "STREAMSCORE_REPLICATION": "3",
    }
    assert TopicLayout.from_env(env) == TopicLayout(12, 4, 3)


def test_a_topic_layout_below_one_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^STREAMSCORE_PARTITIONS=0: must be at least 1$"):
        TopicLayout.from_env({"STREAMSCORE_PARTITIONS": "0"})


def test_topic_specs_plan_partitions_and_retention_of_every_topic() -> None:
    topics = Topics.with_prefix("s.")
    specs = topic_specs(topics, TopicLayout(partitions=5, reply_partitions=7, replication_factor=3))
    plan = {
        spec.name: (
            spec.num_partitions,
            spec.replication_factor,
            spec.topic_configs["cleanup.policy"],
            spec.topic_configs.get("retention.ms"),
        )
        for spec in specs
    }
    week, hour = str(WEEK_MS), str(HOUR_MS)
    assert plan == {
        "s.points": (5, 3, "delete", week),
        "s.models": (1, 3, "compact", None),
        "s.predictions": (5, 3, "delete", week),
        "s.scores": (1, 3, "delete", week),
        "s.deadletter": (1, 3, "delete", week),
        "s.requests": (5, 3, "delete", hour),
        "s.replies": (7, 3, "delete", hour),
        "s.trainer-state": (1, 3, "compact", None),
    }
    assert WEEK_MS == 7 * 24 * 3600 * 1000
    assert HOUR_MS == 3600 * 1000


def test_compacted_topics_keep_every_latest_value_at_once() -> None:
    specs = {spec.name: spec for spec in topic_specs(Topics(), TopicLayout())}
    for name in ("models", "trainer-state"):
        assert specs[name].topic_configs["min.compaction.lag.ms"] == "0"


def test_topic_specs_do_not_share_config_dicts() -> None:
    specs = topic_specs(Topics(), TopicLayout())
    specs[0].topic_configs["retention.ms"] = "1"
    assert specs[2].topic_configs["retention.ms"] == str(WEEK_MS)


# --- BrokerConfig --------------------------------------------------------------------


def test_broker_config_defaults_to_the_project_state_folder() -> None:
    config = BrokerConfig.from_env({})
    assert config.home == PROJECT_ROOT / ".streamscore"
    assert config.cache_dir == PROJECT_ROOT / ".streamscore" / "cache"
    assert config.home == default_home()
    assert (config.port, config.controller_port) == (9092, 9093)
    assert config.bootstrap == "127.0.0.1:9092"


def test_an_installed_package_keeps_its_state_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamscore import broker_config

    monkeypatch.setattr(broker_config, "PROJECT_ROOT", tmp_path / "site-packages")
    monkeypatch.chdir(tmp_path)
    assert BrokerConfig.from_env({}).home == tmp_path / ".streamscore"


def test_the_broker_files_ship_with_the_package() -> None:
    assert "<artifactId>kafka_2.13</artifactId>" in kafka_file("pom.xml")
    assert "{controller_port}" in kafka_file("server.properties.template")
    assert "Configuration:" in kafka_file("log4j2.yaml")


def test_broker_config_follows_its_home_ports_and_cache(tmp_path: Path) -> None:
    config = BrokerConfig.from_env(
        {"STREAMSCORE_HOME": str(tmp_path), "STREAMSCORE_KAFKA_PORT": "19092"}
    )
    assert config.cache_dir == tmp_path / "cache"
    assert config.pid_file == tmp_path / "kafka" / "kafka.pid"
    assert config.log_file == tmp_path / "logs" / "kafka.log"
    assert (config.port, config.controller_port) == (19092, 19093)
    shared = BrokerConfig.from_env(
        {
            "STREAMSCORE_HOME": str(tmp_path),
            "STREAMSCORE_CACHE": str(tmp_path / "shared"),
            "STREAMSCORE_KAFKA_CONTROLLER_PORT": "29093",
        }
    )
    assert shared.lib_dir == tmp_path / "shared" / "kafka-lib"
    assert shared.controller_port == 29093


def test_a_bad_broker_port_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^STREAMSCORE_KAFKA_PORT='ninety': expected an integer"):
        BrokerConfig.from_env({"STREAMSCORE_KAFKA_PORT": "ninety"})


# --- env helpers ---------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "expected"), [(None, "dflt"), ("", "dflt"), ("  ", "dflt")])
def test_env_str_falls_back_to_the_default_when_unset_or_blank(
    raw: str | None, expected: str
) -> None:
    env = {} if raw is None else {"NAME": raw}
    assert env_str(env, "NAME", "dflt") == expected


def test_env_str_strips_the_value() -> None:
    assert env_str({"NAME": "  value \n"}, "NAME", "dflt") == "value"


@pytest.mark.parametrize(
    ("raw", "expected"), [(None, 7), ("", 7), (" 42 ", 42), ("-3", -3), ("1_000", 1000)]
)
def test_env_int_parses_integers(raw: str | None, expected: int) -> None:
    env = {} if raw is None else {"N": raw}
    assert env_int(env, "N", 7) == expected


@pytest.mark.parametrize(
    ("raw", "minimum", "expected"),
    [
        ("1.5", None, "N='1.5': expected an integer"),
        ("ten", None, "N='ten': expected an integer"),
        ("0", 1, "N=0: must be at least 1"),
        ("-1", 0, "N=-1: must be at least 0"),
    ],
)
def test_env_int_errors_name_the_variable(raw: str, minimum: int | None, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        env_int({"N": raw}, "N", 7, minimum=minimum)
    assert str(info.value) == expected


def test_env_int_accepts_the_minimum_itself() -> None:
    assert env_int({"N": "1"}, "N", 7, minimum=1) == 1


@pytest.mark.parametrize(("raw", "expected"), [(None, 0.5), (" 2.25 ", 2.25), ("1e-3", 0.001)])
def test_env_float_parses_numbers(raw: str | None, expected: float) -> None:
    env = {} if raw is None else {"F": raw}
    assert env_float(env, "F", 0.5) == expected


@pytest.mark.parametrize(
    ("raw", "minimum", "expected"),
    [
        ("fast", None, "F='fast': expected a number"),
        ("nan", None, "F='nan': expected a finite number"),
        ("inf", 0.0, "F='inf': expected a finite number"),
        ("-Infinity", None, "F='-Infinity': expected a finite number"),
        ("0.001", 0.01, "F=0.001: must be at least 0.01"),
    ],
)
def test_env_float_errors_name_the_variable(raw: str, minimum: float | None, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        env_float({"F": raw}, "F", 1.0, minimum=minimum)
    assert str(info.value) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        *[(v, True) for v in ("1", "true", "TRUE", "Yes", "on", " on ")],
        *[(v, False) for v in ("0", "false", "False", "no", "OFF")],
    ],
)
def test_env_bool_reads_the_usual_spellings(raw: str, expected: bool) -> None:
    assert env_bool({"B": raw}, "B", not expected) is expected


def test_env_bool_defaults_when_unset_and_refuses_anything_else() -> None:
    assert env_bool({}, "B", True) is True
    assert env_bool({"B": ""}, "B", False) is False
    with pytest.raises(ConfigError, match=r"^B='maybe': expected true or false$"):
        env_bool({"B": "maybe"}, "B", True)


def test_env_choice_accepts_only_its_choices() -> None:
    choices = ("at-least-once", "exactly-once")
    assert env_choice({}, "D", "at-least-once", choices) == "at-least-once"
    assert env_choice({"D": "exactly-once"}, "D", "at-least-once", choices) == "exactly-once"
    with pytest.raises(ConfigError) as info:
        env_choice({"D": "twice"}, "D", "at-least-once", choices)
    assert str(info.value) == "D='twice': expected one of at-least-once, exactly-once"


def test_the_default_bootstrap_follows_the_local_broker_port() -> None:
    assert KafkaSettings.from_env({}).bootstrap_servers == "127.0.0.1:9092"
    moved = KafkaSettings.from_env({"STREAMSCORE_KAFKA_PORT": "39092"})
    assert moved.bootstrap_servers == "127.0.0.1:39092"
    assert (
        moved.bootstrap_servers
        == BrokerConfig.from_env({"STREAMSCORE_KAFKA_PORT": "39092"}).bootstrap
    )
    chosen = KafkaSettings.from_env(
        {"STREAMSCORE_KAFKA_PORT": "39092", "KAFKA_BOOTSTRAP_SERVERS": "kafka:9092"}
    )
    assert chosen.bootstrap_servers == "kafka:9092"
    with pytest.raises(ConfigError, match="STREAMSCORE_KAFKA_PORT"):
        KafkaSettings.from_env({"STREAMSCORE_KAFKA_PORT": "70000"})
