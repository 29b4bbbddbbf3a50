"""``streamscore up``, ``down`` and ``status``: the command side of the background services.

Each entry point sets up logging, runs one action of ``streamscore.services`` on
the environment and turns an error into a message and exit status 1.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping

from core.errors import StreamscoreError
from core.logs import configure_logging


def _run(action: str, run: Callable[[Mapping[str, str]], int]) -> int:
    configure_logging("streamscore", os.environ.get("STREAMSCORE_LOG_LEVEL", "WARNING"))
    try:
        return run(dict(os.environ))
    except StreamscoreError as exc:
        print(f"streamscore {action}: {exc}", file=sys.stderr)
        return 1


def up(argv: list[str]) -> int:
    """Start the local broker (unless KAFKA_BOOTSTRAP_SERVERS is set), topics and services."""
    from streamscore import services

    return _run("up", services.up)


def down(argv: list[str]) -> int:
    """Stop what ``up`` started."""
    from streamscore import services

    return _run("down", services.down)


def status(argv: list[str]) -> int:
    """Print the broker, services, topics and lag; 0 when everything is up."""
    from streamscore import services

    return _run("status", services.status)
