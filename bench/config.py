"""How big each benchmark is: sized so that ``make bench`` stays under 15 minutes on 2 cores."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from core.env import env_bool, env_float, env_int, env_str
from core.errors import ConfigError

#: The Kafka clients the services can run on (``STREAMSCORE_KAFKA_CLIENT``), in table order.
CLIENTS = ("kafka-python", "confluent")


def _partition_counts(text: str) -> tuple[int, ...]:
    """``"1,4"`` -> (1, 4); a ConfigError for anything but positive integers."""
    try:
        counts = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1:
        raise ConfigError(f"BENCH_PARTITIONS={text!r}: expected positive integers, e.g. '1,4'")
    return counts


def _clients(text: str) -> tuple[str, ...]:
    """``"kafka-python,confluent"`` -> the clients named (each one of `CLIENTS`)."""
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [name for name in names if name not in CLIENTS]
    if not names or unknown:
        raise ConfigError(
            f"BENCH_CLIENTS={text!r}: expected a comma-separated list of {', '.join(CLIENTS)}"
        )
    return names


@dataclass(frozen=True)
class BenchConfig:
    """The sizes and durations of the benchmarks (``BENCH_*`` variables override them)."""

    points: int = 300_000  # each pre-filled points topic (pass-through, scorer, peer, trainer)
    partitions: tuple[int, ...] = (1, 4)  # one pre-filled points topic per partition count
    clients: tuple[str, ...] = CLIENTS  # the Kafka clients every service benchmark runs on
    scorer_exactly_once: bool = True  # also the scorer in exactly-once, at the most partitions
    producer_records: int = 100_000  # the raw producer measurement, per variant
    latency_seconds: float = 10.0  # per offered rate and client
    gateway_seconds: float = 5.0  # per case (clients x flood)
    gateway_max_requests: int = 100_000  # per case: the load's count bound
    trainer_memory_points: int = 10_000_000  # fed in-process to the trainer's batch path
    swaps: int = 5  # model versions published during the hot-swap run
    timeout_s: float = 300.0  # the longest any one wait may take

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BenchConfig:
        """Read ``BENCH_POINTS``, ``BENCH_PARTITIONS``, ``BENCH_CLIENTS`` and friends."""
        env = os.environ if env is None else env
        d = cls()
        return cls(
            points=env_int(env, "BENCH_POINTS", d.points, minimum=10_000),
            partitions=_partition_counts(
                env_str(env, "BENCH_PARTITIONS", ",".join(map(str, d.partitions)))
            ),
            clients=_clients(env_str(env, "BENCH_CLIENTS", ",".join(d.clients))),
            scorer_exactly_once=env_bool(env, "BENCH_SCORER_EXACTLY_ONCE", d.scorer_exactly_once),
            producer_records=env_int(
                env, "BENCH_PRODUCER_RECORDS", d.producer_records, minimum=1000
            ),
            latency_seconds=env_float(env, "BENCH_LATENCY_SECONDS", d.latency_seconds, minimum=2.0),
            gateway_seconds=env_float(env, "BENCH_GATEWAY_SECONDS", d.gateway_seconds, minimum=1.0),
            gateway_max_requests=env_int(
                env, "BENCH_GATEWAY_MAX_REQUESTS", d.gateway_max_requests, minimum=100
            ),
            trainer_memory_points=env_int(
                env, "BENCH_TRAINER_MEMORY_POINTS", d.trainer_memory_points, minimum=1_000_000
            ),
            swaps=env_int(env, "BENCH_SWAPS", d.swaps, minimum=1),
            timeout_s=env_float(env, "BENCH_TIMEOUT_S", d.timeout_s, minimum=10.0),
        )
