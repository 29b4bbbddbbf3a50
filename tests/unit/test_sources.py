"""The producer's sources: the dummy function, CSV and JSON-lines files."""

from __future__ import annotations

import gzip
from itertools import combinations_with_replacement, islice
from pathlib import Path

import numpy as np
import pytest

from bus.messages import Point
from core.errors import ConfigError
from producer.sources import (
    BadRows,
    CsvSource,
    DummySource,
    JsonLinesSource,
    KeyedPoint,
    Target,
    drop_labels,
    file_format,
    open_file_source,
)

DATA = Path(__file__).parent.parent / "data"


def take(source: DummySource, n: int) -> list[Point]:
    return list(islice(source, n))


def arrays(points: list[Point]) -> tuple[np.ndarray, np.ndarray]:
    X = np.array([p.x for p in points])
    y = np.array([p.y for p in points], dtype=float)
    return X, y


def r2_of_fit(X: np.ndarray, y: np.ndarray, degree: int) -> float:
    """R2 of least squares on every monomial of X up to ``degree`` (in-sample)."""
    columns = [np.ones(len(X))]
    for k in range(1, degree + 1):
        for combo in combinations_with_replacement(range(X.shape[1]), k):
            columns.append(np.prod(X[:, list(combo)], axis=1))
    A = np.column_stack(columns)
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    residual = y - A @ coef
    return float(1.0 - residual.var() / y.var())


# --- the dummy source ---------------------------------------------------------------


def test_dummy_is_deterministic_for_a_seed() -> None:
    first = take(DummySource("cubic", 3, seed=7, unlabelled=0.3), 3000)
    again = take(DummySource("cubic", 3, seed=7, unlabelled=0.3), 3000)
    other = take(DummySource("cubic", 3, seed=8, unlabelled=0.3), 3000)
    assert first == again
    assert [p.x for p in first] != [p.x for p in other]


def test_dummy_iterating_again_gives_the_same_points() -> None:
    source = DummySource("linear", 2, seed=1)
    assert take(source, 1500) == take(source, 1500)


def test_dummy_features_do_not_depend_on_noise_or_label_share() -> None:
    plain = take(DummySource("cubic", 3, seed=3, noise=0.0), 2000)
    other = take(DummySource("cubic", 3, seed=3, noise=2.0, unlabelled=0.5), 2000)
    assert [p.x for p in plain] == [p.x for p in other]


def test_dummy_ids_count_up_with_the_prefix() -> None:
    points = take(DummySource(id_prefix="run7-p-", start=15), 3)
    assert [p.id for p in points] == ["run7-p-000015", "run7-p-000016", "run7-p-000017"]
    assert all(p.ts is None for p in points)
    ids = [p.id for p in take(DummySource(), 5000)]
    assert len(set(ids)) == 5000
    assert ids[17] == "p-000017"


def test_dummy_shape_and_range() -> None:
    points = take(DummySource("quadratic", 5), 4000)
    X, _ = arrays(points)
    assert X.shape == (4000, 5)
    assert X.min() >= -2.0 and X.max() <= 2.0
    assert X.min() < -1.9 and X.max() > 1.9  # spread over the whole range
    assert all(type(v) is float for v in points[0].x)
    assert type(points[0].y) is float


@pytest.mark.parametrize("noise", [0.1, 0.5, 2.0])
def test_dummy_noise_level_is_as_asked(noise: float) -> None:
    source = DummySource("cubic", 3, noise=noise, seed=11)
    points = take(source, 20_000)
    X, y = arrays(points)
    residual = y - source.target.batch(X)
    assert abs(residual.std() - noise) < 0.03 * noise
    assert abs(residual.mean()) < 0.05 * noise


def test_dummy_without_noise_lies_on_the_function() -> None:
    source = DummySource("cubic", 4, noise=0.0)
    for point in take(source, 50):
        assert point.y == pytest.approx(source.target(point.x), abs=1e-9)


@pytest.mark.parametrize("share", [0.0, 0.25, 0.7, 1.0])
def test_dummy_unlabelled_share_is_as_asked(share: float) -> None:
    points = take(DummySource(unlabelled=share, seed=5), 20_000)
    unlabelled = sum(p.y is None for p in points) / len(points)
    assert abs(unlabelled - share) < 0.02
    if share in (0.0, 1.0):
        assert unlabelled == share


