"""Pacing of the send loop: a token bucket, and what the loop needs of a stop flag."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["BURST_SECONDS", "Clock", "Pacer", "StopLike", "granted"]

#: A token bucket holds at most this many seconds' worth of points: enough that a
#: scheduling stall of the sending thread does not lose tokens (and rate).
BURST_SECONDS = 0.1
#: Rounding slack of the token bucket (clocks are floats).
_EPSILON = 1e-6

Clock = Callable[[], float]


class StopLike(Protocol):
    """What the loop needs of a stop flag (``core.shutdown.StopFlag``)."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float) -> bool: ...


class Pacer:
    """A token bucket: lets ``rate`` points per second through on average.

    ``grant(n)`` says how many of ``n`` points may go now (and takes them);
    ``delay()`` how long to wait for the next one. The bucket holds at most
    ``burst`` points (default: 100 ms worth, at least one), so after a pause the
    stream does not rush to catch up by more than that. The clock is injected.
    """

    def __init__(self, rate: float, *, clock: Clock = time.monotonic, burst: int = 0) -> None:
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"rate: expected a number of points per second > 0, got {rate}")
        self.rate = rate
        self.burst = burst or max(1, int(rate * BURST_SECONDS))
        self._clock = clock
        self._tokens = 1.0
        self._last = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
        self._last = now

    def grant(self, n: int) -> int:
        """How many of ``n`` points may be sent now; they are taken from the bucket."""
        self._refill()
        allowed = min(n, int(self._tokens + _EPSILON))  # 4.9999999 tokens are 5
        self._tokens -= allowed
        return allowed

    def delay(self) -> float:
        """Seconds until the next point may go (0 if one may go now)."""
        self._refill()
        return max(0.0, (1.0 - self._tokens) / self.rate)


def granted(
    pacer: Pacer | None, want: int, stop: StopLike | None, sleep: Callable[[float], Any]
) -> int:
    """How many of ``want`` points the pacer (if any) lets go now; none: it waited a while."""
    if pacer is None:
        return want
    want = pacer.grant(want)
    if not want:
        wait = pacer.delay()
        if stop is not None:
            stop.wait(wait)
        else:
            sleep(wait)
    return want
