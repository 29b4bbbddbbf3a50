"""The JSON layer of the message contract: its limits, decoding and encoding one value.

Every value on the bus is a UTF-8 JSON object of at most `MAX_MESSAGE_BYTES`,
nested at most `MAX_NESTING` deep, with only finite numbers; `load_object`
refuses anything else with a ``MessageError`` that says what is wrong. The
limits on fields (`MAX_ABS_INPUT`, `MAX_VERSION`, ...) are defined here too, and
explained in `bus.messages`.
"""

from __future__ import annotations

import json
import math
import re
from itertools import accumulate, count
from typing import Any

from core import limits
from core.errors import MessageError

MAX_MESSAGE_BYTES = 1_000_000
#: Deepest nesting of arrays and objects a message may have. A fixed limit, so that a
#: value is valid or not whatever the stack depth of the code that reads it.
MAX_NESTING = 512
#: Largest magnitude of a feature or a label (points and inference rows).
MAX_ABS_INPUT = limits.MAX_ABS_INPUT
#: Largest magnitude of a number in a model's params (its coefficients).
MAX_ABS_PARAM = limits.MAX_ABS_PARAM
MAX_FEATURES = 10_000
MAX_ID_CHARS = 128
MAX_NAME_CHARS = 128
MAX_INSTANCES = 10_000
#: Largest version (2**53 - 1): beyond it a JSON reader using doubles loses digits.
MAX_VERSION = 2**53 - 1
MODEL_KINDS = ("multivariate", "polynomial")
#: What a model name may be, as said in errors (the trainer's names, the scorer's policy).
MODEL_NAME_RULE = (
    f"1 to {MAX_NAME_CHARS} letters, digits, '.', '_' or '-', the first a letter or digit"
)
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

Json = dict[str, Any]


def is_model_name(value: str) -> bool:
    """True when ``value`` is a model name: `MODEL_NAME_RULE` (the whole text, no newline)."""
    return len(value) <= MAX_NAME_CHARS and _MODEL_NAME.fullmatch(value) is not None


class _Constants:
    """``parse_constant`` for json.loads: keeps NaN and infinities, notes that one was seen."""

    def __init__(self) -> None:
        self.seen = False

    def __call__(self, name: str) -> float:
        self.seen = True
        return float(name)


def _non_finite(value: Any, path: str) -> tuple[str, float] | None:
    """The path and value of the first non-finite number inside ``value``, if any."""
    if type(value) is float and not math.isfinite(value):
        return path, value
    if isinstance(value, dict):
        items: Any = ((f"{path}.{k}" if path else str(k), v) for k, v in value.items())
    elif isinstance(value, list):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for sub_path, item in items:
        found = _non_finite(item, sub_path)
        if found is not None:
            return found
    return None


def describe(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        text = repr(value)
    else:
        try:
            text = json.dumps(value)
        except (ValueError, RecursionError):  # too many digits, nested too deeply
            text = f"a JSON {'array' if isinstance(value, list) else type(value).__name__}"
    return text if len(text) <= 40 else text[:37] + "..."


_JSON_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
_BRACKET_STEPS = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")  # 1 + the change of depth


def _too_deep(text: str) -> bool:
    """True when arrays and objects nest more than MAX_NESTING deep in JSON ``text``."""
    data = _JSON_STRING.sub(b"", text.encode("utf-8", "surrogatepass"))  # brackets in strings
    steps = data.translate(_BRACKET_STEPS, _NOT_BRACKETS)
    for part in (steps[: 4 * MAX_NESTING], steps):  # the usual attack is deep at once
        if max(map(int.__sub__, accumulate(part), count(1)), default=0) > MAX_NESTING:
            return True
    return False


def load_object(raw: bytes | bytearray | str | None) -> Json:
    """Decode one message value into a JSON object, or raise MessageError."""
    if raw is None:
        raise MessageError("expected a JSON object, got an empty value (tombstone)")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise MessageError(f"message is {len(raw)} bytes; the limit is {MAX_MESSAGE_BYTES}")
    constants = _Constants()
    try:
        # Decode here: json.loads would also take UTF-16 and UTF-32 bytes.
        text = raw if isinstance(raw, str) else bytes(raw).decode("utf-8-sig")
        if text.count("[") + text.count("{") > MAX_NESTING and _too_deep(text):
            raise RecursionError  # refused whatever the stack depth here
        obj = json.loads(text, parse_constant=constants)
    except UnicodeDecodeError as exc:
        raise MessageError(f"not UTF-8 text: {exc}") from None
    except json.JSONDecodeError as exc:
        raise MessageError(f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError:  # an integer of more digits than int() takes
        raise MessageError("not JSON: a number has too many digits") from None
    except RecursionError:
        raise MessageError(f"not JSON: nested too deeply (the limit is {MAX_NESTING})") from None
    if not isinstance(obj, dict):
        raise MessageError(f"expected a JSON object, got {describe(obj)}")
    if constants.seen:
        try:
            found = _non_finite(obj, "")
        except RecursionError:
            raise MessageError("not JSON: nested too deeply") from None
        if found is not None:
            path = found[0] if len(found[0]) <= 80 else found[0][:77] + "..."
            raise MessageError(f"expected a finite number, got {describe(found[1])}", field=path)
    return obj


def dump_object(obj: Json) -> bytes:
    """Encode a JSON object compactly; refuses NaN and infinities."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()