@pytest.mark.parametrize("drift_after", [1000, 1500, 3000])
def test_drift_changes_the_function_after_n_points(drift_after: int) -> None:
    source = DummySource("cubic", 3, noise=0.1, drift_after=drift_after, seed=2)
    points = take(source, drift_after + 2000)
    X, y = arrays(points)
    before = y[:drift_after] - source.target.batch(X[:drift_after])
    after = y[drift_after:] - source.drifted_target.batch(X[drift_after:])
    assert np.abs(before).max() < 0.6 and np.abs(after).max() < 0.6  # 6 sigma of the noise
    # after the drift the old function is far off
    stale = y[drift_after:] - source.target.batch(X[drift_after:])
    assert np.sqrt(np.mean(stale**2)) > 5.0
    assert source.target_at(drift_after - 1) is source.target
    assert source.target_at(drift_after) is source.drifted_target


def test_drift_breaks_a_model_fitted_before_it() -> None:
    source = DummySource("linear", 2, noise=0.1, drift_after=2000)
    X, y = arrays(take(source, 4000))
    A = np.column_stack([np.ones(4000), X])
    coef, *_ = np.linalg.lstsq(A[:2000], y[:2000], rcond=None)
    late = y[2000:] - A[2000:] @ coef
    r2_late = 1.0 - late.var() / y[2000:].var() - (late.mean() ** 2) / y[2000:].var()
    assert r2_of_fit(X[:2000], y[:2000], 1) > 0.99
    assert r2_late < 0.0


def test_cubic_is_fitted_by_a_degree_3_polynomial_not_by_a_line() -> None:
    X, y = arrays(take(DummySource("cubic", 3, noise=0.5, seed=9), 5000))
    assert r2_of_fit(X, y, 3) > 0.9
    assert r2_of_fit(X, y, 1) < 0.85


def test_linear_is_fitted_by_a_line() -> None:
    X, y = arrays(take(DummySource("linear", 3, noise=0.5, seed=9), 5000))
    assert r2_of_fit(X, y, 1) > 0.9


def test_target_one_point_matches_the_batch() -> None:
    target = Target("cubic", 3)
    X = np.array([[0.5, -1.0, 2.0], [0.0, 0.0, 0.0]])
    assert target.batch(X).tolist() == pytest.approx([target(row) for row in X.tolist()])
    assert target([0.0, 0.0, 0.0]) == 0.5  # the intercept
    linear = Target("linear", 2)
    assert linear([1.0, 0.0]) == pytest.approx(1.5)
    assert linear([0.0, 1.0]) == pytest.approx(-1.5)


def test_dummy_refuses_bad_settings() -> None:
    with pytest.raises(ConfigError, match="function 'sine'"):
        DummySource("sine")
    with pytest.raises(ConfigError, match="features"):
        DummySource("linear", 0)
    with pytest.raises(ConfigError, match="unlabelled"):
        DummySource(unlabelled=1.5)
    with pytest.raises(ConfigError, match="noise"):
        DummySource(noise=float("nan"))
    with pytest.raises(ConfigError, match="ids are at most 128"):
        DummySource(id_prefix="x" * 120)


def test_drop_labels_removes_about_the_share_and_keeps_keys() -> None:
    points = [KeyedPoint(f"k-{i}", [float(i)], 1.0, None, "k") for i in range(10_000)]
    out = list(drop_labels(points, 0.3, seed=1))
    assert [p.id for p in out] == [p.id for p in points]
    share = sum(p.y is None for p in out) / len(out)
    assert abs(share - 0.3) < 0.02
    assert all(isinstance(p, KeyedPoint) and p.key == "k" for p in out)
    assert list(drop_labels(points, 0.0)) == points


# --- files --------------------------------------------------------------------------


def test_csv_sample_good_rows_and_bad_rows_with_line_numbers() -> None:
    source = CsvSource(str(DATA / "points_bad_rows.csv"))
    points = list(source)
    assert [p.id for p in points] == ["a-1", "a-3", "a-6", "a-9"]
    assert points[0] == KeyedPoint("a-1", [0.5, 1.5], 2.0, None, "k1")
    assert points[1].y is None  # an empty label: an unlabelled point
    assert points[2] == Point("a-6", [1000.0, -0.25], 4.5)  # an empty key: no key
    assert not isinstance(points[2], KeyedPoint)
    assert source.feature_names == ["x1", "x2"]
    assert source.bad.count == 5
    assert source.bad.lines() == [3, 5, 6, 9, 10]
    reasons = {row.line: row.reason for row in source.bad.first}
    assert "'abc' is not a number" in reasons[3] and "x2" in reasons[3]
    assert reasons[5] == "expected 5 columns, got 3"
    assert "not a finite number" in reasons[6] and "x1" in reasons[6]
    assert "not a finite number" in reasons[9] and "'y'" in reasons[9]
    assert "'' is not a number" in reasons[10]


