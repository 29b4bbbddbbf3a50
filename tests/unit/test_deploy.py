"""The deployment files (Dockerfile, docker-compose.yaml, nginx), checked without a Docker engine.

``docker-compose config`` and ``nginx -t`` come from Debian's ``docker-compose`` and
``nginx`` packages (``.ci/run`` installs them); the rest parses the files and compares
them with the code: the commands, the environment variables, the numbers that must
agree between nginx and the gateway.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator, Mapping
from functools import cache
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from streamscore.cli import COMMANDS

COMMAND_NAMES = frozenset(command.name for command in COMMANDS)

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
NGINX_CONF = ROOT / "deploy" / "nginx" / "nginx.conf"
HEALTHCHECK = ROOT / "deploy" / "healthcheck.py"

#: Where the code that reads the environment lives.
CODE_DIRS = ("core", "bus", "streamscore", "producer", "trainer", "scorer", "gateway", "monitor")
ENV_NAME = re.compile(r"(?:STREAMSCORE|KAFKA)_[A-Z0-9_]*[A-Z0-9]")
#: ``${VAR}``, ``${VAR:-default}`` or ``${VAR-default}`` in the compose file.
INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")
#: The services the compose file must run from the streamscore image.
EXPECTED_SERVICES = {"topics", "producer", "trainer", "scorer", "gateway"}
#: The upstream of the nginx config: a compose service name, unknown outside compose.
UPSTREAM_SERVER = "server gateway:8000;"


# --- reading the files --------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    """docker-compose.yaml as written (YAML anchors and merge keys resolved)."""
    spec = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(spec, dict)
    return spec


def interpolate(value: object) -> str:
    """``value`` with every ``${VAR:-default}`` replaced by its default (the shell is ignored)."""
    return INTERPOLATION.sub(lambda m: m.group(2) or "", str(value))


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's environment, defaults interpolated (mapping or ``KEY=VALUE`` list form)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {str(k): interpolate("" if v is None else v) for k, v in env.items()}


def streamscore_services() -> dict[str, dict[str, Any]]:
    """The services that run the streamscore image (built from the Dockerfile)."""
    return {
        name: service
        for name, service in compose()["services"].items()
        if "build" in service or "streamscore" in str(service.get("image", ""))
    }


def command_of(service: Mapping[str, Any]) -> list[str]:
    """A service's command as a list (the image's entrypoint is ``streamscore``)."""
    command = service["command"]
    return command.split() if isinstance(command, str) else [str(part) for part in command]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` of the Dockerfile: continuations joined, comments out."""
    lines = [ln for ln in DOCKERFILE.read_text().splitlines() if not ln.lstrip().startswith("#")]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    result = []
    for line in text.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def final_stage() -> list[tuple[str, str]]:
    """The instructions of the last stage: what the image is."""
    instructions = dockerfile_instructions()
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last_from:]


def nginx_directive(name: str) -> list[str]:
    """Every value of an nginx directive, in order (comments out)."""
    text = re.sub(r"#[^\n]*", "", NGINX_CONF.read_text())
    return re.findall(rf"(?:^|[;{{}}\s]){name}\s+([^;]+);", text)


def nginx_size(text: str) -> int:
    """``1m`` -> 1048576 bytes."""
    units = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
    number, unit = re.fullmatch(r"(\d+)([kmg]?)", text.strip().lower()).groups()  # type: ignore[union-attr]
    return int(number) * units[unit]


def nginx_seconds(text: str) -> float:
    """``30s`` -> 30.0, ``500ms`` -> 0.5, ``1m`` -> 60.0, ``30`` -> 30.0."""
    units = {"ms": 0.001, "": 1, "s": 1, "m": 60, "h": 3600}
    number, unit = re.fullmatch(r"(\d+)(ms|[smh]?)", text.strip()).groups()  # type: ignore[union-attr]
    return int(number) * units[unit]


# --- what the code reads ------------------------------------------------------------


