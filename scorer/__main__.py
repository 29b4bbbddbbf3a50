"""``streamscore scorer``: predict every point, score every live model, answer requests."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from bus.clients import driver_for
from bus.settings import KafkaSettings
from bus.signing import model_key_from_env
from bus.topics import TopicLayout, Topics, ensure_topics
from core.errors import ConfigError, StreamscoreError
from core.logs import configure_logging
from core.shutdown import StopFlag
from core.telemetry import TelemetryConfig, serve
from scorer.config import SETTINGS, ScorerConfig
from scorer.service import Scorer

log = logging.getLogger("scorer")


def build_parser() -> argparse.ArgumentParser:
    """The command line: one flag per setting of `scorer.config.SETTINGS`."""
    return SETTINGS.parser("streamscore scorer", __doc__)


def main(argv: list[str] | None = None) -> int:
    """Run the scorer until SIGTERM/SIGINT; exit 0 after a clean stop, 2 on bad settings."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = ScorerConfig.from_env(None, SETTINGS.overrides(args))
    except ConfigError as exc:
        print(f"streamscore scorer: {exc}", file=sys.stderr)
        return 2
    configure_logging("scorer")
    try:
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