def test_jsonl_sample_good_lines_and_bad_lines_with_line_numbers() -> None:
    source = JsonLinesSource(str(DATA / "points_bad_rows.jsonl"), id_prefix="f-")
    points = list(source)
    assert points == [
        Point("j-1", [1.0, 2.0], 3.0),
        Point("j-3", [0.5, 0.25]),
        Point("f-000002", [2.0, 4.0], 6.0, 1_700_000_000_000),
    ]
    assert source.bad.lines() == [2, 3, 6, 7, 8, 10]
    reasons = {row.line: row.reason for row in source.bad.first}
    assert "x[1]" in reasons[2]
    assert "not JSON" in reasons[3]
    assert "'x'" in reasons[6] and "missing" in reasons[6]
    assert "NaN" in reasons[7]
    assert "expected a JSON object" in reasons[8]
    assert "'y'" in reasons[10] and "finite" in reasons[10]


def test_csv_columns_label_ts_and_generated_ids(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text(
        "a,b,target,ts,note\n1,2,3,1700000000000,x\n4,5,6,,y\n7,8,9,-5,z\n7,8,9,12.5,z\n"
    )
    source = CsvSource(str(path), columns=["b", "a"], label_column="target", id_prefix="c-")
    assert list(source) == [
        Point("c-000000", [2.0, 1.0], 3.0, 1_700_000_000_000),
        Point("c-000001", [5.0, 4.0], 6.0),
    ]
    assert source.bad.lines() == [4, 5]
    assert "integer" in source.bad.first[1].reason


def test_csv_all_other_columns_are_features(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("f1,y,f2,f3\n1,10,2,3\n")
    assert list(CsvSource(str(path), id_prefix="p-")) == [Point("p-000000", [1.0, 2.0, 3.0], 10.0)]


def test_csv_bad_row_spanning_lines_is_reported_where_it_starts(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text('id,x,y\n"a\nb",1,2\n"c\n\nc",oops,3\nd,4,5\n')
    source = CsvSource(str(path))
    assert [p.id for p in source] == ["a\nb", "d"]
    assert source.bad.lines() == [4]  # the bad row spans lines 4 to 6


def test_csv_header_problems_are_config_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ConfigError, match="empty"):
        list(CsvSource(str(empty)))
    only_special = tmp_path / "special.csv"
    only_special.write_text("id,y\na,1\n")
    with pytest.raises(ConfigError, match="no feature columns"):
        list(CsvSource(str(only_special)))
    with pytest.raises(ConfigError, match="no column"):
        list(CsvSource(str(DATA / "points_bad_rows.csv"), columns=["x1", "x9"]))


def test_bad_rows_keeps_the_first_few_and_counts_all() -> None:
    bad = BadRows("f", keep=3)
    for line in range(10, 20):
        bad.add(line, "bad")
    assert bad.count == 10
    assert bad.lines() == [10, 11, 12]
    assert str(bad.first[0]) == "line 10: bad"


def test_file_format_and_open_file_source(tmp_path: Path) -> None:
    assert file_format("a.csv") == "csv"
    assert file_format("a.jsonl.gz") == "jsonl"
    assert file_format("a.data", "csv") == "csv"
    with pytest.raises(ConfigError, match="--format"):
        file_format("a.data")
    with pytest.raises(ConfigError, match="no such file"):
        open_file_source(str(tmp_path / "missing.csv"))
    packed = tmp_path / "points.jsonl.gz"
    with gzip.open(packed, "wt") as handle:
        handle.write('{"id": "z", "x": [1.5]}\n')
    source = open_file_source(str(packed))
    assert isinstance(source, JsonLinesSource)
    assert list(source) == [Point("z", [1.5])]
    tsv = tmp_path / "points.tsv"
    tsv.write_text("x\ty\n1\t2\n")
    assert list(open_file_source(str(tsv))) == [Point("p-000000", [1.0], 2.0)]
