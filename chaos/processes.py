"""The services of a chaos run as child processes: started, killed, restarted, stopped.

Each runs ``streamscore <command>`` in a session of its own, so one signal reaches
it and its children (the trainer's parsing workers) and a Ctrl-C at the terminal
reaches only the harness, which then stops them all.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 20.0
KILL_TIMEOUT_S = 10.0
_ERROR_LINE = re.compile(r" (ERROR|CRITICAL) |Traceback|Error: |error: ")


def streamscore_command() -> list[str]:
    """How to run the ``streamscore`` command with this interpreter's installation."""
    script = Path(sys.executable).parent / "streamscore"
    return [str(script)] if script.exists() else [sys.executable, "-m", "streamscore"]


@dataclass
class Service:
    """One service process and how it ended."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    expected_exit: bool = False
    terminating: bool = False  # SIGTERM sent (a second one means "stop now" to a service)
    exits: list[str] = field(default_factory=list)  # unexpected ones, described

    @property
    def pid(self) -> int | None:
        """The process id while it runs."""
        if self.process is None or self.process.poll() is not None:
            return None
        return self.process.pid


class Services:
    """Starts ``streamscore`` processes with their output in ``log_dir``; stops them all."""

    def __init__(self, log_dir: Path, env: Mapping[str, str]) -> None:
        self.log_dir = log_dir
        self._env = dict(env)
        self._services: dict[str, Service] = {}

    def __getitem__(self, name: str) -> Service:
        return self._services[name]

    def start(self, name: str, args: list[str], **env: str) -> Service:
        """Start ``streamscore <args>`` as ``name`` (again, after a kill or a stop)."""
        service = self._services.get(name)
        if service is None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            service = Service(name, args, {**self._env, **env}, self.log_dir / f"{name}.log")
            self._services[name] = service
        if service.pid is not None:
            return service
        with service.log_path.open("ab") as out:
            service.process = subprocess.Popen(
                [*streamscore_command(), *service.args],
                env={**service.env, "PYTHONUNBUFFERED": "1"},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        service.starts += 1
        service.expected_exit = False
        service.terminating = False
        log.info("started %s (pid %d)", name, service.process.pid)
        return service

    def kill(self, name: str) -> float:
        """SIGKILL the service's whole process group (a crash); the time it was sent."""
        service = self._services[name]
        process = service.process
        if process is None or process.poll() is not None:
            raise RuntimeError(f"{name} is not running; it cannot be killed")
        service.expected_exit = True
        killed_at = time.time()
        _signal_group(process.pid, signal.SIGKILL)
        try:
            process.wait(timeout=KILL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.warning("%s (pid %d) still runs after SIGKILL", name, process.pid)
        return killed_at

    def check(self) -> list[str]:
        """Services that exited without being asked since the last check, described."""
        found = []
        for service in self._services.values():
            process = service.process
            if process is None or service.expected_exit:
                continue
            code = process.poll()
            if code is None:
                continue
            service.expected_exit = True  # reported once
            what = f"{service.name} (exit {code})"
            service.exits.append(what)
            found.append(what)
            log.warning("%s exited by itself; last error: %s", what, last_error(service.log_path))
        return found

    def stop(self, name: str, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM the group, SIGKILL it after ``timeout_s``; the exit code (None: not running)."""
        service = self._services[name]
        process = service.process
        if process is None:
            return None
        if process.poll() is not None:
            _signal_group(process.pid, signal.SIGKILL)  # children left by a dead leader
            return process.returncode
        self._terminate(service)
        try:
            return process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in %.0fs; killing it", name, timeout_s)
            _signal_group(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=KILL_TIMEOUT_S)
            return process.returncode

    def stop_all(self) -> None:
        """Stop every service: all are signalled first, then waited for."""
        for service in self._services.values():
            if service.pid is not None:
                self._terminate(service)
        for service in self._services.values():
            self.stop(service.name)

    @staticmethod
    def _terminate(service: Service) -> None:
        """SIGTERM the service's group, once per start."""
        service.expected_exit = True
        if service.process is not None and not service.terminating:
            service.terminating = True
            _signal_group(service.process.pid, signal.SIGTERM)

    def running(self, name: str) -> bool:
        """True while the service's process runs."""
        service = self._services.get(name)
        return service is not None and service.pid is not None

    def names(self) -> list[str]:
        """Every service started."""
        return list(self._services)


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Ignore SIGINT and SIGTERM while cleaning up, so a second Ctrl-C cannot cut it short."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def last_error(path: Path, limit: int = 300) -> str:
    """The last line of a log that looks like an error (cut to ``limit`` characters)."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    for line in reversed(lines):
        if _ERROR_LINE.search(line):
            return line.strip()[:limit]
    return (lines[-1].strip()[:limit] if lines else "(empty log)") or "(empty log)"


def producer_sent(path: Path) -> int | None:
    """The producer's count of delivered points, from its summary line."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    found = re.findall(r"sent ([\d,]+) points to ", text)
    return int(found[-1].replace(",", "")) if found else None
