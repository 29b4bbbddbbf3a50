"""Decoding and validating chunks in worker processes, so parsing uses every core.

A `Chunk` (consecutive records of one partition, see `bus.clients.base`) may
still hold the client's encoded record batches (the kafka-python driver's):
``chunk.columns()`` decodes them wherever it is called. Such a chunk is sent to a
worker as it is, a few bytes objects, and decoded and validated there
(`trainer.batch.parse_points`); only the training arrays and the rejected records
come back. A chunk already decoded into columns (the confluent-kafka driver's) is
parsed in the calling thread: sending its values to a worker saved the loop
almost nothing and cost more in all (figures below). `ParsePool.parse` returns
the results in the order of the chunks, as soon as each is ready, so the caller
trains on one chunk while the workers parse the next, and training does not
depend on which worker was fastest.

Measured on 1,000,000 labelled 3-feature points (the trainer in-process against
the local broker, on a shared and busy 2-core machine; CPU µs per point of the
trainer's own process, the workers apart): kafka-python 6.6-7.1 in the loop
alone, 3.5-3.6 with two workers; confluent-kafka, two workers, 3.6-4.2 with its
decoded chunks parsed in the loop, 3.6 with them sent to the workers, which
then cost 2.5 µs a point more in all and ran at 62-108k points/s instead of
162-174k: decoded chunks stay in the loop.

With ``workers=0`` (and always while the stream's dimension is unknown, which the
first labelled point decides) every chunk is parsed in the calling thread. A
worker that dies (killed, out of memory) is not fatal: its chunks, and every
chunk after, are parsed in the calling thread, with a warning.

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
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

import numpy as np

from bus.clients.base import Chunk
from core.errors import BusError
from trainer.batch import FloatArray, parse_points

log = logging.getLogger(__name__)

# (offset, key, value, reason) of a record that goes to the dead-letter topic
Rejected = tuple[int, bytes | None, bytes | None, str]


@dataclass
class ParsedChunk:
    """What a chunk holds for training, and its records to dead-letter with reasons."""

    x: FloatArray
    y: FloatArray
    n_features: int | None
    records: int
    unlabelled: int
    rejected: list[Rejected] = field(default_factory=list)

    @property
    def labelled(self) -> int:
        """Number of labelled points kept for training."""
        return int(self.y.shape[0])


def parse_chunk(
    chunk: Chunk, n_features: int | None, max_abs_x: float, max_abs_y: float
) -> ParsedChunk:
    """Decode and validate one chunk (runs in a worker, or in the caller)."""
    offsets, keys, values = chunk.columns()
    parsed = parse_points(values, n_features, max_abs_x=max_abs_x, max_abs_y=max_abs_y)
    return ParsedChunk(
        x=np.ascontiguousarray(parsed.x),
        y=parsed.y,
        n_features=parsed.n_features,
        records=len(values),
        unlabelled=parsed.unlabelled,
        rejected=[(offsets[i], keys[i], values[i], reason) for i, reason in parsed.rejected],
    )


def parse_alone(
    chunk: Chunk, n_features: int | None, max_abs_x: float, max_abs_y: float
) -> ParsedChunk:
    """``chunk`` parsed value by value: a value the parser fails on is rejected."""
    try:
        offsets, keys, values = chunk.columns()
    except Exception as exc:
        raise BusError(
            f"cannot decode the records of {chunk.topic}[{chunk.partition}] before "
            f"offset {chunk.next_offset} ({type(exc).__name__}: {exc}); the trainer stops"
        ) from exc
    rows: list[FloatArray] = []
    labels: list[FloatArray] = []
    rejected: list[Rejected] = []
    unlabelled = 0
    for offset, key, value in zip(offsets, keys, values, strict=True):
        single = Chunk(chunk.topic, chunk.partition, offset + 1, ([offset], [key], [value]))
        try:
            part = parse_chunk(single, n_features, max_abs_x, max_abs_y)
        except Exception as exc:
            rejected.append((offset, key, value, f"{type(exc).__name__}: {exc}"))
            continue
        n_features = part.n_features
        rows.append(part.x)
        labels.append(part.y)
        unlabelled += part.unlabelled
        rejected += part.rejected
    d = n_features or 0
    return ParsedChunk(
        x=np.concatenate(rows).reshape(-1, d) if rows else np.empty((0, d)),
        y=np.concatenate(labels) if labels else np.empty(0),
        n_features=n_features,
        records=len(values),
        unlabelled=unlabelled,
        rejected=rejected,
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

    def open(self) -> ParsePool:
        """Start the workers now (they take a moment to start), if there are any."""
        if self.workers > 0 and self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_init,
            )
            self._executor.submit(int)
        return self

    def parse(
        self, chunks: Sequence[Chunk], n_features: int | None
    ) -> Iterator[ParsedChunk | Exception]:
        """Each chunk's result, in order, as soon as it is ready (the next ones parse meanwhile).

        While ``n_features`` is unknown chunks are parsed here, one by one, until a
        labelled point decides it; then the still-encoded ones go to the workers all
        at once. A chunk whose parsing raised comes as the exception: the caller
        decides.
        """
        i = 0
        while i < len(chunks) and (self._executor is None or n_features is None):
            result = self._here(chunks[i], n_features)
            if isinstance(result, ParsedChunk):
                n_features = result.n_features
            yield result
            i += 1
        rest = chunks[i:]
        futures = [
            None if isinstance(chunk.payload, tuple) else self._submit(chunk, n_features)
            for chunk in rest
        ]
        for chunk, future in zip(rest, futures, strict=True):
            if future is None:  # decoded already: parsed here while the workers work
                yield self._here(chunk, n_features)
                continue
            try:
                yield future.result()
            except BrokenProcessPool as exc:
                self._broken(exc)
                yield self._here(chunk, n_features)
            except Exception as exc:  # the parsing's own error
                yield exc

    def _here(self, chunk: Chunk, n_features: int | None) -> ParsedChunk | Exception:
        try:
            return parse_chunk(chunk, n_features, *self._limits)
        except Exception as exc:
            return exc

    def _submit(self, chunk: Chunk, n_features: int | None) -> Future[ParsedChunk]:
        executor = self._executor
        if executor is not None:
            try:
                return executor.submit(parse_chunk, chunk, n_features, *self._limits)
            except (BrokenProcessPool, RuntimeError) as exc:
                self._broken(exc)
        future: Future[ParsedChunk] = Future()
        result = self._here(chunk, n_features)
        if isinstance(result, Exception):
            future.set_exception(result)
        else:
            future.set_result(result)
        return future

    def _broken(self, exc: BaseException) -> None:
        if self._executor is None:
            return
        log.warning(
            "a parsing worker process died (%s): parsing in the trainer's own process "
            "from now on; restart the trainer to use workers again",
            exc,
        )
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._executor = None

    def close(self) -> None:
        """Stop the workers (waiting for the chunks they are on)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
