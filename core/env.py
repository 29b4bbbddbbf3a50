"""Typed reading of environment variables, with errors that name the variable."""

from __future__ import annotations

import math
from collections.abc import Mapping

from core.errors import ConfigError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def env_str(env: Mapping[str, str], name: str, default: str) -> str:
    """The variable's value, or ``default`` when unset or blank."""
    raw = env.get(name, "").strip()
    return raw or default


def env_int(env: Mapping[str, str], name: str, default: int, *, minimum: int | None = None) -> int:
    """The variable as an integer (at least ``minimum`` if given)."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected an integer") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}={value}: must be at least {minimum}")
    return value


def env_float(
    env: Mapping[str, str], name: str, default: float, *, minimum: float | None = None
) -> float:
    """The variable as a number (at least ``minimum`` if given)."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected a number") from None
    if not math.isfinite(value):
        raise ConfigError(f"{name}={raw!r}: expected a finite number")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}={raw}: must be at least {minimum}")
    return value


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    """The variable as a boolean (1/true/yes/on or 0/false/no/off)."""
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r}: expected true or false")


def env_choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    """The variable, which must be one of ``choices``."""
    value = env_str(env, name, default)
    if value not in choices:
        raise ConfigError(f"{name}={value!r}: expected one of {', '.join(choices)}")
    return value
