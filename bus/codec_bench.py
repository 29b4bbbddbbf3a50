"""Measuring the codec (``python -m bus.codec``): each way to decode points and encode predictions.

Prints µs of CPU per point of the plain JSON ways, orjson (when installed), msgspec
and the codec's own `decode_points`, `decode_labelled` and `encode_predictions`;
the figures are in the docstring of `bus.codec`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice, repeat
from typing import Any

from bus.codec import (
    _DECODE,
    _ENCODE_LINES,
    _encode_columns,
    _Prediction,
    decode_labelled,
    decode_points,
    encode_predictions,
)
from bus.messages import MAX_ABS_INPUT, MAX_ID_CHARS, Point, Prediction


def _sample_points(n: int) -> list[bytes]:
    """``n`` encoded points of 3 features, some without label or time, always the same."""
    import random

    rng = random.Random(17)
    return [
        Point(
            f"p-{i:06d}",
            [rng.uniform(-2.0, 2.0) for _ in range(3)],
            None if i % 4 == 0 else rng.gauss(0.0, 3.0),
            1_700_000_000_000 + i if i % 3 == 0 else None,
        ).to_bytes()
        for i in range(n)
    ]


def _checked(objs: list[Any]) -> list[Any]:
    """The column checks a plain JSON decode needs (as the scorer made them)."""
    from itertools import chain

    ids, xs = [o["id"] for o in objs], [o["x"] for o in objs]
    ys, ts = [o.get("y") for o in objs], [o.get("ts") for o in objs]
    flat = list(chain.from_iterable(xs))
    ok = set(map(type, ids)) == {str} and set(map(type, xs)) == {list}
    ok = ok and {int, float}.issuperset(map(type, flat))
    ok = ok and max(map(abs, flat)) <= MAX_ABS_INPUT and max(map(len, ids)) <= MAX_ID_CHARS
    ok = ok and max(map(abs, filter(None, ys))) <= MAX_ABS_INPUT
    assert ok and min(t for t in ts if t is not None) >= 0
    return [ids, xs, ys, ts]


@dataclass(frozen=True)
class _Timer:
    """Prints the CPU time per point of a run, the best of ``rounds`` (3 for a part of ``n``)."""

    n: int
    rounds: int

    def __call__(self, name: str, run: Callable[[], object], count: int | None = None) -> None:
        import time

        from core.runtime import gc_paused

        count = self.n if count is None else count
        times = []
        for _ in range(self.rounds if count == self.n else 3):
            with gc_paused():
                start = time.process_time()  # CPU time: steadier than the clock on a shared box
                run()
                times.append(time.process_time() - start)
        print(f"{name:48s} {min(times) / count * 1e6:6.2f} µs/point", flush=True)


def _optional_orjson() -> Any:
    """orjson when installed (compared, not a dependency), else None."""
    try:
        return importlib.import_module("orjson")
    except ImportError:
        print("orjson is not installed")
        return None


def _bench_decoding(timer: _Timer, values: list[bytes], orjson: Any) -> None:
    """Time each way to decode ``points``; the pure standard-library ways on a fifth."""
    import json

    few = timer.n // 5
    timer(
        "decode json Point.from_bytes each", lambda: list(map(Point.from_bytes, values[:few])), few
    )
    timer(
        "decode json loads each + checks",
        lambda: _checked(list(map(json.loads, values[:few]))),
        few,
    )
    if orjson is not None:
        timer(
            "decode orjson loads each + checks", lambda: _checked(list(map(orjson.loads, values)))
        )
    timer("decode msgspec struct each", lambda: list(map(_DECODE, values)))
    timer("decode_points", lambda: decode_points(values))
    timer("decode_labelled", lambda: decode_labelled(values))


def _bench_encoding(timer: _Timer, values: list[bytes], orjson: Any) -> None:
    """Time each way to encode ``predictions``; the pure standard-library ways on a fifth."""
    import json
    import random

    n, few, model = timer.n, timer.n // 5, "polynomial"
    rng = random.Random(17)
    preds = [rng.gauss(0.0, 3.0) for _ in range(n)]
    columns = decode_points(values)
    args = (columns.ids, preds, columns.y, [1_700_000_000_000 + i for i in range(n)])

    def dicts(count: int) -> list[dict[str, Any]]:
        keys = ("id", "prediction", "model", "version", "y", "ts")
        return [
            dict(zip(keys, (i, p, model, 7, y, t), strict=True))
            for i, p, y, t in islice(zip(*args, strict=True), count)
        ]

    timer(
        "encode json Prediction.to_bytes",
        lambda: [Prediction(**d).to_bytes() for d in dicts(few)],
        few,
    )
    small = dicts(few)
    timer(
        "encode json dumps of a dict",
        lambda: [json.dumps(d, separators=(",", ":")).encode() for d in small],
        few,
    )
    if orjson is not None:
        everything = dicts(n)
        timer(
            "encode orjson dumps of a dict (other bytes)",
            lambda: list(map(orjson.dumps, everything)),
        )
    timer(
        "encode f-strings of C-formatted columns",
        lambda: _encode_columns(*args, model=model, version=7),
    )
    timer(
        "encode msgspec encode_lines",
        lambda: _ENCODE_LINES(
            list(map(_Prediction, args[0], preds, repeat(model), repeat(7), args[2], args[3]))
        ),
    )
    timer("encode_predictions", lambda: encode_predictions(*args, model=model, version=7))
    expected = [Prediction(**d).to_bytes() for d in dicts(n)]
    assert encode_predictions(*args, model=model, version=7) == expected


def benchmark(n: int = 100_000, rounds: int = 5) -> None:
    """Print µs per point of each way to decode ``points`` and encode ``predictions``.

    The pure standard-library ways run on a fifth of the points, three times, so
    that the whole run stays under a minute.
    """
    values = _sample_points(n)
    timer, orjson = _Timer(n, rounds), _optional_orjson()
    _bench_decoding(timer, values, orjson)
    _bench_encoding(timer, values, orjson)