class _AskedFor(Mapping[str, str]):
    """An empty environment that remembers every variable asked for."""

    def __init__(self) -> None:
        self.asked: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def _code_files() -> list[Path]:
    return sorted(path for d in CODE_DIRS for path in (ROOT / d).rglob("*.py"))


@cache
def from_env_classes() -> tuple[type, ...]:
    """Every class of the code with a ``from_env(env)`` classmethod: the configs."""
    found = []
    for path in _code_files():
        tree = ast.parse(path.read_text(), filename=str(path))
        module: ModuleType | None = None
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and any(
                isinstance(item, ast.FunctionDef) and item.name == "from_env" for item in node.body
            ):
                name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
                module = module or importlib.import_module(name)
                found.append(getattr(module, node.name))
    return tuple(found)


@cache
def variables_read_by_code() -> frozenset[str]:
    """The ``STREAMSCORE_*`` / ``KAFKA_*`` variables the code reads.

    Two sources: string literals that are a whole variable name (``env_int(env,
    "STREAMSCORE_PARTITIONS", ...)``, ``os.environ.get("STREAMSCORE_LOG_LEVEL")``), and
    the names every ``from_env`` asks for, which also covers names built from a prefix
    (``STREAMSCORE_PRODUCER_`` + field, ``STREAMSCORE_TOPIC_<NAME>``).
    """
    names: set[str] = set()
    for path in _code_files():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and ENV_NAME.fullmatch(node.value)
            ):
                names.add(node.value)
    for cls in from_env_classes():
        asked = _AskedFor()
        cls.from_env(asked)  # type: ignore[attr-defined]
        names |= {name for name in asked.asked if ENV_NAME.fullmatch(name)}
    return frozenset(names)


def test_the_scan_finds_variables_read_in_each_way() -> None:
    read = variables_read_by_code()
    assert "KAFKA_BOOTSTRAP_SERVERS" in read  # a literal in bus/settings.py
    assert "STREAMSCORE_LOG_LEVEL" in read  # os.environ.get in streamscore/logs.py
    assert "STREAMSCORE_TOPIC_POINTS" in read  # f"STREAMSCORE_TOPIC_{...}" in bus/topics.py
    assert "STREAMSCORE_PRODUCER_RATE" in read  # ENV_PREFIX + field in producer/config.py
    assert "STREAMSCORE_SCORER_TRANSACTIONAL_ID" in read
    assert "STREAMSCORE_PRODUCER_" not in read and "KAFKA_" not in read


# --- (1) docker-compose config ------------------------------------------------------


