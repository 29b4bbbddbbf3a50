"""The producer's settings: a frozen dataclass read from ``STREAMSCORE_PRODUCER_*``."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from core.settings import Setting, SettingsTable, boolean, choice, integer, number, text
from producer.loop import KeyFn, entity_keys, point_key
from producer.sources import FORMATS, FUNCTIONS, check_id_prefix

KEY_MODES = ("source", "none")


@dataclass(frozen=True)
class ProducerConfig:
    """What to publish (the dummy function or a file), how much, how fast, with which keys.

    Every field ``name`` is read from ``STREAMSCORE_PRODUCER_<NAME>`` and can be
    overridden by the flag ``--<name>`` (underscores become dashes): see `SETTINGS`.
    Zero means
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
        SETTINGS.check(self)
        if self.columns and not self.file:
            raise SETTINGS.error("columns", ",".join(self.columns), "no columns without --file")
        check_id_prefix(self.run_id + "-" + self.id_prefix if self.run_id else self.id_prefix)

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, overrides: Mapping[str, str] | None = None
    ) -> ProducerConfig:
        """Read ``STREAMSCORE_PRODUCER_*`` (``overrides``: field -> text on top)."""
        return SETTINGS.load(env, overrides)

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


def parse_columns(text: str) -> tuple[str, ...]:
    """``"a, b,c"`` -> ``("a", "b", "c")``; empty -> ``()`` (every non-special column)."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _keys(text: str) -> str:
    if text in KEY_MODES or (text.isdigit() and int(text) >= 1):
        return text
    raise ValueError("expected source, none, or a number K of keys entity-<i mod K>")


def _delimiter(text: str) -> str:
    if len(text) > 1:
        raise ValueError("expected one character")
    return text


def _columns(text: str) -> tuple[str, ...]:
    return parse_columns(text)


#: The settings, in the order ``--help`` and the README list them.
SETTINGS = SettingsTable(
    ProducerConfig,
    "STREAMSCORE_PRODUCER_",
    [
        Setting("file", "STREAMSCORE_PRODUCER_FILE", text(), "replay this CSV or JSON-lines "
                "file (.gz too; - is stdin); without it, the dummy function is the source",
                "PATH"),
        Setting("format", "STREAMSCORE_PRODUCER_FORMAT", choice("auto", *FORMATS),
                "file format: auto (from the extension), csv or jsonl", "FMT"),
        Setting("columns", "STREAMSCORE_PRODUCER_COLUMNS", _columns,
                "CSV feature columns (default: all but id, y, ts, key)", "A,B", shown="all"),
        Setting("label_column", "STREAMSCORE_PRODUCER_LABEL_COLUMN", text(nonempty=True),
                "CSV column holding the label y", "NAME"),
        Setting("delimiter", "STREAMSCORE_PRODUCER_DELIMITER", _delimiter,
                "CSV delimiter", "CHAR", shown="tab for .tsv, else comma", verbatim=True),
        Setting("function", "STREAMSCORE_PRODUCER_FUNCTION", choice(*FUNCTIONS),
                "dummy function: linear, quadratic or cubic", "NAME"),
        Setting("features", "STREAMSCORE_PRODUCER_FEATURES", integer(minimum=1),
                "dummy: number of features", "N"),
        Setting("noise", "STREAMSCORE_PRODUCER_NOISE", number(minimum=0.0),
                "dummy: standard deviation of the Gaussian noise on y", "SIGMA"),
        Setting("seed", "STREAMSCORE_PRODUCER_SEED", integer(),
                "dummy: random seed (same seed, same points)", "N"),
        Setting("drift_after", "STREAMSCORE_PRODUCER_DRIFT_AFTER", integer(minimum=0),
                "dummy: change the function after N points (0: never)", "N"),
        Setting("unlabelled", "STREAMSCORE_PRODUCER_UNLABELLED", number(minimum=0.0, maximum=1.0),
                "share of points sent without a label y (0 to 1)", "SHARE"),
        Setting("id_prefix", "STREAMSCORE_PRODUCER_ID_PREFIX", text(),
                "ids are <prefix><index:06d>, e.g. p-000017", "TEXT", verbatim=True),
        Setting("run_id", "STREAMSCORE_PRODUCER_RUN_ID", text(),
                "prefix ids with <RUN>- so runs don't collide (auto: random)", "RUN"),
        Setting("count", "STREAMSCORE_PRODUCER_COUNT", integer(minimum=0),
                "stop after N points (0: no limit; a file stops at its end)", "N",
                aliases=("-n",)),
        Setting("rate", "STREAMSCORE_PRODUCER_RATE", number(minimum=0.0),
                "at most this many points per second (0: no limit)", "PER_S"),
        Setting("keys", "STREAMSCORE_PRODUCER_KEYS", _keys, "record keys: source (a CSV key "
                "column), none, or a number K for entity-<i mod K>", "MODE"),
        Setting("keep_ts", "STREAMSCORE_PRODUCER_KEEP_TS", boolean(),
                "keep a point's own ts instead of the send time"),
        Setting("progress_interval", "STREAMSCORE_PRODUCER_PROGRESS_INTERVAL",
                number(minimum=0.01), "seconds between progress log lines (when stderr is "
                "not a terminal)", "SECONDS"),
        Setting("linger_ms", "STREAMSCORE_PRODUCER_LINGER_MS", integer(minimum=0),
                "producer linger.ms: how long a batch may wait to fill", "MS",
                shown="the Kafka client's"),
        Setting("batch_size", "STREAMSCORE_PRODUCER_BATCH_SIZE", integer(minimum=1024),
                "producer batch.size per partition, in bytes", "BYTES",
                shown="the Kafka client's"),
    ],
)  # fmt: skip
