"""Decoding and validating chunks in worker processes, so parsing uses every core.

Decoding records and JSON costs ~4 µs a point in Python: one core cannot keep up
with 200,000 points a second and also poll and fit. Chunks (still raw record
batches, see `trainer.fetch`) go to a pool of worker processes, which return
the training arrays and the rejected records; the loop applies the results in
the order it polled them, so training does not depend on which worker was fastest.

With ``workers=0`` (and always while the stream's dimension is unknown, which the
first labelled point decides) chunks are parsed in the calling thread.

Workers ignore SIGINT and SIGTERM: the trainer's own process handles a stop and
shuts them down after the last chunk. A worker whose parent dies (SIGKILL) exits
at once: a thread waits on the parent's sentinel. Workers are spawned (not forked
from a process that runs Kafka client threads), so a program that embeds
`trainer.trainer.Trainer` needs the usual ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from kafka.consumer.fetcher import ConsumerRecord

from trainer.batch import FloatArray, parse_points
from trainer.fetch import Chunk

log = logging.getLogger(__name__)


@dataclass
class ParsedChunk:
    """What a chunk holds for training, and its records to dead-letter with reasons."""

    x: FloatArray
    y: FloatArray
    n_features: int | None
    records: int
    unlabelled: int
    deadletters: list[tuple[ConsumerRecord, str]] = field(default_factory=list)

    @property
    def labelled(self) -> int:
        """Number of labelled points kept for training."""
        return int(self.y.shape[0])


def parse_chunk(
    chunk: Chunk, n_features: int | None, max_abs_x: float, max_abs_y: float
) -> ParsedChunk:
    """Decode and validate one chunk (runs in a worker, or in the caller)."""
    values = chunk.values
    parsed = parse_points(values, n_features, max_abs_x=max_abs_x, max_abs_y=max_abs_y)
    return ParsedChunk(
        x=np.ascontiguousarray(parsed.x),
        y=parsed.y,
        n_features=parsed.n_features,
        records=len(values),
        unlabelled=parsed.unlabelled,
        deadletters=[(chunk.record(i), reason) for i, reason in parsed.rejected],
    )


def _worker_init() -> None:
    """Leave stopping to the parent; exit as soon as the parent is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    if parent is not None:  # a worker holds its own queue's pipe: no EOF tells it
        threading.Thread(target=_exit_with, args=(parent.sentinel,), daemon=True).start()


def _exit_with(sentinel: int) -> None:
    multiprocessing.connection.wait([sentinel])
    os._exit(0)


class ParsePool:
    """Parses chunks in ``workers`` processes (0: in the calling thread)."""

    def __init__(self, workers: int, max_abs_x: float, max_abs_y: float) -> None:
        self.workers = workers
        self._limits = (max_abs_x, max_abs_y)
        self._executor: ProcessPoolExecutor | None = None
        if workers > 0:
            self._executor = ProcessPoolExecutor(
                max_workers=workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_init,
            )
            self._executor.submit(int)  # start the workers now, while the trainer starts

    def submit(self, chunk: Chunk, n_features: int | None) -> Future[ParsedChunk]:
        """Start parsing ``chunk``; in the caller while ``n_features`` is unknown."""
        if self._executor is not None and n_features is not None:
            return self._executor.submit(parse_chunk, chunk, n_features, *self._limits)
        future: Future[ParsedChunk] = Future()
        try:
            future.set_result(parse_chunk(chunk, n_features, *self._limits))
        except Exception as exc:
            future.set_exception(exc)
        return future

    def close(self) -> None:
        """Stop the workers (waiting for the chunks they are on)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
