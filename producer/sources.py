"""Point sources: a dummy function with noise, and CSV / JSON-lines files to replay.

A source is an iterable of ``bus.messages.Point`` (or ``KeyedPoint``, a point that
also carries the record key it wants); it knows nothing of Kafka. File sources skip
bad rows, count them and keep the first few with their line numbers in ``bad``.
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import math
import random
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

import numpy as np
import numpy.typing as npt

from bus.messages import MAX_ID_CHARS, Point, load_object
from core.errors import ConfigError, MessageError

log = logging.getLogger(__name__)

#: The target functions the dummy source can draw points around.
FUNCTIONS = ("linear", "quadratic", "cubic")
#: Features are drawn uniformly from [-X_RANGE, X_RANGE].
X_RANGE = 2.0
#: The dummy source makes its points in blocks of this many.
BLOCK = 1024
#: How many bad rows a ``BadRows`` keeps (all are counted).
KEEP_BAD_ROWS = 20
FORMATS = ("csv", "jsonl")

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class KeyedPoint(Point):
    """A point with the Kafka record key it should be sent with (not part of the value)."""

    key: str | None = None


def format_id(prefix: str, index: int) -> str:
    """The id of the ``index``-th point of a run: ``p-000017`` for prefix ``p-``."""
    return f"{prefix}{index:06d}"


def check_id_prefix(prefix: str) -> str:
    """``prefix`` if ids made from it fit the contract (at most 128 characters)."""
    if len(prefix) > MAX_ID_CHARS - 12:
        raise ConfigError(
            f"id prefix {prefix[:20]!r}... is {len(prefix)} characters; "
            f"ids are at most {MAX_ID_CHARS}, so keep it under {MAX_ID_CHARS - 12}"
        )
    return prefix


# --- bad rows -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BadRow:
    """A row of a file that was skipped: where it is and what is wrong with it."""

    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass
class BadRows:
    """Counts the bad rows of a file and keeps the first ``keep`` of them."""

    source: str = "input"
    keep: int = KEEP_BAD_ROWS
    count: int = 0
    first: list[BadRow] = field(default_factory=list)

    def add(self, line: int, reason: str) -> None:
        """Record that ``line`` was skipped because of ``reason``."""
        self.count += 1
        if len(self.first) < self.keep:
            self.first.append(BadRow(line, reason))
            log.warning("%s: skipped line %d: %s", self.source, line, reason)
        elif self.count == self.keep + 1:
            log.warning("%s: more bad rows; only the count is kept from now on", self.source)

    def lines(self) -> list[int]:
        """Line numbers of the bad rows kept."""
        return [row.line for row in self.first]


class Source(Protocol):
    """What the producer needs of a source: points, and the bad rows it skipped."""

    bad: BadRows

    def __iter__(self) -> Iterator[Point]: ...


# --- the dummy source ---------------------------------------------------------------


class Target:
    """A known function of the features, ``y = f(x)``, the dummy source draws points around.

    ``linear``: ``b + sum_j a_j x_j``. ``quadratic`` and ``cubic`` add ``x_j**2``
    (and ``x_j**3``) terms per feature and, with two or more features, an
    interaction ``c x_0 x_1``; every term is a monomial of degree <= 3, so a
    degree-3 polynomial regressor fits ``cubic`` exactly (up to the noise), while a
    straight line explains only about 78% of its variance. ``drifted`` gives
    another function of the same kind (signs flipped, slopes scaled by 1.5,
    intercept moved): what the data looks like after a drift.
    """

    def __init__(self, kind: str, n_features: int, *, drifted: bool = False) -> None:
        if kind not in FUNCTIONS:
            raise ConfigError(f"function {kind!r}: expected one of {', '.join(FUNCTIONS)}")
        if n_features < 1:
            raise ConfigError(f"features: expected at least 1, got {n_features}")
        self.kind = kind
        self.n_features = n_features
        self.drifted = drifted
        self.degree = FUNCTIONS.index(kind) + 1
        sign, scale = (-1.0, 1.5) if drifted else (1.0, 1.0)
        # Every feature matters, with its own weight; the square terms are large enough
        # that a straight line fits ``quadratic`` and ``cubic`` visibly worse.
        weights = (1.0, 1.0, 0.5)
        j = np.arange(n_features)
        self.coef = np.array(
            [
                sign * scale * weights[k] * (1.0 + j % 3) * (-1.0) ** (j + k)
                for k in range(self.degree)
            ]
        )
        self.intercept = -2.0 if drifted else 0.5
        self.interaction = 0.0
        if self.degree > 1 and n_features > 1:
            self.interaction = -0.75 if drifted else 0.5

    def batch(self, X: FloatArray) -> FloatArray:
        """``f`` of each row of ``X`` (rows of ``n_features`` numbers)."""
        y = np.full(X.shape[0], self.intercept)
        power = np.ones_like(X)
        for k in range(self.degree):
            power = power * X
            y += power @ self.coef[k]
        if self.interaction:
            y += self.interaction * X[:, 0] * X[:, 1]
        return y

    def __call__(self, x: Sequence[float]) -> float:
        """``f(x)`` for one point."""
        return float(self.batch(np.asarray([x], dtype=np.float64))[0])


def make_target(kind: str, n_features: int, *, drifted: bool = False) -> Target:
    """The known function ``kind`` of ``n_features`` features (see ``Target``)."""
    return Target(kind, n_features, drifted=drifted)


class DummySource:
    """Points scattered around a known function: ``y = f(x) + N(0, noise**2)``.

    Features are uniform in [-2, 2]. Deterministic for a ``seed``: features, noise
    and which points are unlabelled come from three random streams of their own,
    so changing ``noise`` or ``unlabelled`` does not change the features. After
    ``drift_after`` points (if given) ``f`` becomes the drifted function. Ids are
    ``<id_prefix><index:06d>`` counting from ``start``. The points are made in
    numpy blocks; each iteration starts again from the same points.
    """

    def __init__(
        self,
        function: str = "cubic",
        n_features: int = 3,
        *,
        noise: float = 0.1,
        seed: int = 42,
        unlabelled: float = 0.0,
        drift_after: int | None = None,
        id_prefix: str = "p-",
        start: int = 0,
    ) -> None:
        if not (math.isfinite(noise) and noise >= 0):
            raise ConfigError(f"noise: expected a finite number >= 0, got {noise}")
        if not 0.0 <= unlabelled <= 1.0:
            raise ConfigError(f"unlabelled: expected a share between 0 and 1, got {unlabelled}")
        if drift_after is not None and drift_after < 0:
            raise ConfigError(f"drift_after: expected a count >= 0, got {drift_after}")
        if seed < 0:
            raise ConfigError(f"seed: expected an integer >= 0, got {seed}")
        self.function = function
        self.n_features = n_features
        self.noise = noise
        self.seed = seed
        self.unlabelled = unlabelled
        self.drift_after = drift_after
        self.id_prefix = check_id_prefix(id_prefix)
        self.start = start
        self.target = Target(function, n_features)
        self.drifted_target = Target(function, n_features, drifted=True)
        self.bad = BadRows("dummy")  # a dummy source has none; here for the Source protocol

    def target_at(self, index: int) -> Target:
        """The function the ``index``-th point of an iteration (from 0) is drawn around."""
        drifted = self.drift_after is not None and index >= self.drift_after
        return self.drifted_target if drifted else self.target

    def _labels(self, X: FloatArray, done: int) -> FloatArray:
        """The noiseless labels of a block whose first point is number ``done``."""
        drift = self.drift_after
        if drift is None or done + len(X) <= drift:
            return self.target.batch(X)
        if done >= drift:
            return self.drifted_target.batch(X)
        cut = drift - done
        return np.concatenate([self.target.batch(X[:cut]), self.drifted_target.batch(X[cut:])])

    def __iter__(self) -> Iterator[Point]:
        features = np.random.default_rng([self.seed, 0])
        noise_rng = np.random.default_rng([self.seed, 1])
        label_rng = np.random.default_rng([self.seed, 2])
        n, prefix = self.n_features, self.id_prefix
        index = self.start
        done = 0
        while True:
            X = features.uniform(-X_RANGE, X_RANGE, (BLOCK, n))
            y = self._labels(X, done)
            if self.noise:
                y += self.noise * noise_rng.standard_normal(BLOCK)
            ys: list[float | None] = y.tolist()
            if self.unlabelled:
                for j in np.flatnonzero(label_rng.random(BLOCK) < self.unlabelled).tolist():
                    ys[j] = None
            for x, label in zip(X.tolist(), ys, strict=True):
                yield Point(f"{prefix}{index:06d}", x, label)
                index += 1
            done += BLOCK


def drop_labels(points: Iterable[Point], share: float, seed: int = 0) -> Iterator[Point]:
    """``points`` with the label removed from about ``share`` of them (deterministic)."""
    if not 0.0 <= share <= 1.0:
        raise ConfigError(f"unlabelled: expected a share between 0 and 1, got {share}")
    if share == 0.0:
        yield from points
        return
    draw = random.Random(f"{seed}:labels").random
    for point in points:
        if point.y is not None and draw() < share:
            key = point.key if isinstance(point, KeyedPoint) else None
            yield KeyedPoint(point.id, point.x, None, point.ts, key)
        else:
            yield point


# --- file sources -------------------------------------------------------------------


def _display_name(path: str) -> str:
    return "standard input" if path == "-" else path


def _open_text(path: str) -> IO[str]:
    """Open ``path`` for reading text (``-`` is standard input, ``.gz`` is decompressed)."""
    if path == "-":
        return io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", newline="")
    try:
        if path.endswith(".gz"):
            return gzip.open(path, "rt", encoding="utf-8", newline="")
        return open(path, encoding="utf-8", newline="")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _number(text: str, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        shown = text if len(text) <= 30 else text[:27] + "..."
        raise MessageError(f"column {column!r}: {shown!r} is not a number") from None
    if not math.isfinite(value):
        raise MessageError(f"column {column!r}: {text.strip()!r} is not a finite number")
    return value


def _integer(text: str, column: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise MessageError(f"column {column!r}: {text!r} is not an integer") from None
    if value < 0:
        raise MessageError(f"column {column!r}: expected epoch milliseconds >= 0, got {value}")
    return value


class CsvSource:
    """Rows of a CSV file with a header, as points.

    Columns named ``id``, ``y`` (or ``label_column``), ``ts`` and ``key`` are used
    as such when present; every other column is a feature, unless ``columns``
    names the feature columns. An empty label is an unlabelled point; a missing
    id becomes ``<id_prefix><index:06d>``. Rows that cannot be read (wrong column
    count, a bad or non-finite number, an empty feature, ...) are skipped and
    recorded in ``bad`` with their line number (the header is line 1).
    """

    def __init__(
        self,
        path: str,
        *,
        columns: Sequence[str] | None = None,
        label_column: str = "y",
        delimiter: str = ",",
        id_prefix: str = "p-",
    ) -> None:
        self.path = path
        self.columns = list(columns) if columns else None
        self.label_column = label_column
        self.delimiter = delimiter
        self.id_prefix = check_id_prefix(id_prefix)
        self.bad = BadRows(_display_name(path))
        self.feature_names: list[str] = []

    def _layout(self, header: list[str]) -> tuple[list[int], dict[str, int]]:
        """The feature column indexes, and the index of each special column present."""
        names = [name.strip() for name in header]
        if len(set(names)) != len(names):
            repeated = sorted({n for n in names if names.count(n) > 1})
            raise ConfigError(f"{self.path}: header repeats column(s) {', '.join(repeated)}")
        special = {"id": "id", "y": self.label_column, "ts": "ts", "key": "key"}
        found = {role: names.index(name) for role, name in special.items() if name in names}
        if self.columns is not None:
            missing = [c for c in self.columns if c not in names]
            if missing:
                raise ConfigError(
                    f"{self.path}: no column(s) {', '.join(missing)} in the header "
                    f"({', '.join(names)})"
                )
            features = [names.index(c) for c in self.columns]
        else:
            taken = set(found.values())
            features = [i for i in range(len(names)) if i not in taken]
        if not features:
            raise ConfigError(f"{self.path}: no feature columns in the header ({', '.join(names)})")
        self.feature_names = [names[i] for i in features]
        return features, found

    def __iter__(self) -> Iterator[Point]:
        with _open_text(self.path) as handle:
            reader = csv.reader(handle, delimiter=self.delimiter)
            try:
                header = next(reader)
            except StopIteration:
                raise ConfigError(f"{self.path}: the file is empty (expected a header)") from None
            except csv.Error as exc:
                raise ConfigError(f"{self.path}: cannot read the header: {exc}") from exc
            features, found = self._layout(header)
            names = [header[i].strip() for i in features]
            width = len(header)
            id_at, y_at, ts_at, key_at = (found.get(r) for r in ("id", "y", "ts", "key"))
            y_name = self.label_column
            index = 0
            while True:
                line = reader.line_num + 1  # where the next row starts
                try:
                    row = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:
                    self.bad.add(line, f"not CSV: {exc}")
                    continue
                if not row:
                    continue  # a blank line
                if len(row) != width:
                    self.bad.add(line, f"expected {width} columns, got {len(row)}")
                    continue
                try:
                    x = [_number(row[i], n) for i, n in zip(features, names, strict=True)]
                    label = row[y_at].strip() if y_at is not None else ""
                    y = _number(label, y_name) if label else None
                    stamp = row[ts_at].strip() if ts_at is not None else ""
                    ts = _integer(stamp, "ts") if stamp else None
                except MessageError as exc:
                    self.bad.add(line, str(exc))
                    continue
                given = row[id_at].strip() if id_at is not None else ""
                if len(given) > MAX_ID_CHARS:
                    self.bad.add(line, f"column 'id': longer than {MAX_ID_CHARS} characters")
                    continue
                ident = given or format_id(self.id_prefix, index)
                key = (row[key_at] or None) if key_at is not None else None
                index += 1
                if key is None:
                    yield Point(ident, x, y, ts)
                else:
                    yield KeyedPoint(ident, x, y, ts, key)


class JsonLinesSource:
    """Lines of a JSON-lines file, each a ``points`` object of the contract.

    Each line is validated like a message on the bus (``Point.from_json``); a line
    without an ``id`` gets ``<id_prefix><index:06d>``. Blank lines are ignored; bad
    lines (not JSON, not an object, no ``x``, a non-finite number, ...) are skipped
    and recorded in ``bad`` with their line number.
    """

    def __init__(self, path: str, *, id_prefix: str = "p-") -> None:
        self.path = path
        self.id_prefix = check_id_prefix(id_prefix)
        self.bad = BadRows(_display_name(path))

    def __iter__(self) -> Iterator[Point]:
        index = 0
        with _open_text(self.path) as handle:
            for line, text in enumerate(handle, start=1):
                if not text.strip():
                    continue
                try:
                    obj = load_object(text)
                    if "id" not in obj:
                        obj = {**obj, "id": format_id(self.id_prefix, index)}
                    point = Point.from_json(obj)
                except MessageError as exc:
                    self.bad.add(line, str(exc))
                    continue
                index += 1
                yield point


def file_format(path: str, fmt: str = "auto") -> str:
    """``csv`` or ``jsonl``: ``fmt`` if given, else from the file name's extension."""
    if fmt != "auto":
        if fmt not in FORMATS:
            raise ConfigError(f"format {fmt!r}: expected auto, {', '.join(FORMATS)}")
        return fmt
    suffixes = [s.lower() for s in Path(path).suffixes if s.lower() != ".gz"]
    last = suffixes[-1] if suffixes else ""
    if last in (".csv", ".tsv", ".txt"):
        return "csv"
    if last in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    raise ConfigError(
        f"cannot tell the format of {path!r} from its name; say --format csv or --format jsonl"
    )


def open_file_source(
    path: str,
    *,
    fmt: str = "auto",
    columns: Sequence[str] | None = None,
    label_column: str = "y",
    delimiter: str | None = None,
    id_prefix: str = "p-",
) -> CsvSource | JsonLinesSource:
    """A CSV or JSON-lines source for ``path`` (``-``: standard input, needs ``fmt``)."""
    if path != "-" and not Path(path).is_file():
        raise ConfigError(f"{path}: no such file")
    kind = file_format(path, fmt)
    if kind == "jsonl":
        if columns:
            raise ConfigError("--columns applies to CSV files only")
        return JsonLinesSource(path, id_prefix=id_prefix)
    if delimiter is None:
        delimiter = "\t" if ".tsv" in Path(path).suffixes else ","
    return CsvSource(
        path, columns=columns, label_column=label_column, delimiter=delimiter, id_prefix=id_prefix
    )