def test_docker_compose_config_accepts_the_compose_file(tmp_path: Path) -> None:
    """Schema, interpolation, depends_on conditions, named volumes: no engine needed."""
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (.ci/run installs Debian's package)")
    empty_env_file = tmp_path / "empty.env"
    empty_env_file.write_text("")
    result = subprocess.run(
        [binary, "--env-file", str(empty_env_file), "-f", str(COMPOSE), "config"],
        cwd=ROOT,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rendered = yaml.safe_load(result.stdout)
    assert set(rendered["services"]) == set(compose()["services"])
    gateway = rendered["services"]["gateway"]
    assert gateway["environment"]["STREAMSCORE_GATEWAY_BIND"] == "0.0.0.0:8000"
    assert rendered["services"]["scorer"]["deploy"]["replicas"] == 2


# --- (2) every command is a streamscore subcommand ----------------------------------


def test_compose_runs_every_streamscore_service() -> None:
    services = streamscore_services()
    assert set(services) >= EXPECTED_SERVICES
    assert compose()["services"]["kafka"]["image"] == "apache/kafka:4.1.1"
    assert compose()["services"]["nginx"]["image"].startswith("nginx:")
    for name, service in services.items():
        assert command_of(service)[0] in COMMAND_NAMES, f"{name}: {command_of(service)}"


@pytest.mark.parametrize("name", sorted(streamscore_services()))
def test_each_service_command_parses_with_its_environment(name: str, tmp_path: Path) -> None:
    """``streamscore <command> --help`` with the service's environment exits 0."""
    service = streamscore_services()[name]
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), **environment(service)}
    result = subprocess.run(
        [sys.executable, "-m", "streamscore", *command_of(service), "--help"],
        cwd=tmp_path,  # like the image: an empty working directory
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: streamscore {command_of(service)[0]}")


# --- (3) every variable compose sets is one the code reads --------------------------


def test_every_variable_compose_sets_is_read_by_the_code() -> None:
    read = variables_read_by_code()
    unread = sorted(
        f"{name}: {variable}"
        for name, service in streamscore_services().items()
        for variable in environment(service)
        if variable not in read
    )
    assert not unread, f"set in docker-compose.yaml but read by no code: {unread}"


def test_every_variable_the_dockerfile_sets_for_streamscore_is_read_by_the_code() -> None:
    read = variables_read_by_code()
    names = {
        variable
        for word, rest in dockerfile_instructions()
        if word == "ENV"
        for variable in re.findall(r"(\w+)=", rest)
        if ENV_NAME.fullmatch(variable)
    }
    assert names, "the image sets STREAMSCORE_GATEWAY_BIND"
    assert names <= read, f"set in the Dockerfile but read by no code: {sorted(names - read)}"


@pytest.mark.parametrize("name", sorted(streamscore_services()))
def test_each_service_environment_is_accepted_by_every_config(name: str) -> None:
    """The compose defaults are valid values: every ``from_env`` takes them."""
    env = environment(streamscore_services()[name])
    for cls in from_env_classes():
        cls.from_env(env)  # type: ignore[attr-defined]


def test_replicated_scorers_do_not_share_a_transactional_id() -> None:
    """In exactly-once mode one id for all replicas would make them fence each other."""
    for name, service in streamscore_services().items():
        replicas = int(interpolate((service.get("deploy") or {}).get("replicas", 1)))
        if command_of(service)[0] == "scorer":
            assert replicas >= 2, "the deployment runs two scorers"
        if replicas > 1:
            assert not any(v.endswith("_TRANSACTIONAL_ID") for v in environment(service)), name
        if command_of(service)[0] == "trainer":
            assert replicas == 1, "one trainer per group at a time"


def test_dependencies_wait_for_health_and_completion() -> None:
    services = compose()["services"]
    image_has_healthcheck = any(word == "HEALTHCHECK" for word, _ in final_stage())
    for name, service in services.items():
        for target, rule in (service.get("depends_on") or {}).items():
            condition = rule["condition"]
            assert condition in ("service_healthy", "service_completed_successfully"), name
            dependency = services[target]
            if condition == "service_healthy":
                has_check = "healthcheck" in dependency or (
                    target in streamscore_services() and image_has_healthcheck
                )
                assert has_check, f"{name} waits for {target}, which has no health check"
            else:  # a one-shot job: restarting it would never let it complete
                assert dependency.get("restart") == "no", f"{target} must not restart"
    assert services["topics"]["depends_on"] == {"kafka": {"condition": "service_healthy"}}
    assert services["nginx"]["depends_on"] == {"gateway": {"condition": "service_healthy"}}


def test_kafka_keeps_its_data_in_a_named_volume() -> None:
    kafka = compose()["services"]["kafka"]
    env = environment(kafka)
    volume, _, path = kafka["volumes"][0].partition(":")
    assert volume in compose()["volumes"] and path == env["KAFKA_LOG_DIRS"]
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    internal = environment(compose()["services"]["gateway"])["KAFKA_BOOTSTRAP_SERVERS"]
    assert f"PLAINTEXT://{internal}" in env["KAFKA_ADVERTISED_LISTENERS"]


# --- (4) nginx -t -------------------------------------------------------------------


def test_nginx_t_accepts_the_config(tmp_path: Path) -> None:
    """``nginx -t`` on the config, its upstream pointed at 127.0.0.1.

    nginx resolves an upstream's host name when it loads its config, and ``gateway``
    (the compose service) resolves only on the compose network, through Docker's DNS.
    So the test replaces that one line with a literal address: nothing needs to listen
    there for ``nginx -t``. Everything else is tested as written.
    """
    binary = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
    )
    if binary is None:
        pytest.skip("nginx is not installed (.ci/run installs Debian's package)")
    text = NGINX_CONF.read_text()
    assert text.count(UPSTREAM_SERVER) == 1, f"expected one {UPSTREAM_SERVER!r} to replace"
    config = tmp_path / "nginx.conf"
    config.write_text(text.replace(UPSTREAM_SERVER, "server 127.0.0.1:8000;"))
    pid = f"pid {tmp_path / 'nginx.pid'};"
    result = subprocess.run(
        [binary, "-t", "-c", str(config), "-e", str(tmp_path / "error.log"), "-g", pid],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_nginx_and_the_gateway_agree_on_address_body_size_and_timeouts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    gateway = environment(compose()["services"]["gateway"])
    host, port = UPSTREAM_SERVER.removeprefix("server ").rstrip(";").split(":")
    assert host == "gateway" and gateway["STREAMSCORE_GATEWAY_BIND"] == f"0.0.0.0:{port}"
    # The gateway answers a too-large body itself (JSON 413): nginx lets it through.
    (body_limit,) = nginx_directive("client_max_body_size")
    assert nginx_size(body_limit) >= int(gateway["STREAMSCORE_GATEWAY_MAX_BODY_BYTES"])
    # The gateway answers a late reply itself (JSON 504): nginx waits longer.
    (read_timeout,) = nginx_directive("proxy_read_timeout")
    assert nginx_seconds(read_timeout) > int(gateway["STREAMSCORE_GATEWAY_TIMEOUT_MS"]) / 1000
    # nginx drops an idle upstream connection before gunicorn does.
    # gunicorn_conf points prometheus_client at a metrics directory when imported: the
    # variable is put back afterwards, so other tests' gateways keep their own metrics.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    gunicorn = importlib.import_module("gateway.gunicorn_conf")
    upstream_idle = [nginx_seconds(v) for v in nginx_directive("keepalive_timeout")]
    assert min(upstream_idle) < gunicorn.keepalive
    # Headers a proxied app and its logs rely on.
    headers = " ".join(nginx_directive("proxy_set_header"))
    for header in ("X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Request-Id"):
        assert header in headers
    assert "location = /nginx-health" in NGINX_CONF.read_text()


# --- (5) the Dockerfile -------------------------------------------------------------


def test_dockerfile_is_multi_stage_non_root_healthchecked_and_runs_streamscore() -> None:
    instructions = dockerfile_instructions()
    assert sum(word == "FROM" for word, _ in instructions) >= 2
    args = dict(
        rest.partition("=")[::2] for word, rest in instructions if word == "ARG" and "=" in rest
    )
    stage = final_stage()
    base = INTERPOLATION.sub(lambda m: args.get(m.group(1), ""), stage[0][1]).split()[0]
    assert base.startswith("python:3.11-slim")

    users = [rest for word, rest in stage if word == "USER"]
    assert users, "the image runs as a non-root user"
    assert users[-1].split(":")[0] not in ("root", "0")

    checks = [rest for word, rest in stage if word == "HEALTHCHECK"]
    assert checks and "NONE" not in checks[-1].upper()
    assert "/opt/streamscore/healthcheck.py" in checks[-1]

    (entrypoint,) = [json.loads(rest) for word, rest in stage if word == "ENTRYPOINT"]
    (command,) = [json.loads(rest) for word, rest in stage if word == "CMD"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert entrypoint == ["streamscore"] and "streamscore" in scripts
    assert command[0] in COMMAND_NAMES


def test_build_context_has_the_packages_and_nothing_else() -> None:
    """The context ``.dockerignore`` lets through, computed as Docker does (docker-py)."""
    build = pytest.importorskip("docker.utils.build")
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    context = set(build.exclude_paths(str(ROOT), patterns))
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]:
        package = pattern.rstrip("*")
        sources = {str(p.relative_to(ROOT)) for p in (ROOT / package).rglob("*.py")}
        sources = {s for s in sources if "__pycache__" not in s}
        assert sources and sources <= context, f"{package}: {sorted(sources - context)[:5]}"
    assert {"pyproject.toml", "deploy/healthcheck.py"} <= context
    for left_out in (".venv", ".git", ".streamscore", "tests", "bench", "chaos", "docs"):
        assert not any(p == left_out or p.startswith(left_out + "/") for p in context), left_out
    assert not any("__pycache__" in p or p.endswith(".pyc") for p in context)


# --- the image's health check -------------------------------------------------------


@pytest.fixture(scope="module")
def healthcheck() -> ModuleType:
    """deploy/healthcheck.py, loaded as a module."""
    spec = importlib.util.spec_from_file_location("streamscore_healthcheck", HEALTHCHECK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_healthcheck_finds_the_gateway_among_processes(
    healthcheck: ModuleType, tmp_path: Path
) -> None:
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "cmdline").write_bytes(b"/usr/bin/tini\0--\0streamscore\0scorer\0")
    (tmp_path / "self").mkdir()
    assert not healthcheck.serves_gateway(tmp_path)
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "cmdline").write_bytes(
        b"/opt/venv/bin/python\0-m\0gunicorn\0-c\0/x/gateway/gunicorn_conf.py\0"
        b"gateway.app:get_app()\0"
    )
    assert healthcheck.serves_gateway(tmp_path)


