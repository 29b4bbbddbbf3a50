"""Graceful shutdown: SIGTERM and SIGINT set a flag the service loop checks."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

log = logging.getLogger(__name__)


class StopFlag:
    """Set by a signal (or by a caller); loops finish their batch and exit when it is set."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def install(self) -> StopFlag:
        """Route SIGTERM and SIGINT to this flag (call from the main thread)."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        return self

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self._event.is_set():
            raise KeyboardInterrupt  # a second signal: stop now
        log.info(
            "received %s: finishing the current batch, then stopping", signal.Signals(signum).name
        )
        self._event.set()

    def set(self) -> None:
        """Ask the loop to stop."""
        self._event.set()

    def is_set(self) -> bool:
        """True once a stop was asked for."""
        return self._event.is_set()

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds, waking early on stop; True if stopped."""
        return self._event.wait(timeout)
