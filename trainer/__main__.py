"""``streamscore trainer``: fit regressors on labelled points, publish model versions."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time

from bus.clients import driver_for
from bus.settings import KafkaSettings
from bus.signing import model_key_from_env
from bus.topics import TopicLayout, Topics, ensure_topics
from core.errors import ConfigError, StreamscoreError
from core.logs import configure_logging
from core.shutdown import StopFlag
from core.telemetry import TelemetryConfig, serve
from trainer.config import SETTINGS, TrainerConfig
from trainer.trainer import Trainer

log = logging.getLogger("trainer")

#: After a stop signal, how long the trainer has to finish before it exits anyway.
STOP_GRACE_S = 8.0


def build_parser() -> argparse.ArgumentParser:
    """The command line: one flag per setting of `trainer.config.SETTINGS`."""
    return SETTINGS.parser(
        "streamscore trainer",
        __doc__,
        "Run one trainer per group at a time: a second one with the same transactional id "
        "takes over and the first stops.",
    )


def main(argv: list[str] | None = None) -> int:
    """Run the trainer until SIGTERM/SIGINT; exit 0 after a clean stop, 2 on bad settings."""
    args = build_parser().parse_args(argv)
    try:
        config = TrainerConfig.from_env(None, SETTINGS.overrides(args))
    except ConfigError as exc:
        print(f"streamscore trainer: {exc}", file=sys.stderr)
        return 2
    configure_logging("trainer")
    try:
        model_key = model_key_from_env()
        settings = KafkaSettings.from_env()
        topics = Topics.from_env()
        ensure_topics(settings, topics, TopicLayout.from_env())
        stop = StopFlag().install()
        _exit_if_stuck(stop, STOP_GRACE_S)
        telemetry = TelemetryConfig.for_service("trainer", os.environ)
        trainer = Trainer(driver_for(settings), topics, config, stop=stop, model_key=model_key)
        registry, health, watch = trainer.telemetry(telemetry)
        server = serve(telemetry, registry, health)
        watch.start()
        try:
            stats = trainer.run()
        finally:
            watch.close()
            if server is not None:
                server.close()
    except StreamscoreError as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:  # a second signal: stop now, nothing more is committed
        log.warning("stopped at once; the next start resumes from the last checkpoint")
        return 130
    log.info("stopped after %d labelled points, %d versions", stats.labelled, stats.versions)
    return 0


def _exit_if_stuck(stop: StopFlag, grace_s: float) -> None:
    """Once ``stop`` is set, end the process if it still runs ``grace_s`` later.

    The loop stops within a few seconds in every state it knows; this is the bound
    for the rest (a client call that does not return). Nothing committed is lost:
    the next start resumes from the last checkpoint.
    """

    def watch() -> None:
        while not stop.wait(3600):
            pass
        time.sleep(grace_s)
        log.error(
            "still stopping %gs after the signal (a Kafka call does not return): exiting "
            "now; the next start resumes from the last checkpoint",
            grace_s,
        )
        logging.shutdown()
        os._exit(1)

    threading.Thread(target=watch, name="stop-watchdog", daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
