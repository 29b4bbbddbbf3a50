"""Percentiles and rates used by the demo's summary and the benchmarks."""

from __future__ import annotations

import math

import pytest

from core.stats import percentile, rate


def test_nearest_rank_percentiles() -> None:
    values = [15.0, 20.0, 35.0, 40.0, 50.0]
    assert percentile(values, 5) == 15.0
    assert percentile(values, 30) == 20.0
    assert percentile(values, 40) == 20.0
    assert percentile(values, 50) == 35.0
    assert percentile(values, 100) == 50.0
    assert percentile(list(reversed(values)), 50) == 35.0, "order of the input does not matter"


def test_p99_of_a_hundred_values() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 99) == 99.0
    assert percentile(values, 50) == 50.0


def test_edge_cases() -> None:
    assert math.isnan(percentile([], 50))
    assert percentile([7.0], 0) == 7.0
    with pytest.raises(ValueError, match=r"0\.\.100"):
        percentile([1.0], 101)
    assert rate(500, 2.0) == 250.0
    assert math.isnan(rate(5, 0.0))
