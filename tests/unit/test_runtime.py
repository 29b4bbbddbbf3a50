"""Runtime tuning: BLAS thread limits and garbage-collector pauses, each restored after."""

from __future__ import annotations

import gc

import pytest

from core.runtime import BLAS_THREAD_VARIABLES, gc_paused, gc_threshold, limit_blas_threads


def test_blas_threads_default_to_one_and_keep_the_users_choice() -> None:
    env = {"MKL_NUM_THREADS": "3"}
    limit_blas_threads(env=env)
    assert env == {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "3"}
    assert set(env) == set(BLAS_THREAD_VARIABLES)


def test_gc_is_paused_in_the_block_and_restored_even_on_error() -> None:
    assert gc.isenabled()
    with pytest.raises(RuntimeError), gc_paused():
        assert not gc.isenabled()
        raise RuntimeError("boom")
    assert gc.isenabled()


def test_a_paused_gc_stays_paused_after_the_block() -> None:
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_gc_threshold_is_set_for_the_block_then_restored() -> None:
    before = gc.get_threshold()
    with gc_threshold(before[0] * 10 + 1):
        assert gc.get_threshold() == (before[0] * 10 + 1, *before[1:])
    assert gc.get_threshold() == before
    with gc_threshold(None):
        assert gc.get_threshold() == before
