"""The trainer's memory over many points, in-process: its batch-ingest path fed without Kafka.

Pushing 10 million points through Kafka does not fit the benchmarks' time
budget, so this process feeds the trainer's own ingest steps with chunks of
pre-encoded ``points`` values, as ``streamscore trainer`` does for each chunk it
reads: validate the chunk (``trainer.batch.parse_points``), then score and fit
every configured model (``trainer.models.ModelSlot.train``, default settings:
multivariate and cubic polynomial, forgetting 0.9995 with drift detection, as one
partition). It reads its own resident memory
as it goes. A pool of distinct values is cycled so that the input takes
constant memory.

``python -m bench.trainer_memory --points N`` prints one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time

from bench.context import rss_bytes
from bench.data import point_values
from trainer.config import TrainerConfig

POOL = 100_000


def main(argv: list[str] | None = None) -> int:
    """Feed ``--points`` points in chunks of the trainer's batch size; print RSS checkpoints."""
    parser = argparse.ArgumentParser(prog="python -m bench.trainer_memory", description=__doc__)
    parser.add_argument("--points", type=int, default=10_000_000)
    parser.add_argument("--every", type=int, default=1_000_000, help="RSS checkpoint interval")
    args = parser.parse_args(argv)
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, "1")  # as `streamscore trainer` does
    from regressors.base import MAX_ABS_VALUE
    from trainer.batch import parse_points
    from trainer.models import ModelSlot

    config = TrainerConfig()
    slots = [ModelSlot.fresh(spec, config.training) for spec in config.models]
    max_abs_x = min(slot.max_abs_input for slot in slots)
    n_features = config.n_features_or_none
    labelled = 0
    values = point_values(POOL, seed=3)
    size = config.max_records
    chunks = [values[i : i + size] for i in range(0, POOL, size)]
    gc.collect()
    checkpoints: list[tuple[int, int | None]] = [(0, rss_bytes(os.getpid()))]
    fed = 0
    began = time.perf_counter()
    while fed < args.points:
        for chunk in chunks:
            n = min(len(chunk), args.points - fed)
            parsed = parse_points(
                chunk[:n], n_features, max_abs_x=max_abs_x, max_abs_y=MAX_ABS_VALUE
            )
            n_features = parsed.n_features
            for slot in slots:
                slot.train(parsed.x, parsed.y)
            labelled += parsed.labelled
            fed += n
            if fed % args.every == 0 or fed >= args.points:
                checkpoints.append((fed, rss_bytes(os.getpid())))
            if fed >= args.points:
                break
    seconds = time.perf_counter() - began
    print(
        json.dumps(
            {
                "points": fed,
                "training": config.training.describe(),
                "labelled": labelled,
                "seconds": seconds,
                "rate": fed / seconds,
                "rss": checkpoints,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
