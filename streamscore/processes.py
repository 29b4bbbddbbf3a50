"""Starting and stopping streamscore services as background processes with pid files."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)


class Supervisor:
    """Runs ``streamscore <command>`` processes; pid files in ``run_dir``, logs in ``log_dir``."""

    def __init__(self, run_dir: Path, log_dir: Path, env: Mapping[str, str]) -> None:
        self.run_dir = run_dir
        self.log_dir = log_dir
        self._env = dict(env)

    def log_file(self, name: str) -> Path:
        """Where a service's output goes."""
        return self.log_dir / f"{name}.log"

    def start(self, name: str, args: list[str], **env: str) -> int:
        """Start a service in its own session (a no-op if it runs); return its pid."""
        running = self.pid(name)
        if running is not None:
            return running
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self.log_file(name).open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "streamscore", *args],
                env={**self._env, **env, "PYTHONUNBUFFERED": "1"},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        (self.run_dir / f"{name}.pid").write_text(f"{process.pid}\n")
        log.info("started %s (pid %d), log: %s", name, process.pid, self.log_file(name))
        return process.pid

    def pid(self, name: str) -> int | None:
        """The service's pid while it runs."""
        recorded = self._recorded(name)
        return recorded if recorded is not None and _is_streamscore(recorded) else None

    def _recorded(self, name: str) -> int | None:
        try:
            return int((self.run_dir / f"{name}.pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def names(self) -> list[str]:
        """Every service with a pid file."""
        return sorted(p.stem for p in self.run_dir.glob("*.pid"))

    def exited(self, name: str) -> bool:
        """True when the service has a pid file but its process is gone."""
        return (self.run_dir / f"{name}.pid").exists() and self.pid(name) is None

    def stop(self, name: str, timeout_s: float = 20.0) -> bool:
        """SIGTERM its process group, SIGKILL after ``timeout_s``; False if it was not running.

        A service runs in its own session, so the group holds its children too
        (gunicorn's workers); they are signalled even when the leader already died.
        """
        recorded = self._recorded(name)
        pid = self.pid(name)
        (self.run_dir / f"{name}.pid").unlink(missing_ok=True)
        if pid is None:
            if recorded is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(recorded, signal.SIGTERM)
            return False
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if alive(pid):
            log.warning("%s (pid %d) did not stop in %.0fs; killing it", name, pid, timeout_s)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        return True

    def stop_all(self, order: list[str]) -> list[str]:
        """Stop the services named in ``order`` first, then any other; return those stopped."""
        rest = [name for name in self.names() if name not in order]
        return [name for name in [*order, *rest] if self.stop(name)]


def alive(pid: int) -> bool:
    """True while process ``pid`` runs (a zombie does not; our own exited child is reaped)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return True
    return state != "Z"


def command_line(pid: int) -> list[bytes] | None:
    """The process's arguments, or None where /proc cannot tell."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None


def _is_streamscore(pid: int) -> bool:
    if not alive(pid):
        return False
    args = command_line(pid)
    if not args or not any(args):
        return True  # cannot tell (no /proc, or mid-exec: the gateway execs gunicorn)
    return any(b"streamscore" in arg or b"gunicorn" in arg for arg in args)