def test_healthcheck_reaches_a_wildcard_bind_on_loopback(healthcheck: ModuleType) -> None:
    assert healthcheck.local_address("0.0.0.0:8000") == ("127.0.0.1", 8000)
    assert healthcheck.local_address("[::]:8000") == ("::1", 8000)
    assert healthcheck.local_address("10.1.2.3:9000") == ("10.1.2.3", 9000)
    assert healthcheck.local_address("unix:/run/gw.sock") == ("unix", "/run/gw.sock")


def test_healthcheck_asks_the_live_endpoint(healthcheck: ModuleType) -> None:
    statuses = {"/v2/health/live": 200}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(statuses.get(self.path, 404))
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        bind = f"0.0.0.0:{server.server_address[1]}"
        assert healthcheck.gateway_live(bind)
        statuses["/v2/health/live"] = 503
        assert not healthcheck.gateway_live(bind)
    finally:
        server.shutdown()
        server.server_close()
    assert not healthcheck.gateway_live(bind, timeout=0.5)  # nobody listens any more


def test_the_image_carries_both_clients_and_compose_defaults_to_kafka_python() -> None:
    builder = " ".join(rest for word, rest in dockerfile_instructions() if word == "RUN")
    assert "optional-dependencies" in builder and "'confluent'" in builder, (
        "the image installs the confluent extra next to the dependencies"
    )
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]["confluent"]
    assert any(requirement.startswith("confluent-kafka") for requirement in extra)
    for name in EXPECTED_SERVICES:
        env = environment(compose()["services"][name])
        assert env.get("STREAMSCORE_KAFKA_CLIENT") == "kafka-python", name


