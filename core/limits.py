"""Numeric limits shared by the message contract (`bus.messages`) and the regressors."""

from __future__ import annotations

#: Largest magnitude of a feature or a label (points and inference rows).
MAX_ABS_INPUT = 1e12
#: Largest magnitude of a number in a model's params (its coefficients).
MAX_ABS_PARAM = 1e15
