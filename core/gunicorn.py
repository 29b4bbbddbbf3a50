"""Become gunicorn with settings resolved once: the launcher of the services it serves."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

from core.errors import ConfigError


class HandedOver(Protocol):
    """A resolved config that can be written into one variable for gunicorn's processes."""

    @property
    def bind(self) -> str:
        """HOST:PORT gunicorn listens on."""

    def dumps(self) -> str:
        """The config as the value its ``from_env`` reads back."""


def exec_gunicorn(
    name: str,
    conf: Path,
    app: str,
    variable: str,
    resolve: Callable[[Mapping[str, str]], HandedOver],
) -> int:
    """Resolve the settings, hand them over in ``variable``, and become gunicorn.

    ``resolve`` reads the config from an environment without ``variable`` (a
    previous run's is dropped). A bad setting is exit status 2 with the error on
    stderr; on success this process is replaced and never returns.
    """
    env = {k: v for k, v in os.environ.items() if k != variable}
    try:
        config = resolve(env)
    except ConfigError as exc:
        print(f"streamscore {name}: {exc}", file=sys.stderr)
        return 2
    env[variable] = config.dumps()
    print(f"streamscore {name}: http://{config.bind}/", file=sys.stderr, flush=True)
    command = [sys.executable, "-m", "gunicorn", "-c", str(conf), app]
    try:
        os.execve(command[0], command, env)
    except OSError as exc:
        print(f"streamscore {name}: cannot start gunicorn: {exc}", file=sys.stderr)
        return 1
    return 0  # pragma: no cover - execve does not return