# --- monitoring: Prometheus config, Grafana dashboard, service health checks ----------

PROMETHEUS_CONF = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "streamscore.json"
SERIES = re.compile(r"\b(streamscore_[a-z0-9_]+)")


def test_promtool_accepts_the_prometheus_config() -> None:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.skip("promtool is not installed (Debian's prometheus package; .ci/run installs it)")
    result = subprocess.run(
        [binary, "check", "config", str(PROMETHEUS_CONF)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_scrapes_every_service_on_its_port() -> None:
    from core.telemetry import PORTS

    config = yaml.safe_load(PROMETHEUS_CONF.read_text())
    targets = set()
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            targets |= set(static["targets"])
        for dns in job.get("dns_sd_configs", []):
            targets |= {f"{name}:{dns['port']}" for name in dns["names"]}
    expected = {f"{service}:{port}" for service, (_, port) in PORTS.items()} | {"gateway:8000"}
    assert expected <= targets
    services = compose()["services"]
    assert services["prometheus"]["profiles"] == ["monitoring"]
    assert services["grafana"]["profiles"] == ["monitoring"]


def exported_series() -> set[str]:
    """Every series name the services' registries export (built on the in-memory driver)."""
    from prometheus_client import CollectorRegistry

    from bus.clients.memory import MemoryBroker
    from bus.settings import KafkaSettings
    from bus.topics import Topics
    from core.telemetry import TelemetryConfig
    from gateway.metrics import Metrics
    from producer.__main__ import SentPoints, producer_telemetry
    from scorer.config import ScorerConfig
    from scorer.service import Scorer
    from trainer.config import TrainerConfig
    from trainer.trainer import Trainer

    topics = Topics()
    broker = MemoryBroker()
    for name in ("points", "predictions", "requests", "models", "scores", "deadletter"):
        broker.create_topic(getattr(topics, name), 1)
    broker.create_topic(topics.replies, 1)
    broker.create_topic(topics.trainer_state, 1)
    registries: list[CollectorRegistry] = [Metrics().registry]
    registries.append(
        Scorer(broker.driver(), topics, ScorerConfig(), retry_s=1.0)
        .telemetry(TelemetryConfig("scorer", port=0))
        .registry
    )
    trainer = Trainer(broker.driver(), topics, TrainerConfig(), retry_s=1.0)
    registries.append(trainer.telemetry(TelemetryConfig("trainer", port=0))[0])
    sent = SentPoints(lambda sent, elapsed: None, busy=lambda: True)
    registries.append(
        producer_telemetry(KafkaSettings(), topics.points, sent, TelemetryConfig("producer", 0))[0]
    )
    names: set[str] = set()
    for registry in registries:
        for family in registry.collect():
            names.add(family.name)
            if family.type == "counter":
                names.add(family.name + "_total")
            if family.type == "histogram":
                names |= {family.name + s for s in ("_bucket", "_sum", "_count")}
            names |= {sample.name for sample in family.samples}
    return names


def test_every_dashboard_query_names_a_series_the_services_export() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exported = exported_series()
    assert "streamscore_predictions_total" in exported  # the registries were really read
    queried: set[str] = set()
    titles = []
    for panel in dashboard["panels"]:
        titles.append(panel["title"].lower())
        exprs = [target["expr"] for target in panel["targets"]]
        assert exprs, panel["title"]
        for expr in exprs:
            names = set(SERIES.findall(expr))
            assert names, f"{panel['title']}: {expr} names no streamscore series"
            queried |= names
    assert queried <= exported, f"not exported by any service: {sorted(queried - exported)}"
    for view in ("throughput", "lag", "dead letters", "r2", "rmse", "mae", "serving", "latency"):
        assert any(view in title for title in titles), view


def test_healthcheck_asks_a_running_service_on_its_metrics_port(
    healthcheck: ModuleType, tmp_path: Path
) -> None:
    process = tmp_path / "7"
    process.mkdir()
    (process / "cmdline").write_bytes(b"/opt/venv/bin/python\0/opt/venv/bin/streamscore\0scorer\0")
    assert healthcheck.running_service(tmp_path) == "scorer"

    class Probe(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/health/live" else 503)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Probe)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {"STREAMSCORE_SCORER_METRICS_PORT": str(server.server_address[1])}
    try:
        assert healthcheck.service_healthy("scorer", ready=False, env=env) is None
        problem = healthcheck.service_healthy("scorer", ready=True, env=env)
        assert problem is not None and "/health/ready" in problem
    finally:
        server.shutdown()
        server.server_close()
    assert healthcheck.service_healthy("scorer", ready=False, env=env) is not None  # gone
    assert (
        healthcheck.service_healthy(
            "scorer", ready=False, env={**env, **{"STREAMSCORE_SCORER_METRICS_PORT": "0"}}
        )
        is None
    )
