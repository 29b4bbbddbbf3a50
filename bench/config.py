"""How big each benchmark is: sized so that ``make bench`` stays under 10 minutes on 2 cores."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from streamscore.env import env_float, env_int


@dataclass(frozen=True)
class BenchConfig:
    """The sizes and durations of the benchmarks (``BENCH_*`` variables override them)."""

    points: int = 1_000_000  # the pre-filled points topic (bus, pass-through, scorer, trainer)
    producer_records: int = 100_000  # the raw producer measurement, per variant
    latency_seconds: float = 10.0  # per offered rate
    gateway_seconds: float = 5.0  # per case (clients x flood)
    gateway_max_requests: int = 100_000  # per case: the load's count bound
    trainer_memory_points: int = 10_000_000  # fed in-process to the trainer's batch path
    swaps: int = 5  # model versions published during the hot-swap run
    timeout_s: float = 300.0  # the longest any one wait may take

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BenchConfig:
        """Read ``BENCH_POINTS``, ``BENCH_LATENCY_SECONDS`` and friends."""
        env = os.environ if env is None else env
        d = cls()
        return cls(
            points=env_int(env, "BENCH_POINTS", d.points, minimum=10_000),
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
