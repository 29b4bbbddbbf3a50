"""The one fast columnar path for hot records: ``points`` values in, ``predictions`` values out.

Pinned to the contract classes of `bus.messages`: `decode_points` accepts exactly
the values ``Point.from_bytes`` accepts, with the same fields, and refuses the
others with ``str()`` of the MessageError ``Point.from_bytes`` raises;
`encode_predictions` writes exactly the bytes of ``Prediction.to_bytes``. A
property test (``tests/unit/test_codec.py``) holds both to that.

Decoding
    Every value is decoded on its own, never joined to the others (a joined decode
    let records that are bad on their own, such as the two halves of one object,
    pass together). A ``msgspec.json.Decoder`` of a struct that carries the
    contract's rules (types, 1-128 character ids, 1-10,000 features, numbers within
    ±MAX_ABS_INPUT, ``ts >= 0``) decodes and validates each value in C, and the loop
    over the values runs in C too (``list.extend(map(decode, values))``, resumed
    after a refusal). What msgspec refuses goes to ``Point.from_bytes``, which gives
    the reason, or accepts the few valid values msgspec is stricter about (a UTF-8
    byte order mark, an escaped lone surrogate, a repeated key, a ts beyond 64 bits).
    Values msgspec would judge more leniently than the contract never reach it:
    None, values over the size limit, invalid UTF-8 (msgspec does not check it in
    the fields it skips), integers of more digits than ``int()`` takes, and long
    values with many brackets (msgspec nests deeper than ``MAX_NESTING``).

Encoding
    ``msgspec.json.Encoder.encode_lines`` writes a whole batch in one C call. It
    writes what ``json.dumps`` writes for ASCII text without DEL and for floats
    that are 0 or of magnitude in [1e-4, 1e16), where both write the shortest
    round-trip digits in positional notation; the few values outside that are
    rewritten by ``Prediction.to_bytes``. A batch where they are many (non-ASCII
    ids, say) is formatted column by column with the standard library's C helpers.

Measured on 100,000 typical points (the producer's: ``{"id":"p-000017","x":[three
17-digit floats],"y":...}``, a quarter without ``y``, a third with ``ts``) and their
predictions; CPU µs per point, garbage collector paused as the scorer and the
trainer do; the best of three runs of ``python -m bus.codec`` (each the best of 5
rounds, or of 3 on 20,000 points for the pure standard-library rows) on a 2-core
machine shared with other work (load average 15 to 20), Python 3.11, msgspec 0.23,
orjson 3.13::

    decode                                      encode
    json    Point.from_bytes each        20.2   json    Prediction.to_bytes       11.8
    json    loads each + column checks    8.1   json    dumps of a dict            7.1
    orjson  loads each + column checks    2.5   orjson  dumps of a dict (*)        2.5
    msgspec typed struct each             1.0   f-strings of C-formatted columns   2.3
    decode_points                         1.4   msgspec encode_lines (**)          0.4
    decode_labelled                       1.4   encode_predictions                 0.9

(*) other bytes: floats written otherwise, non-ASCII ids not escaped. (**) the same
bytes only where `encode_predictions` uses it. ``decode_points`` adds to msgspec the
screen of the values and the columns; ``encode_predictions`` adds the checks of
the columns and the rewrite of the values outside the range above.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from itertools import repeat
from json.encoder import encode_basestring_ascii
from typing import Annotated

import msgspec

from bus.messages import (
    MAX_ABS_INPUT,
    MAX_FEATURES,
    MAX_ID_CHARS,
    MAX_MESSAGE_BYTES,
    MAX_NESTING,
    Point,
    Prediction,
)
from core.errors import MessageError

_Input = Annotated[float, msgspec.Meta(ge=-MAX_ABS_INPUT, le=MAX_ABS_INPUT)]


class _Point(msgspec.Struct, gc=False):
    """A ``points`` value as msgspec validates it: the rules of ``Point.from_json``."""

    id: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_CHARS)]
    x: Annotated[list[_Input], msgspec.Meta(min_length=1, max_length=MAX_FEATURES)]
    y: _Input | None = None
    ts: Annotated[int, msgspec.Meta(ge=0)] | None = None


class _Prediction(msgspec.Struct, gc=False):
    """A ``predictions`` value, fields in the order of ``Prediction.to_json``."""

    id: str
    prediction: float
    model: str
    version: int
    y: float | None
    ts: int


_DECODE = msgspec.json.Decoder(_Point).decode
_ENCODE_LINES = msgspec.json.Encoder().encode_lines
_REFUSED = (msgspec.MsgspecError, RecursionError, TypeError, ValueError)

#: A value at most this long nests at most half as deep: within the contract's limit.
_SHORT = 2 * MAX_NESTING


# --- decoding -----------------------------------------------------------------------


@dataclass(slots=True)
class PointColumns:
    """The valid points of a batch as columns, and the invalid values with their reasons.

    ``index[k]`` is the position in the input of the k-th valid point; ``x`` rows
    are lists of floats, ``y`` a float or None, ``ts`` the point's own event time
    or None. ``invalid`` holds (position, reason) in input order; the reason is
    the contract's message, ready for a dead letter.
    """

    index: list[int]
    ids: list[str]
    x: list[list[float]]
    y: list[float | None]
    ts: list[int | None]
    invalid: list[tuple[int, str]]

    def __len__(self) -> int:
        return len(self.index)

    def points(self) -> list[Point]:
        """The valid points as contract objects (built on demand: not for the hot path)."""
        return [
            Point(i, x, y, t) for i, x, y, t in zip(self.ids, self.x, self.y, self.ts, strict=True)
        ]

    def labelled(self) -> LabelledColumns:
        """The labelled points only (see `decode_labelled`)."""
        return _labelled(self.index, self.x, self.y, self.invalid)


@dataclass(slots=True)
class LabelledColumns:
    """The labelled valid points of a batch, ready for numpy, and the invalid values.

    ``x`` rows are lists of floats (rows may differ in width: the caller checks its
    dimension), ``y`` floats; ``index`` their positions in the input. Once every row
    has width d, ``np.fromiter(chain.from_iterable(x), np.float64, len(x) * d)``
    reshaped to (len(x), d) is the fastest way to an array. ``unlabelled`` counts
    valid points without a label (not returned); ``invalid`` is as in `PointColumns`.
    """

    index: list[int]
    x: list[list[float]]
    y: list[float]
    unlabelled: int
    invalid: list[tuple[int, str]]

    def __len__(self) -> int:
        return len(self.index)


def decode_points(values: Sequence[bytes | None]) -> PointColumns:
    """Validate every ``points`` value of a batch on its own; the valid ones as columns."""
    index, points, invalid = _decode(values)
    return PointColumns(
        index,
        [p.id for p in points],
        [p.x for p in points],
        [p.y for p in points],
        [p.ts for p in points],
        invalid,
    )


def decode_labelled(values: Sequence[bytes | None]) -> LabelledColumns:
    """What a trainer needs of a batch: the labelled valid points' x and y, and the invalid values.

    Unlabelled points are validated all the same (an invalid one is in ``invalid``)
    and counted in ``unlabelled``.
    """
    index, points, invalid = _decode(values)
    return _labelled(index, [p.x for p in points], [p.y for p in points], invalid)


def _labelled(
    index: list[int],
    xs: list[list[float]],
    ys: list[float | None],
    invalid: list[tuple[int, str]],
) -> LabelledColumns:
    if None not in ys:
        return LabelledColumns(index, xs, ys, 0, invalid)  # type: ignore[arg-type]
    keep = [k for k, y in enumerate(ys) if y is not None]
    return LabelledColumns(
        [index[k] for k in keep],
        [xs[k] for k in keep],
        [ys[k] for k in keep],  # type: ignore[misc]
        len(ys) - len(keep),
        invalid,
    )


def _decode(
    values: Sequence[bytes | None],
) -> tuple[list[int], list[_Point | Point], list[tuple[int, str]]]:
    """(positions of the valid values, their points, (position, reason) of the others)."""
    decoded: list[_Point | Point | None] = []
    invalid: list[tuple[int, str]] = []
    results = map(_DECODE, _screen(values))
    while True:
        try:
            decoded.extend(results)  # C loop; after a refusal, resumes at the next value
            break
        except _REFUSED:
            k = len(decoded)
            try:
                decoded.append(Point.from_bytes(values[k]))
            except MessageError as exc:
                decoded.append(None)
                invalid.append((k, str(exc)))
    if not invalid:
        return list(range(len(decoded))), decoded, invalid  # type: ignore[return-value]
    index = [k for k, p in enumerate(decoded) if p is not None]
    return index, [decoded[k] for k in index], invalid  # type: ignore[misc]


def _screen(values: Sequence[bytes | None]) -> Sequence[bytes]:
    """The values for msgspec: those it could judge otherwise than the contract become b"".

    msgspec refuses b"", which sends the original value to ``Point.from_bytes``.
    The common batch (short ASCII bytes) is checked by three C passes.
    """
    if (
        set(map(type, values)) == {bytes}
        and max(map(len, values)) <= _SHORT  # type: ignore[arg-type]
        and all(map(bytes.isascii, values))  # type: ignore[arg-type]
    ):
        return values  # type: ignore[return-value]
    return [v if type(v) is bytes and _msgspec_agrees(v) else b"" for v in values]


def _msgspec_agrees(value: bytes) -> bool:
    """True when msgspec judges ``value`` as ``Point.from_bytes`` does (or more strictly)."""
    if len(value) > _SHORT:
        if len(value) > MAX_MESSAGE_BYTES:
            return False
        if value.count(b"[") + value.count(b"{") > MAX_NESTING:  # maybe nested too deeply
            return False
        digits = sys.get_int_max_str_digits()
        if digits and len(value) > digits and _digit_run(digits).search(value):
            return False
    if not value.isascii():
        try:
            value.decode()
        except UnicodeDecodeError:
            return False
    return True


@cache
def _digit_run(limit: int) -> re.Pattern[bytes]:
    """A run of more digits than ``int()`` takes (the limit can be changed at run time)."""
    return re.compile(rb"[0-9]{%d}" % (limit + 1))


# --- encoding -----------------------------------------------------------------------


def encode_predictions(
    ids: Sequence[str],
    predictions: Sequence[float],
    ys: Sequence[float | None],
    stamps: Sequence[int],
    *,
    model: str,
    version: int,
    calibrations: Sequence[tuple[float, float] | None] | None = None,
) -> list[bytes]:
    """The ``predictions`` values of a batch: ``Prediction(...).to_bytes()`` of each, byte for byte.

    ``predictions`` and ``ys`` are Python floats (``ys`` may hold None), ``stamps``
    ints. A NaN or infinity raises the ValueError ``Prediction.to_bytes`` raises.
    ``calibrations`` (rare: only after a jump) gives each its ``calibration``.
    """
    if calibrations is not None:
        plain = encode_predictions(ids, predictions, ys, stamps, model=model, version=version)
        return [  # the field comes last, as Prediction.to_json puts it
            value if c is None else value[:-1] + f',"calibration":[{c[0]!r},{c[1]!r}]}}'.encode()
            for value, c in zip(plain, calibrations, strict=True)
        ]
    n = len(ids)
    others = _written_otherwise(ids, predictions, ys) if _plain_text([model]) else None
    if others is None or len(others) * 8 > n:
        return _encode_columns(ids, predictions, ys, stamps, model=model, version=version)
    lines = _ENCODE_LINES(
        list(map(_Prediction, ids, predictions, repeat(model), repeat(version), ys, stamps))
    )
    out = lines.split(b"\n")  # JSON text holds no raw newline: one per value
    out.pop()  # after the last newline
    for k in others:  # the few values msgspec would write otherwise
        out[k] = Prediction(ids[k], predictions[k], model, version, ys[k], stamps[k]).to_bytes()
    return out


def _written_otherwise(
    ids: Sequence[str], predictions: Sequence[float], ys: Sequence[float | None]
) -> list[int] | None:
    """Positions where msgspec would not write what ``json.dumps`` writes.

    C-speed checks of whole columns first; only a column that fails them is
    looked at value by value. None when ids are not ASCII as a rule.
    """
    plain_ids, plain_predictions, plain_ys = (
        _plain_text(ids),
        _positional(predictions),
        _positional(ys),
    )
    if plain_ids and plain_predictions and plain_ys:
        return []
    if not plain_ids and not _plain_text(ids[: max(1, len(ids) // 16)]):
        return None  # the column path suits them
    others: set[int] = set()
    if not plain_ids:
        others.update(k for k, i in enumerate(ids) if not _plain_text([i]))
    for column, plain in ((predictions, plain_predictions), (ys, plain_ys)):
        if not plain:
            others.update(k for k, v in enumerate(column) if v and not 1e-4 <= abs(v) < 1e16)
    return sorted(others)


def _plain_text(texts: Sequence[str]) -> bool:
    """True when msgspec writes these strings as ``json.dumps`` does: ASCII without DEL."""
    joined = "".join(texts)
    return joined.isascii() and "\x7f" not in joined


def _positional(numbers: Sequence[float | None]) -> bool:
    """True when every number is None, 0, or of magnitude in [1e-4, 1e16) (so finite)."""
    magnitudes = list(map(abs, filter(None, numbers)))  # drops None and zeros
    if not magnitudes:
        return True
    # a NaN can hide from min and max, never from the sum
    return min(magnitudes) >= 1e-4 and max(magnitudes) < 1e16 and sum(magnitudes) < math.inf


def _encode_columns(
    ids: Sequence[str],
    predictions: Sequence[float],
    ys: Sequence[float | None],
    stamps: Sequence[int],
    *,
    model: str,
    version: int,
) -> list[bytes]:
    """Each column formatted by one C-level map (``float.__repr__`` is what json writes)."""
    if not (all(map(math.isfinite, predictions)) and all(map(math.isfinite, filter(None, ys)))):
        return [  # raises as Prediction.to_bytes does
            Prediction(i, p, model, version, y, t).to_bytes()
            for i, p, y, t in zip(ids, predictions, ys, stamps, strict=True)
        ]
    middle = f',"model":{encode_basestring_ascii(model)},"version":{version:d},"y":'
    rep = float.__repr__
    labels = map(rep, ys) if None not in ys else ("null" if y is None else rep(y) for y in ys)
    return [
        f'{{"id":{i},"prediction":{p}{middle}{y},"ts":{t}}}'.encode()
        for i, p, y, t in zip(
            map(encode_basestring_ascii, ids),
            map(rep, predictions),
            labels,
            map(int.__repr__, stamps),
            strict=True,
        )
    ]


if __name__ == "__main__":  # pragma: no cover
    from bus.codec_bench import benchmark

    benchmark()
