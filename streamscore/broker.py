"""The local Apache Kafka broker: install its jars, start, check and stop it.

The jars come from Maven Central through ``kafka/pom.xml`` into an ignored cache
folder; the broker runs as one KRaft node (broker and controller) on loopback,
with its data, pid file and log under a state folder. Nothing here needs Docker.
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError

from streamscore.env import env_int, env_str
from streamscore.errors import BrokerError
from streamscore.processes import alive, command_line

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
KAFKA_DIR = PROJECT_ROOT / "kafka"
MAIN_CLASS = "kafka.Kafka"


@dataclass(frozen=True)
class BrokerConfig:
    """Where the local broker keeps its jars and state, and the ports it listens on."""

    home: Path = PROJECT_ROOT / ".streamscore"
    cache_dir: Path = PROJECT_ROOT / ".streamscore" / "cache"
    host: str = "127.0.0.1"
    port: int = 9092
    controller_port: int = 9093
    heap: str = "768m"
    start_timeout_s: float = 90.0
    stop_timeout_s: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BrokerConfig:
        """Read ``STREAMSCORE_HOME``, ``STREAMSCORE_KAFKA_PORT`` and friends.

        The jar cache defaults to ``<home>/cache``; ``STREAMSCORE_CACHE`` lets brokers
        with other homes share one.
        """
        env = os.environ if env is None else env
        port = env_int(env, "STREAMSCORE_KAFKA_PORT", 9092, minimum=1)
        home = Path(env_str(env, "STREAMSCORE_HOME", str(cls.home)))
        return cls(
            home=home,
            cache_dir=Path(env_str(env, "STREAMSCORE_CACHE", str(home / "cache"))),
            port=port,
            controller_port=env_int(env, "STREAMSCORE_KAFKA_CONTROLLER_PORT", port + 1, minimum=1),
            heap=env_str(env, "STREAMSCORE_KAFKA_HEAP", cls.heap),
        )

    @property
    def bootstrap(self) -> str:
        """The address clients connect to."""
        return f"{self.host}:{self.port}"

    @property
    def lib_dir(self) -> Path:
        """The jar cache (brokers with other homes can share it)."""
        return self.cache_dir / "kafka-lib"

    @property
    def state_dir(self) -> Path:
        """This broker's data, config, pid file and log."""
        return self.home / "kafka"

    @property
    def data_dir(self) -> Path:
        """The broker's log.dirs."""
        return self.state_dir / "data"

    @property
    def pid_file(self) -> Path:
        """The running broker's process id."""
        return self.state_dir / "kafka.pid"

    @property
    def log_file(self) -> Path:
        """Where the broker's output goes."""
        return self.home / "logs" / "kafka.log"

    @property
    def properties_file(self) -> Path:
        """The generated server.properties."""
        return self.state_dir / "server.properties"


@dataclass(frozen=True)
class BrokerStatus:
    """What the local broker is doing right now."""

    state: str  # "up", "starting", "stopped"
    pid: int | None
    bootstrap: str
    log_file: Path

    def describe(self) -> str:
        """One line for a person."""
        if self.state == "up":
            return f"kafka is up at {self.bootstrap} (pid {self.pid}); log: {self.log_file}"
        if self.state == "starting":
            return f"kafka is starting (pid {self.pid}), not answering yet; log: {self.log_file}"
        return "kafka is stopped"


