"""The producer's settings: a frozen dataclass read from ``STREAMSCORE_PRODUCER_*``."""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from core.env import env_bool, env_choice, env_float, env_int, env_str
from core.errors import ConfigError
from producer.loop import KeyFn, entity_keys, point_key
from producer.sources import FORMATS, FUNCTIONS, check_id_prefix

ENV_PREFIX = "STREAMSCORE_PRODUCER_"
KEY_MODES = ("source", "none")


def env_name(field_name: str) -> str:
    """The environment variable of a setting: ``rate`` -> ``STREAMSCORE_PRODUCER_RATE``."""
    return ENV_PREFIX + field_name.upper()


def flag_name(field_name: str) -> str:
    """The command-line flag of a setting: ``drift_after`` -> ``--drift-after``."""
    return "--" + field_name.replace("_", "-")


def _bad(field_name: str, value: object, expected: str) -> ConfigError:
    return ConfigError(
        f"{flag_name(field_name)} / {env_name(field_name)} = {value!r}: expected {expected}"
    )


@dataclass(frozen=True)
class ProducerConfig:
    """What to publish (the dummy function or a file), how much, how fast, with which keys.

    Every field ``name`` is read from ``STREAMSCORE_PRODUCER_<NAME>`` and can be
    overridden by the flag ``--<name>`` (underscores become dashes). Zero means
    "no limit" for ``count`` and ``rate`` and "never" for ``drift_after``.
    """

    # the source: a file to replay, or (no file) the dummy function
    file: str = ""
    format: str = "auto"
    columns: tuple[str, ...] = ()
    label_column: str = "y"
    delimiter: str = ""
    function: str = "cubic"
    features: int = 3
    noise: float = 0.5
    seed: int = 42
    drift_after: int = 0
    unlabelled: float = 0.0
    id_prefix: str = "p-"
    run_id: str = ""
    # the stream
    count: int = 0
    rate: float = 0.0
    keys: str = "source"
    keep_ts: bool = False
    progress_interval: float = 5.0
    # producer tuning, passed to bus.clients.make_producer as overrides (None: its default)
    linger_ms: int | None = None
    batch_size: int | None = None

    def __post_init__(self) -> None:
        if self.format not in ("auto", *FORMATS):
            raise _bad("format", self.format, f"one of auto, {', '.join(FORMATS)}")
        if self.function not in FUNCTIONS:
            raise _bad("function", self.function, f"one of {', '.join(FUNCTIONS)}")
        if self.features < 1:
            raise _bad("features", self.features, "at least 1")
        if not (math.isfinite(self.noise) and self.noise >= 0):
            raise _bad("noise", self.noise, "a number >= 0")
        if self.drift_after < 0:
            raise _bad("drift_after", self.drift_after, "a count >= 0 (0: never)")
        if not 0.0 <= self.unlabelled <= 1.0:
            raise _bad("unlabelled", self.unlabelled, "a share between 0 and 1")
        if self.count < 0:
            raise _bad("count", self.count, "a count >= 0 (0: no limit)")
        if not (math.isfinite(self.rate) and self.rate >= 0):
            raise _bad("rate", self.rate, "points per second >= 0 (0: no limit)")
        if self.keys not in KEY_MODES and not (self.keys.isdigit() and int(self.keys) >= 1):
            raise _bad("keys", self.keys, "source, none, or a number K of keys entity-<i mod K>")
        if not (math.isfinite(self.progress_interval) and self.progress_interval > 0):
            raise _bad("progress_interval", self.progress_interval, "seconds > 0")
        if len(self.delimiter) > 1:
            raise _bad("delimiter", self.delimiter, "one character")
        if self.linger_ms is not None and self.linger_ms < 0:
            raise _bad("linger_ms", self.linger_ms, "milliseconds >= 0")
        if self.batch_size is not None and self.batch_size < 1024:
            raise _bad("batch_size", self.batch_size, "bytes >= 1024")
        if self.columns and not self.file:
            raise _bad("columns", ",".join(self.columns), "no columns without --file")
        check_id_prefix(self.run_id + "-" + self.id_prefix if self.run_id else self.id_prefix)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ProducerConfig:
        """Read ``STREAMSCORE_PRODUCER_*``; unset variables keep their defaults."""
        env = os.environ if env is None else env
        d = cls()
        name = env_name
        return cls(
            file=env_str(env, name("file"), d.file),
            format=env_choice(env, name("format"), d.format, ("auto", *FORMATS)),
            columns=parse_columns(env_str(env, name("columns"), "")),
            label_column=env_str(env, name("label_column"), d.label_column),
            delimiter=env.get(name("delimiter"), d.delimiter),
            function=env_choice(env, name("function"), d.function, FUNCTIONS),
            features=env_int(env, name("features"), d.features, minimum=1),
            noise=env_float(env, name("noise"), d.noise, minimum=0.0),
            seed=env_int(env, name("seed"), d.seed),
            drift_after=env_int(env, name("drift_after"), d.drift_after, minimum=0),
            unlabelled=env_float(env, name("unlabelled"), d.unlabelled, minimum=0.0),
            id_prefix=env.get(name("id_prefix"), d.id_prefix),
            run_id=env_str(env, name("run_id"), d.run_id),
            count=env_int(env, name("count"), d.count, minimum=0),
            rate=env_float(env, name("rate"), d.rate, minimum=0.0),
            keys=env_str(env, name("keys"), d.keys),
            keep_ts=env_bool(env, name("keep_ts"), d.keep_ts),
            progress_interval=env_float(env, name("progress_interval"), d.progress_interval),
            linger_ms=_optional_int(env, name("linger_ms"), minimum=0),
            batch_size=_optional_int(env, name("batch_size"), minimum=1024),
        )

    def id_prefix_for_run(self, new_run_id: Callable[[], str] | None = None) -> str:
        """The prefix of this run's ids: ``<run_id>-<id_prefix>`` (``auto``: a fresh id)."""
        if not self.run_id:
            return self.id_prefix
        run = self.run_id
        if run == "auto":
            run = (new_run_id or (lambda: uuid.uuid4().hex[:8]))()
        return f"{run}-{self.id_prefix}"

    def key_fn(self) -> KeyFn | None:
        """The loop's ``keys``: the source's own, none, or ``entity-<i mod K>``."""
        if self.keys == "none":
            return None
        if self.keys == "source":
            return point_key
        return entity_keys(int(self.keys))

    def producer_overrides(self) -> dict[str, Any]:
        """Settings passed to ``bus.clients.make_producer`` on top of the project's defaults."""
        tuning = {"linger_ms": self.linger_ms, "batch_size": self.batch_size}
        return {name: value for name, value in tuning.items() if value is not None}


def _optional_int(env: Mapping[str, str], name: str, *, minimum: int) -> int | None:
    """The variable as an integer, or None when it is unset or blank."""
    return env_int(env, name, minimum, minimum=minimum) if env.get(name, "").strip() else None


def parse_columns(text: str) -> tuple[str, ...]:
    """``"a, b,c"`` -> ``("a", "b", "c")``; empty -> ``()`` (every non-special column)."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


#: The settings, in the order ``--help`` and the README list them.
FIELDS = tuple(f.name for f in fields(ProducerConfig))
