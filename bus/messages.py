"""The message contract: parse and validate from bytes, encode to bytes.

Every value on the bus is a UTF-8 JSON object. Unknown fields are ignored,
missing required fields and values of the wrong type are a ``MessageError``
whose text names the field, what was expected and what was found.
Non-finite numbers (NaN, Infinity, overflow) are rejected everywhere.

Input limits, the same for every reader (scorer, trainer, gateway; `bus.codec`
applies them too): a feature or label is a number within ±`MAX_ABS_INPUT`; a
model coefficient is within ±`MAX_ABS_PARAM`; a version is at most
`MAX_VERSION`, the largest integer every JSON reader holds exactly; arrays and
objects nest at most `MAX_NESTING` deep.

Why these two limits: every prediction of a point within them by a model within
them is a finite number. A prediction is a sum of at most ``MAX_PARAMETERS``
(2000, `regressors.base`) terms ``c * m`` where ``|c| <= 1e15`` and ``m`` is a
monomial of the features of degree k <= ``MAX_DEGREE`` (10), so
``|m| <= 1e12**k``. At degree 3 (the default polynomial) a model has at most 20
features (C(23, 3) = 1771 terms, the most under 2000), so ``|prediction| <=
1771 * 1e15 * 1e36 < 2e54``; at degree 10 the bound is ``2000 * 1e15 * 1e120 =
2e138``: both far below the float64 limit (1.8e308). Up to degree 6 every
prediction is also within ±1e100, the range the rolling metrics take.

The contract lives in modules by concern, every name importable from here:
`bus.messages_json` (limits, decoding and encoding a value), `bus.messages_checks`
(the field checks), `bus.messages_data` (`Point`, `Prediction`),
`bus.messages_models` (`ModelVersion`, `Score`) and `bus.messages_requests`
(`InferRequest`, `InferReply`).
"""

from __future__ import annotations

from bus.messages_data import Point, Prediction
from bus.messages_json import (
    MAX_ABS_INPUT,
    MAX_ABS_PARAM,
    MAX_FEATURES,
    MAX_ID_CHARS,
    MAX_INSTANCES,
    MAX_MESSAGE_BYTES,
    MAX_NAME_CHARS,
    MAX_NESTING,
    MAX_VERSION,
    MODEL_KINDS,
    MODEL_NAME_RULE,
    Json,
    dump_object,
    is_model_name,
    load_object,
)
from bus.messages_models import ModelVersion, Score
from bus.messages_requests import InferReply, InferRequest

__all__ = [
    "MAX_ABS_INPUT",
    "MAX_ABS_PARAM",
    "MAX_FEATURES",
    "MAX_ID_CHARS",
    "MAX_INSTANCES",
    "MAX_MESSAGE_BYTES",
    "MAX_NAME_CHARS",
    "MAX_NESTING",
    "MAX_VERSION",
    "MODEL_KINDS",
    "MODEL_NAME_RULE",
    "InferReply",
    "InferRequest",
    "Json",
    "ModelVersion",
    "Point",
    "Prediction",
    "Score",
    "dump_object",
    "is_model_name",
    "load_object",
]
