"""What the training step keeps between chunks: counts, rows waiting, saved states.

`Rows` gathers the labelled rows of consecutive chunks (fewer, larger fits);
`Work` is what one outcome of the step covers, counted once committed; `Saved`
is a committed publication, the state a rewind goes back to; `TrainerStats` what
has been committed since the start. `until_stopped` runs a call that may wait on
a broker without holding up a stop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from core.shutdown import StopFlag
from trainer.batch import FloatArray
from trainer.models import PrequentialScore
from trainer.pool import ParsedChunk
from trainer.state import Checkpoint

_T = TypeVar("_T")


@dataclass
class TrainerStats:
    """What the trainer has had committed since it started (work redone counts once)."""

    records: int = 0
    labelled: int = 0
    unlabelled: int = 0
    deadletters: int = 0
    versions: int = 0
    transactions: int = 0


@dataclass
class Saved:
    """The state of a publication: what a rewind restores once it is committed."""

    checkpoint: Checkpoint
    scores: dict[str, PrequentialScore]
    parts: int


@dataclass
class Work:
    """What one outcome covers, counted once it is committed."""

    records: int = 0
    labelled: int = 0
    unlabelled: int = 0
    deadletters: int = 0
    versions: int = 0
    saved: Saved | None = None  # set on the outcome that publishes


class Rows:
    """Labelled rows of consecutive chunks waiting to be fitted, by partition.

    With ``by_partition`` the rows of each partition stay in their order, one group
    per partition (forgetting weighs a row by the newer rows of its partition);
    without, every row is in one group in the order read (a window's order).
    """

    def __init__(self, by_partition: bool) -> None:
        self.by_partition = by_partition
        self.parts: dict[int, tuple[list[FloatArray], list[FloatArray]]] = {}
        self.count = 0

    def add(self, partition: int, parsed: ParsedChunk) -> None:
        if parsed.labelled:
            xs, ys = self.parts.setdefault(partition if self.by_partition else 0, ([], []))
            xs.append(parsed.x)
            ys.append(parsed.y)
            self.count += parsed.labelled

    def take(self) -> list[tuple[int, FloatArray, FloatArray]]:
        parts, self.parts, self.count = self.parts, {}, 0
        return [
            (p, x[0], y[0]) if len(x) == 1 else (p, np.concatenate(x), np.concatenate(y))
            for p, (x, y) in parts.items()
        ]


def until_stopped(call: Callable[[], _T], stop: StopFlag) -> _T | None:
    """What ``call`` returns, run on a helper thread; None if the stop flag is set first.

    Reading back at start may wait on a broker that is away: a stop does not wait
    for it (the call goes on alone, and its result is dropped).
    """
    done = threading.Event()
    box: list[_T] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            box.append(call())
        except BaseException as exc:
            failed.append(exc)
        finally:
            done.set()

    threading.Thread(target=run, name="trainer-start", daemon=True).start()
    while not done.wait(0.05):
        if stop.is_set():
            return None
    if failed:
        raise failed[0]
    return box[0]
