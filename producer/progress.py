"""Progress of a run: a bar on a terminal, periodic log lines otherwise."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TextIO

log = logging.getLogger(__name__)

BAR_WIDTH = 30


def _rate(sent: int, elapsed: float) -> float:
    return sent / elapsed if elapsed > 0 else 0.0


def render_bar(sent: int, total: int | None, elapsed: float) -> str:
    """One line of progress: a bar when the total is known, a counter otherwise."""
    rate = _rate(sent, elapsed)
    if not total:
        return f"{sent:,} points sent, {rate:,.0f} points/s, {elapsed:.1f} s"
    share = min(1.0, sent / total)
    filled = int(share * BAR_WIDTH)
    bar = "#" * filled + "." * (BAR_WIDTH - filled)
    left = (total - sent) / rate if rate > 0 else float("inf")
    eta = f"{left:.0f} s left" if left != float("inf") else "--"
    return f"[{bar}] {sent:,}/{total:,} {share:4.0%} {rate:,.0f} points/s {eta}"


class ProgressReporter:
    """Called by the send loop after each chunk; draws at most every ``interval`` seconds.

    With ``tty`` it redraws one line of ``stream`` in place (``finish`` ends the
    line); otherwise it logs a line every ``interval`` seconds.
    """

    def __init__(
        self,
        stream: TextIO,
        *,
        total: int | None,
        tty: bool,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._total = total
        self._tty = tty
        self._interval = interval
        self._clock = clock
        self._next = clock() + interval
        self._drawn = False

    def __call__(self, sent: int, elapsed: float) -> None:
        now = self._clock()
        if now < self._next:
            return
        self._next = now + self._interval
        if self._tty:
            self._stream.write("\r" + render_bar(sent, self._total, elapsed) + "\x1b[K")
            self._stream.flush()
            self._drawn = True
        else:
            log.info("progress: %s", render_bar(sent, self._total, elapsed))

    def finish(self) -> None:
        """End the bar's line so what follows starts on a line of its own."""
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()
            self._drawn = False