class LocalBroker:
    """Drives one local broker described by a BrokerConfig."""

    def __init__(self, config: BrokerConfig) -> None:
        self.config = config

    # --- install ---------------------------------------------------------------

    def install(self) -> Path:
        """Resolve the broker's jars into the cache (once); return the jar folder."""
        lib = self.config.lib_dir
        if (lib / ".complete").exists():
            return lib
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError("Maven (mvn) is not on PATH; it is needed once to fetch Kafka's jars")
        lib.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="kafka-lib-", dir=lib.parent))
        log.info("fetching Kafka jars with Maven into %s", lib)
        result = subprocess.run(
            [
                mvn,
                "-q",
                "-B",
                "-f",
                str(KAFKA_DIR / "pom.xml"),
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={staging}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
            shutil.rmtree(staging, ignore_errors=True)
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
            raise BrokerError(
                f"Maven could not fetch Kafka's jars (exit {result.returncode}):\n{tail}"
            )
        (staging / ".complete").touch()
        shutil.rmtree(lib, ignore_errors=True)
        staging.rename(lib)
        return lib

    # --- status ------------------------------------------------------------------

    def status(self) -> BrokerStatus:
        """Up (answering), starting (process alive, port closed) or stopped."""
        pid = self._live_pid()
        if pid is None:
            return BrokerStatus("stopped", None, self.config.bootstrap, self.config.log_file)
        state = "up" if _port_open(self.config.host, self.config.port) else "starting"
        return BrokerStatus(state, pid, self.config.bootstrap, self.config.log_file)

    def _live_pid(self) -> int | None:
        """The broker's pid if its process is alive; a stale pid file is removed."""
        try:
            pid = int(self.config.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        if _is_our_broker(pid, self.config.properties_file):
            return pid
        log.info("removing stale pid file %s (pid %d is not running)", self.config.pid_file, pid)
        self.config.pid_file.unlink(missing_ok=True)
        return None

    # --- up / down -----------------------------------------------------------------

    def up(self) -> BrokerStatus:
        """Start the broker and wait until it answers; a no-op when it is already up."""
        current = self.status()
        if current.state == "up":
            return current
        if current.state == "starting":
            return self._wait_until_up(current.pid)
        for port in (self.config.port, self.config.controller_port):
            if _port_open(self.config.host, port):
                raise BrokerError(
                    f"port {port} on {self.config.host} is taken by another process; stop it or "
                    "choose other ports with STREAMSCORE_KAFKA_PORT / "
                    "STREAMSCORE_KAFKA_CONTROLLER_PORT"
                )
        java = _java()
        lib = self.install()
        self._write_properties()
        classpath = f"{lib}/*"
        if not (self.config.data_dir / "meta.properties").exists():
            self._format(java, classpath)
        self.config.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.config.log_file.open("ab") as out:
            process = subprocess.Popen(
                [
                    java,
                    f"-Xmx{self.config.heap}",
                    "-Xms128m",
                    "-XX:+UseG1GC",
                    "-XX:MaxGCPauseMillis=20",
                    "-Djava.awt.headless=true",
                    f"-Dlog4j2.configurationFile={KAFKA_DIR / 'log4j2.yaml'}",
                    "-cp",
                    classpath,
                    MAIN_CLASS,
                    str(self.config.properties_file),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.config.pid_file.write_text(f"{process.pid}\n")
        return self._wait_until_up(process.pid, process)

    def down(self) -> bool:
        """Stop the broker (SIGTERM, then SIGKILL after the timeout); False if it was not up."""
        pid = self._live_pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.config.stop_timeout_s
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if alive(pid):
            log.warning(
                "kafka (pid %d) did not stop in %.0fs; killing it", pid, self.config.stop_timeout_s
            )
            os.kill(pid, signal.SIGKILL)
            while alive(pid):
                time.sleep(0.05)
        self.config.pid_file.unlink(missing_ok=True)
        return True

    def _wait_until_up(
        self, pid: int | None, process: subprocess.Popen[bytes] | None = None
    ) -> BrokerStatus:
        deadline = time.monotonic() + self.config.start_timeout_s
        while time.monotonic() < deadline:
            code = process.poll() if process is not None else (None if pid and alive(pid) else 1)
            if code is not None:
                self.config.pid_file.unlink(missing_ok=True)
                raise BrokerError(
                    f"kafka exited during start (code {code}); see {self.config.log_file}:\n"
                    + _tail(self.config.log_file)
                )
            if _port_open(self.config.host, self.config.port) and _answers(self.config.bootstrap):
                return self.status()
            time.sleep(0.2)
        raise BrokerError(
            f"kafka did not answer on {self.config.bootstrap} within "
            f"{self.config.start_timeout_s:.0f}s; see {self.config.log_file}"
        )

    def _write_properties(self) -> None:
        template = (KAFKA_DIR / "server.properties.template").read_text()
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        self.config.properties_file.write_text(
            template.format(
                host=self.config.host,
                port=self.config.port,
                controller_port=self.config.controller_port,
                data_dir=self.config.data_dir,
            )
        )

    def _format(self, java: str, classpath: str) -> None:
        """Format the KRaft storage once, with a fresh cluster id."""
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            [
                java,
                "-cp",
                classpath,
                f"-Dlog4j2.configurationFile={KAFKA_DIR / 'log4j2.yaml'}",
                "kafka.tools.StorageTool",
                "format",
                "--ignore-formatted",
                "-t",
                _cluster_id(),
                "-c",
                str(self.config.properties_file),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise BrokerError(f"formatting kafka's storage failed:\n{result.stdout}{result.stderr}")


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise BrokerError("Java 17 or newer is needed to run Kafka; none found (JAVA_HOME, PATH)")
    return java


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _answers(bootstrap: str) -> bool:
    """True once the broker answers a metadata request with itself as a live broker."""
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    except KafkaError:
        return False
    try:
        return bool(admin.describe_cluster().get("brokers"))
    except KafkaError:
        return False
    finally:
        admin.close()


def _is_our_broker(pid: int, properties_file: Path) -> bool:
    if not alive(pid):
        return False
    args = command_line(pid)
    if args is None:
        return True  # no /proc: trust the pid file
    return MAIN_CLASS.encode() in args and str(properties_file).encode() in args


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
