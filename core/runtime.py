"""Runtime tuning of a streamscore process, in one place: BLAS threads and GC pauses.

Batches here are small matrices, so BLAS threads only fight the service's own
threads (measured: a degree-5 fit takes 2 ms with one thread, up to 250 ms with
the library's default). The cyclic garbage collector finds nothing to free in
the hot loops, which allocate many short-lived lists; pausing it there, or
letting it run less often, is measured in docs/benchmarks.md.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterator, MutableMapping

#: The variables the BLAS libraries numpy may load read their thread count from.
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def limit_blas_threads(threads: int = 1, env: MutableMapping[str, str] | None = None) -> None:
    """Let BLAS use ``threads`` threads unless the user chose otherwise.

    Takes effect only before numpy is first imported (the libraries read the
    variables once), so entry points call it first; child processes inherit it.
    """
    env = os.environ if env is None else env
    for variable in BLAS_THREAD_VARIABLES:
        env.setdefault(variable, str(threads))


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for the block; its state is restored after."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextlib.contextmanager
def gc_threshold(threshold: int | None) -> Iterator[None]:
    """Collect the youngest generation after ``threshold`` allocations for the block.

    ``None`` leaves the collector as it is. The previous thresholds are restored.
    """
    if threshold is None:
        yield
        return
    before = gc.get_threshold()
    gc.set_threshold(threshold, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)
