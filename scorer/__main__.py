"""``streamscore scorer``: predict every point, score every live model, answer requests."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import replace

from bus.clients import driver_for
from bus.settings import KafkaSettings
from bus.signing import model_key_from_env
from bus.topics import TopicLayout, Topics, ensure_topics
from core.errors import StreamscoreError
from core.logs import configure_logging
from core.shutdown import StopFlag
from core.telemetry import TelemetryConfig, serve
from scorer.config import DELIVERY_MODES, ScorerConfig
from scorer.service import Scorer

log = logging.getLogger("scorer")


def main(argv: list[str] | None = None) -> int:
    """Run the scorer until SIGTERM/SIGINT; exit 0 after a clean stop."""
    parser = argparse.ArgumentParser(
        prog="streamscore scorer",
        description=__doc__,
        epilog="Every option has an environment variable (STREAMSCORE_SCORER_*); see README.",
    )
    parser.add_argument("--delivery", choices=DELIVERY_MODES, help="delivery guarantee")
    parser.add_argument("--policy", help="'best' or the name of the model that serves")
    args = parser.parse_args(argv)
    configure_logging("scorer")
    try:
        config = ScorerConfig.from_env()
        overrides = {k: v for k, v in vars(args).items() if v is not None}
        if overrides:
            config = replace(config, **overrides)
        settings = KafkaSettings.from_env()
        topics = Topics.from_env()
        ensure_topics(settings, topics, TopicLayout.from_env())
        telemetry_config = TelemetryConfig.for_service("scorer", os.environ)
        scorer = Scorer(
            driver_for(settings),
            topics,
            config,
            stop=StopFlag().install(),
            model_key=model_key_from_env(),
        )
        telemetry = scorer.telemetry(telemetry_config)
        server = serve(telemetry_config, telemetry.registry, telemetry.health)
        telemetry.watch.start()
        try:
            stats = scorer.run()
        finally:
            telemetry.watch.close()
            if server is not None:
                server.close()
    except StreamscoreError as exc:
        log.error("%s", exc)
        return 1
    log.info("stopped after %d points, %d predictions", stats.points, stats.predictions)
    return 0


if __name__ == "__main__":
    sys.exit(main())
